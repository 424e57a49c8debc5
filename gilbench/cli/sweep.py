"""``gilbench sweep``: the grid methods x tasks x seeds, skipping finished runs, on a local pool or on Slurm.

    gilbench sweep --methods gil,ppo-kl,ppo --tasks chitchat-ood --seeds 0-2 --model smollm2-135m
    gilbench sweep --methods gil,ppo-kl --tasks hh-ood,tldr-ood --seeds 0,1,2 --workers 2 --set rl.steps=200
    gilbench sweep ... --launcher slurm --partition gpu --gpus-per-node 1 --timeout-min 480 --slurm-folder results/slurm
    gilbench sweep ... --dry-run        # print the plan and the commands (and Slurm parameters); run nothing
    gilbench sweep --methods ppo,ppo-kl --tasks qa-chat --seeds 0-2 --judge-curve qa-chat-gold --judge-window 10

A run is complete when the run store says it finished (``RunDir.finished``); complete runs are skipped, unfinished ones
rerun (and resume from their checkpoint). Every run is exactly ``gilbench run --method M --task T --seed K ...`` with
the sweep's shared options, so a sweep and hand-made runs share the run store and its caches. With ``--judge-curve
JUDGE`` each run is followed by ``gilbench judge-curve RUN --judge JUDGE``, so a long grid cut short keeps the curves
of the runs that finished; finished runs without an up-to-date curve get one too.

Progress. A local sweep prints the grid's expected wall time at the start (each run as long as the mean of its
finished seeds in the store; also with --dry-run) and, after each run, how many are done and the time left at this
sweep's mean wall time per run.

Launchers. ``local`` with ``--workers 1`` (the default) runs the grid one run after another *in this process*
(``gilbench.cli.run.main_run``), so tasks and methods registered by code already imported (tests register a toy task this
way) are visible; with ``--workers N`` it runs N subprocesses ``python -m gilbench run ...`` at a time, each logging
to ``<run folder>/sweep.log``; plugins reach them through ``--include``. ``slurm`` submits job arrays through submitit.
Runs with the same task and seed share the SFT and reward-model caches, so with several workers (or on Slurm) the
first run of each (task, seed) goes first (wave 1) and the rest after it (wave 2; on Slurm an array that depends on
wave 1), instead of training the same SFT model twice at once; a (task, seed) with a finished run of any method in
the store counts as cached and does not wait. Concurrent local runs split the cores between them (OMP_NUM_THREADS,
unless you set it).
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gilbench.cli.flags import OUTPUT_DIR_HELP, parse_seeds, split_names
from gilbench.cli.run import main_run
from gilbench.cli.sweep_time import plan_estimate, progress_line
from gilbench.errors import GilbenchError, require
from gilbench.store import DEFAULT_OUTPUT_DIR, RunDir, RunStore, different_config


@dataclass
class Job:
    method: str
    task: str
    seed: int
    argv: list[str]  # the arguments of `gilbench run`
    run_dir: Path
    overrides: list[str] = field(default_factory=list)  # the sweep's --set, for resolving the run's config here
    config_file: str | None = None
    fields: dict = field(default_factory=dict)  # config fields the sweep's flags set (limit, device, ...)
    judge_curve: list[str] = field(default_factory=list)  # `gilbench judge-curve` arguments to run after the run

    @property
    def name(self) -> str:
        return f"{self.task}/{self.run_dir.parent.name}/seed{self.seed}"  # the folder: <method>@<variant> for a variant

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gilbench", "run", *self.argv]

    def judge_curve_command(self) -> list[str]:
        return [sys.executable, "-m", "gilbench", *self.judge_curve] if self.judge_curve else []


def judge_curve_argv(
    run_dir: Path, output_dir: str, judge: str | None, window: int | None, includes: list[str] = ()
) -> list[str]:
    """The `gilbench judge-curve` arguments for one run (empty without --judge-curve); it skips an up-to-date curve."""
    if not judge:
        return []
    argv = ["judge-curve", str(run_dir), "--judge", judge, "--output-dir", os.path.abspath(output_dir)]
    argv += ["--window", str(window)] if window else []
    return argv + [x for inc in includes for x in ("--include", os.path.abspath(inc))]


def main_judge_curve(argv: list[str]) -> int:
    """`gilbench judge-curve ...` in this process (argv starts with "judge-curve"); exit status as the CLI's."""
    from gilbench.cli.flags import run_command
    from gilbench.cli.judge_curve import add_judge_curve_parser

    parser = argparse.ArgumentParser(prog="gilbench")
    add_judge_curve_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return run_command(args, args.func)


