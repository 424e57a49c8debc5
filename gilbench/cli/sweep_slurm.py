"""``gilbench sweep --launcher slurm``: each wave of the grid as one Slurm job array, submitted through submitit.

An array task runs ``run_job``: one ``gilbench run`` (and its judge curve) in the job's own process. Wave 2 (the runs
that reuse a (task, seed)'s SFT and reward-model caches) waits for wave 1 with ``afterany``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from gilbench.cli.judge_curve import run_then_judge
from gilbench.cli.sweep_plan import waves
from gilbench.errors import require


def run_job(argv: list[str], judge_curve: list[str] = ()) -> int:
    """What a Slurm array task runs (pickled by submitit): one `gilbench run` (and its judge curve), in the job's
    process."""
    rc = run_then_judge(argv, list(judge_curve))
    if rc:
        raise RuntimeError(f"gilbench run {shlex.join(argv)} exited with status {rc}")
    return rc


def slurm_parameters(
    partition: str | None = None,
    gpus_per_node: int = 1,
    timeout_min: int = 240,
    cpus_per_task: int = 8,
    mem_gb: float | None = None,
    array_parallelism: int | None = None,
    name: str = "gilbench",
) -> dict:
    """Keyword arguments of submitit's ``AutoExecutor.update_parameters``."""
    params = {
        "name": name,
        "timeout_min": timeout_min,
        "gpus_per_node": gpus_per_node,
        "cpus_per_task": cpus_per_task,
        "nodes": 1,
        "tasks_per_node": 1,
    }
    params |= {
        k: v
        for k, v in (("slurm_partition", partition), ("mem_gb", mem_gb), ("slurm_array_parallelism", array_parallelism))
        if v
    }
    return params


def make_executor(folder: str | Path, params: dict):
    submitit = require("submitit", "gilbench sweep --launcher slurm", extra="slurm")
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**params)
    return executor


def submit_slurm(
    jobs: list,  # gilbench.cli.sweep.Job
    params: dict,
    folder: str | Path,
    primed: set = frozenset(),
    executor_factory=make_executor,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Submit the jobs as one array per wave (wave 2 waits for wave 1 with afterany); returns the Slurm job ids."""
    ids: list[str] = []
    wave_ids: list[str] = []
    for n, wave in enumerate(waves(jobs, primed), 1):
        extra = {"slurm_additional_parameters": {"dependency": "afterany:" + ":".join(wave_ids)}} if wave_ids else {}
        executor = executor_factory(folder, params | extra)
        submitted = executor.map_array(run_job, [job.argv for job in wave], [job.judge_curve for job in wave])
        wave_ids = sorted({str(s.job_id).split("_")[0] for s in submitted})
        ids += [str(s.job_id) for s in submitted]
        log(
            f"[sweep] wave {n}: {len(wave)} runs as Slurm array {', '.join(wave_ids)}"
            + (f" ({extra['slurm_additional_parameters']['dependency']})" if extra else "")
        )
    return ids
