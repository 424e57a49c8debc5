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


def run_seconds(run_dir: Path) -> float | None:
    seconds = (
        read_json(Path(run_dir) / "summary.json").get("seconds") if (Path(run_dir) / "summary.json").is_file() else None
    )
    return float(seconds) if isinstance(seconds, (int, float)) else None


def done_line(done: list) -> str:
    """One line: the wall time the sweep's complete runs took (summary.json ``seconds``: setup, training and eval;
    judge curves are not counted), i.e. the cost of the grid so far on the machines that ran it."""
    times = [t for t in (run_seconds(job.run_dir) for job in done) if t is not None]
    line = f"[sweep] the {len(done)} complete runs took {hours(sum(times))}"
    if len(times) < len(done):
        line += f" ({len(done) - len(times)} without a recorded time not counted)"
    return line + " (summary.json seconds; judge curves not counted)"


def plan_estimate(todo: list, workers: int, done: list = ()) -> str:
    """One line: the expected wall time of the sweep's ``todo`` Jobs, each as long as the mean of its finished seeds,
    one after another; runs with no finished seed to go by are counted apart (at the mean of the sweep's ``done`` runs
    where there are some). Several workers finish sooner only by what the machine has to spare (two runs on the same
    two cores each run slower), so that is given as a bound."""
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
    done_times = [t for t in (run_seconds(job.run_dir) for job in done) if t is not None]
    if unknown and done_times:
        mean = sum(done_times) / len(done_times)
        line += (
            f" (each as long as the mean of its finished seeds; {unknown} with none to go by: about "
            f"{hours(unknown * mean)} more at the mean of this sweep's complete runs, {mean:.0f} s)"
        )
    else:
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