def run_then_judge(argv: list[str], judge_curve: list[str]) -> int:
    """`gilbench run`, then (if it succeeded and one is asked for) its judge curve, in this process."""
    rc = main_run(argv)
    return main_judge_curve(judge_curve) if rc == 0 and judge_curve else rc


def is_complete(path: str | Path) -> bool:
    return RunDir(path).finished


def plan(
    methods: list[str],
    tasks: list[str],
    seeds: list[int],
    output_dir: str = DEFAULT_OUTPUT_DIR,
    model: str | None = None,
    overrides: list[str] = (),
    limit: int | None = None,
    includes: list[str] = (),
    config: str | None = None,
    device: str | None = None,
    data_dir: str | None = None,
) -> list[Job]:
    """Every run of the grid, task by task, method by method, seed by seed (finished ones included)."""
    if not (methods and tasks and seeds):
        raise GilbenchError("sweep needs at least one method, one task and one seed")
    out = os.path.abspath(output_dir)
    shared = (
        ["--output-dir", out]
        + (["--model", model] if model else [])
        + (["--limit", str(limit)] if limit is not None else [])
    )
    shared += [
        x
        for path, flag in ((config, "--config"), (data_dir, "--data-dir"))
        if path
        for x in (flag, os.path.abspath(path))
    ]
    shared += (["--device", device] if device else []) + [x for kv in overrides for x in ("--set", kv)]
    shared += [x for inc in includes for x in ("--include", os.path.abspath(inc))]
    fields = {"output_dir": out, "limit": limit, "device": device, "data_dir": data_dir and os.path.abspath(data_dir)}
    fields = {k: v for k, v in fields.items() if v is not None} | ({"model": {"policy": model}} if model else {})
    config_file = os.path.abspath(config) if config else None
    store = RunStore(out)
    return [
        Job(
            m,
            t,
            s,
            ["--method", m, "--task", t, "--seed", str(s), *shared],
            store.run(t, m, s).path,
            list(overrides),
            config_file,
            fields | {"seed": s},
        )
        for t in tasks
        for m in methods
        for s in seeds
    ]


def waves(jobs: list[Job], primed: set[tuple[str, int]] = frozenset()) -> list[list[Job]]:
    """[first run of each (task, seed) not yet primed, the rest]: runs of a (task, seed) share the SFT/RM caches."""
    first, rest, seen = [], [], set(primed)
    for job in jobs:
        key = (job.task, job.seed)
        (rest if key in seen else first).append(job)
        seen.add(key)
    if primed:  # groups with a finished run have their caches: their runs need not wait
        first += [j for j in rest if (j.task, j.seed) in primed]
        rest = [j for j in rest if (j.task, j.seed) not in primed]
    return [w for w in (first, rest) if w]


def primed_groups(jobs: list[Job], output_dir: str | Path) -> set[tuple[str, int]]:
    """(task, seed) groups with a finished run of any method in the store: their SFT/RM caches are (most likely) built."""
    store = RunStore(output_dir)
    return {(t, s) for t, s in {(j.task, j.seed) for j in jobs} if any(r.finished for r in store.runs_of_seed(t, s))}


def check_jobs(jobs: list[Job], overwrite: bool = False) -> None:
    """Build and validate every run's config before anything runs; a finished or started run made with another
    config is refused (or, with ``overwrite``, marked to start again), so the grid never mixes configs."""
    from gilbench.resolve import resolve_run

    for job in jobs:
        resolved = resolve_run(job.method, job.task, job.overrides, config_file=job.config_file, fields=job.fields)
        cfg = resolved.cfg  # a variant (config file or --set variant=...) lives in its own folder
        job.run_dir = RunStore(cfg.output_dir).run(job.task, cfg.run_name(), job.seed).path
        diff = RunDir(job.run_dir).config_differences(resolved.record())
        if diff and not overwrite:
            raise GilbenchError(
                different_config(job.run_dir, diff, "rerun the sweep with --overwrite to redo such runs")
            )
        if diff:
            job.argv.append("--overwrite")


