"""``gilbench sweep``: the grid methods x tasks x seeds, skipping finished runs, on a local pool or on Slurm.

    gilbench sweep --methods gil,ppo-kl,ppo --tasks chitchat-ood --seeds 0-2 --model smollm2-135m
    gilbench sweep --methods gil,ppo-kl --tasks hh-ood,tldr-ood --seeds 0,1,2 --workers 2 --set rl.steps=200
    gilbench sweep ... --launcher slurm --partition gpu --gpus-per-node 1 --timeout-min 480 --slurm-folder results/slurm
    gilbench sweep ... --dry-run        # print the plan and the commands (and Slurm parameters); run nothing
    gilbench sweep --methods ppo,ppo-kl --tasks qa-chat --seeds 0-2 --judge-curve qa-chat-gold --judge-window 10
    gilbench sweep --plan results/qa-chat-study.yaml   # a study: grids in order, in one file (gilbench.cli.sweep_plan)

A run is complete when the run store says it finished (``RunDir.finished``); complete runs are skipped, unfinished ones
rerun (and resume from their checkpoint). Every run is exactly ``gilbench run --method M --task T --seed K ...`` with
the sweep's shared options, so a sweep and hand-made runs share the run store and its caches. With ``--judge-curve
JUDGE`` each run is followed by ``gilbench judge-curve RUN --judge JUDGE``, so a long grid cut short keeps the curves
of the runs that finished; finished runs without an up-to-date curve get one too.

Progress. A local sweep prints at the start (also with --dry-run) the wall time its complete runs took and the
expected wall time of the rest (each run as long as the mean of its finished seeds in the store) and, after each
run, how many are done and the time left at this sweep's mean wall time per run. It warns when runs pinned to bf16
would run on a CPU that emulates bf16 (100-500x slower than those estimates).

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

from gilbench.cli.flags import OUTPUT_DIR_HELP
from gilbench.cli.judge_curve import main_judge_curve, run_then_judge
from gilbench.cli.sweep_plan import Grid, grid_from_args, load_plan, refuse_grid_flags, waves
from gilbench.cli.sweep_slurm import slurm_parameters, submit_slurm
from gilbench.cli.sweep_time import done_line, plan_estimate, progress_line
from gilbench.errors import GilbenchError
from gilbench.store import DEFAULT_OUTPUT_DIR, RunDir, RunStore, config_differences, different_config


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
    record: dict = field(default_factory=dict)  # the resolved config (check_jobs)

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
        job.record = resolved.record()
        diff = RunDir(job.run_dir).config_differences(job.record)
        if diff and not overwrite:
            raise GilbenchError(
                different_config(job.run_dir, diff, "rerun the sweep with --overwrite to redo such runs")
            )
        if diff:
            job.argv.append("--overwrite")


def sweep_jobs(grids: list[Grid], output_dir: str, overwrite: bool = False) -> list[Job]:
    """The runs of the grids in order, each checked (check_jobs) and given its judge-curve command; a run that
    several grids name is kept once, and refused if they would make it with different configs."""
    from gilbench import registry

    jobs: dict[Path, tuple[Job, str]] = {}
    for grid in grids:
        for name in grid.methods:
            registry.methods.get(name)  # unknown names fail here, with close matches
        for name in grid.tasks:
            registry.tasks.get(name)
        if grid.judge_window is not None and not grid.judge_curve:
            raise GilbenchError(f"--judge-window needs --judge-curve JUDGE ({grid.where})")
        grid_jobs = plan(
            grid.methods,
            grid.tasks,
            grid.seeds,
            output_dir,
            grid.model,
            grid.overrides,
            grid.limit,
            grid.includes,
            grid.config,
            grid.device,
            grid.data_dir,
        )
        check_jobs(grid_jobs, overwrite)  # resolves each run's folder (a variant's is <method>@<variant>)
        for job in grid_jobs:
            job.judge_curve = judge_curve_argv(
                job.run_dir, output_dir, grid.judge_curve, grid.judge_window, grid.includes
            )
            if job.run_dir in jobs:
                first, where = jobs[job.run_dir]
                diff = config_differences(first.record, job.record)
                if diff or first.judge_curve != job.judge_curve:
                    why = "; ".join(diff) or "their judge curves differ"
                    raise GilbenchError(
                        f"{where} and {grid.where} both make {job.name} but differently ({why}); give one a variant "
                        "(set: {variant: NAME}) or drop it from the other"
                    )
                continue
            jobs[job.run_dir] = (job, grid.where)
    return [job for job, _ in jobs.values()]


def emulated_bf16_runs(jobs: list[Job]) -> list[Job]:
    """The jobs that would compute bfloat16 on this machine's CPU where it only emulates it."""
    from gilbench.models.precision import bf16_emulated

    return [job for job in jobs if bf16_emulated(job.record.get("device", "auto"), job.record.get("mixed_precision"))]


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


