"""How long a sweep will take and has left: each run as long as the mean of its finished seeds (summary.json's
``seconds``) before it starts, and at this sweep's own mean wall time per run as it goes."""

from __future__ import annotations

from pathlib import Path

from gilbench.files import read_json
from gilbench.store import RunStore


def finished_seconds(run_dir: Path) -> list[float]:
    """Wall times (summary.json ``seconds``) of the finished seeds beside ``run_dir`` (same task, method, variant)."""
    method_dir = Path(run_dir).parent
    store = RunStore(method_dir.parent.parent)
    times = [
        read_json(run.summary_file).get("seconds")
        for run in store.finished_runs(method_dir.parent.name, method_dir.name)
    ]
    return [float(t) for t in times if isinstance(t, (int, float))]


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_estimate(todo: list, workers: int) -> str:
    """One line: the expected wall time of the sweep's ``todo`` Jobs, each as long as the mean of its finished seeds,
    one after another; runs with no finished seed to go by are counted apart. Several workers finish sooner only by
    what the machine has to spare (two runs on the same two cores each run slower), so that is given as a bound."""
    known, unknown = [], 0
    for job in todo:
        times = finished_seconds(job.run_dir)
        if times:
            known.append(sum(times) / len(times))
        else:
            unknown += 1
    if not known:
        return f"[sweep] no time estimate: none of the {len(todo)} runs to do has a finished seed to go by"
    line = f"[sweep] expected: about {hours(sum(known))} for {len(known)} of the {len(todo)} runs to do"
    line += " (each as long as the mean of its finished seeds" + (
        f"; {unknown} with none to go by)" if unknown else ")"
    )
    if workers > 1:
        line += (
            f" one after another; {workers} workers at once take less, at best {hours(sum(known) / workers)} where "
            "they do not share cores"
        )
    return line


def progress_line(durations: list[float], finished: int, total: int, failed: int, workers: int) -> str:
    """After each run of a sweep: how many are done, and the time left at this sweep's mean wall time per run."""
    line = f"[sweep] {finished} of {total} runs done" + (f" ({failed} failed)" if failed else "")
    if durations and finished < total:
        mean = sum(durations) / len(durations)
        line += (
            f"; about {hours(mean * (total - finished) / workers)} left at this sweep's mean of {mean:.0f} s per run"
        )
    return line