def split_done(jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    done = [j for j in jobs if is_complete(j.run_dir) and "--overwrite" not in j.argv]
    return [j for j in jobs if j not in done], done


# ---------------------------------------------------------------------------------------------- local
def run_in_process(job: Job) -> int:
    try:
        return run_then_judge(job.argv, job.judge_curve)
    except Exception:  # noqa: BLE001  (one broken run must not stop the grid)
        traceback.print_exc()
        return 1


def worker_env(workers: int, environ: dict | None = None, cores: int | None = None) -> dict:
    """The environment of one of ``workers`` concurrent runs: the cores split between them (torch would otherwise
    start one thread per core in every run, and oversubscribed CPU runs slow down several-fold)."""
    env = dict(os.environ if environ is None else environ) | {"TOKENIZERS_PARALLELISM": "false"}
    threads = str(max(1, (cores or os.cpu_count() or 1) // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)  # a value the user exported wins
    return env


def run_subprocess(job: Job, workers: int = 1) -> int:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    rc = 0
    with open(job.run_dir / "sweep.log", "a") as logf:
        for command in (job.command(), job.judge_curve_command()):
            if rc or not command:
                break
            logf.write(f"$ {shlex.join(command)}\n")
            logf.flush()
            rc = subprocess.run(
                command, stdout=logf, stderr=subprocess.STDOUT, check=False, env=worker_env(workers)
            ).returncode
    return rc


def run_local(
    jobs: list[Job],
    workers: int = 1,
    primed: set = frozenset(),
    log: Callable[[str], None] = print,
    runner: Callable[[Job], int] | None = None,
) -> dict[str, int]:
    """Run the jobs; returns {run name: exit status}. One worker: in this process; more: subprocesses, in waves."""
    if workers < 1:
        raise GilbenchError("--workers must be at least 1")
    runner = runner or (run_in_process if workers == 1 else functools.partial(run_subprocess, workers=workers))
    status: dict[str, int] = {}
    durations: list[float] = []  # wall times of the runs that succeeded, for the time left

    def one(job: Job) -> None:
        t0 = time.time()
        log(f"[sweep] start {job.name}")
        status[job.name] = rc = runner(job)
        seconds = time.time() - t0
        where = "" if workers == 1 else f"; log {job.run_dir / 'sweep.log'}"
        log(f"[sweep] {'done' if rc == 0 else f'FAILED (exit {rc})'} {job.name} in {seconds:.0f} s{where}")
        if rc == 0:
            durations.append(seconds)
        failed = sum(1 for code in status.values() if code)
        log(progress_line(durations, len(status), len(jobs), failed, workers))

    if workers == 1:
        for job in jobs:
            one(job)
        return status
    for wave in waves(jobs, primed):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, wave))
    return status


# ---------------------------------------------------------------------------------------------- slurm
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
    jobs: list[Job],
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


# ---------------------------------------------------------------------------------------------- CLI
def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep",
        help="run methods x tasks x seeds, skipping finished runs, locally or on Slurm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--methods", required=True, help="M1,M2,... (registered methods)")
    p.add_argument("--tasks", required=True, help="T1,T2,... (registered tasks)")
    p.add_argument("--seeds", "--seed", dest="seeds", default="0", help="0 | 0,1,2 | 0-4 (default 0)")
    p.add_argument("--model", help="policy model for every run (preset, hub id or folder)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="typed override for every run"
    )
    p.add_argument("--limit", type=int, help="cap prompts, pairs and examples per split")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=OUTPUT_DIR_HELP)
    p.add_argument("--config", help="YAML file of config fields for every run")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--data-dir", help="local copies of hub datasets")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="plugin file or folder (also passed to every run)",
    )
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local: runs at once (1: sequential, in this process); slurm: array parallelism",
    )
    p.add_argument(
        "--judge-curve",
        metavar="JUDGE",
        help="after each run, `gilbench judge-curve` it with this judge (finished runs too: an up-to-date curve is kept)",
    )
    p.add_argument("--judge-window", type=int, help="steps per judge-curve point (with --judge-curve)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and commands; run or submit nothing")
    p.add_argument(
        "--overwrite", action="store_true", help="redo runs whose folder holds work made with a different config"
    )
    s = p.add_argument_group("slurm (submitit)")
    s.add_argument("--partition", help="Slurm partition")
    s.add_argument("--gpus-per-node", type=int, default=1)
    s.add_argument("--cpus-per-task", type=int, default=8)
    s.add_argument("--mem-gb", type=float, default=None)
    s.add_argument("--timeout-min", type=int, default=240, help="time limit of each run in minutes (default 240)")
    s.add_argument("--slurm-folder", default=None, help="submitit logs and pickles (default <output-dir>/slurm)")
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    from gilbench import registry

    methods, tasks = split_names(args.methods), split_names(args.tasks)
    for m in methods:
        registry.methods.get(m)  # unknown names fail here, with close matches
    for t in tasks:
        registry.tasks.get(t)
    for flag, value, lowest in (
        ("--workers", args.workers, 1),
        ("--gpus-per-node", args.gpus_per_node, 0),
        ("--cpus-per-task", args.cpus_per_task, 1),
        ("--timeout-min", args.timeout_min, 1),
        ("--mem-gb", args.mem_gb, 1e-9),
    ):
        if value is not None and not value >= lowest:
            raise GilbenchError(f"{flag} {value}: must be at least {lowest:g}")
    jobs = plan(
        methods,
        tasks,
        parse_seeds(args.seeds, "--seeds"),
        args.output_dir,
        args.model,
        args.overrides,
        args.limit,
        args.include,
        args.config,
        args.device,
        args.data_dir,
    )
    if args.judge_window is not None and not args.judge_curve:
        raise GilbenchError("--judge-window needs --judge-curve JUDGE")
    check_jobs(jobs, args.overwrite)  # resolves each run's folder (a variant's is <method>@<variant>)
    for job in jobs:
        job.judge_curve = judge_curve_argv(
            job.run_dir, args.output_dir, args.judge_curve, args.judge_window, args.include
        )
    todo, done = split_done(jobs)
    primed = primed_groups(jobs, args.output_dir)
    print(
        f"[sweep] {len(jobs)} runs: {len(done)} complete (skipped), {len(todo)} to run on {args.launcher}"
        + (f" ({args.workers} workers)" if args.launcher == "local" else "")
    )
    if todo and args.launcher == "local":
        print(plan_estimate(todo, args.workers))
    params = slurm_parameters(
        args.partition,
        args.gpus_per_node,
        args.timeout_min,
        args.cpus_per_task,
        args.mem_gb,
        args.workers if args.workers > 1 else None,
    )
    folder = args.slurm_folder or os.path.join(os.path.abspath(args.output_dir), "slurm")
    if args.dry_run:
        for job in jobs:
            print(f"{'skip' if job in done else 'run '}  {shlex.join(job.command())}")
            if job.judge_curve:
                print(f"      {shlex.join(job.judge_curve_command())}")
        if args.launcher == "slurm":
            print(f"[sweep] submitit AutoExecutor(folder={folder!r}, cluster='slurm').update_parameters(**{params})")
        return 0
    if args.judge_curve and args.launcher == "local":  # finished runs whose curve is missing or stale
        failed = [job.name for job in done if job.judge_curve and main_judge_curve(job.judge_curve)]
        if failed:
            raise GilbenchError(f"judge-curve failed for finished runs: {', '.join(failed)}")
    if not todo:
        return 0
    if args.launcher == "slurm":
        ids = submit_slurm(todo, params, folder, primed)
        print(f"[sweep] submitted {len(ids)} runs; logs in {folder}; rerun this command later to see what is left")
        return 0
    status = run_local(todo, args.workers, primed)
    failed = sorted(name for name, rc in status.items() if rc)
    if failed:
        raise GilbenchError(
            f"{len(failed)} of {len(todo)} runs failed: {', '.join(failed)}"
            + ("; their logs are sweep.log in each run folder" if args.workers > 1 else "")
        )
    print(f"[sweep] all {len(todo)} runs finished")
    return 0