# ---------------------------------------------------------------------------------------------- CLI
def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep",
        help="run methods x tasks x seeds, skipping finished runs, locally or on Slurm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--plan", metavar="FILE", help="a YAML file of grids run in order, instead of the grid flags")
    p.add_argument("--methods", help="M1,M2,... (registered methods)")
    p.add_argument("--tasks", help="T1,T2,... (registered tasks)")
    p.add_argument("--seeds", "--seed", dest="seeds", help="0 | 0,1,2 | 0-4 (default 0)")
    p.add_argument("--model", help="policy model for every run (preset, hub id or folder)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="typed override for every run"
    )
    p.add_argument("--limit", type=int, help="cap prompts, pairs and examples per split")
    p.add_argument("--output-dir", help=OUTPUT_DIR_HELP + "; with --plan, instead of the plan's own")
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
    if args.plan:
        refuse_grid_flags(args)
        grids, plan_output_dir = load_plan(args.plan)
        from gilbench import registry

        for path in dict.fromkeys(inc for grid in grids for inc in grid.includes):
            registry.include(path)  # the plan's plugins, before its names are looked up
    else:
        grids, plan_output_dir = [grid_from_args(args)], None
    output_dir = args.output_dir or plan_output_dir or DEFAULT_OUTPUT_DIR
    for flag, value, lowest in (
        ("--workers", args.workers, 1),
        ("--gpus-per-node", args.gpus_per_node, 0),
        ("--cpus-per-task", args.cpus_per_task, 1),
        ("--timeout-min", args.timeout_min, 1),
        ("--mem-gb", args.mem_gb, 1e-9),
    ):
        if value is not None and not value >= lowest:
            raise GilbenchError(f"{flag} {value}: must be at least {lowest:g}")
    jobs = sweep_jobs(grids, output_dir, args.overwrite)
    todo, done = split_done(jobs)
    primed = primed_groups(jobs, output_dir)
    print(
        f"[sweep] {len(jobs)} runs: {len(done)} complete (skipped), {len(todo)} to run on {args.launcher}"
        + (f" ({args.workers} worker{'s' if args.workers > 1 else ''})" if args.launcher == "local" else "")
    )
    if done:
        print(done_line(done))
    if todo and args.launcher == "local":
        print(plan_estimate(todo, args.workers, done))
        slow = emulated_bf16_runs(todo)
        if slow:
            print(
                f"[sweep] warning: {len(slow)} of the runs to do compute bf16 on this CPU, which has no AVX512-BF16 or "
                "AMX and emulates it 100-500x slower than float32: the times above are other machines'. Run them on "
                "a CPU with native bf16 or a GPU; --set mixed_precision=fp32 would make them another config"
            )
    params = slurm_parameters(
        args.partition,
        args.gpus_per_node,
        args.timeout_min,
        args.cpus_per_task,
        args.mem_gb,
        args.workers if args.workers > 1 else None,
    )
    folder = args.slurm_folder or os.path.join(os.path.abspath(output_dir), "slurm")
    if args.dry_run:
        for job in jobs:
            print(f"{'skip' if job in done else 'run '}  {shlex.join(job.command())}")
            if job.judge_curve:
                print(f"      {shlex.join(job.judge_curve_command())}")
        if args.launcher == "slurm":
            print(f"[sweep] submitit AutoExecutor(folder={folder!r}, cluster='slurm').update_parameters(**{params})")
        return 0
    if args.launcher == "local":  # finished runs whose curve (where one is asked for) is missing or stale
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
