"""`gilbench sweep`: the grid, skipping finished runs, waves, the Slurm job specs (not submitted) and, for real, the
sequential in-process local launcher on the toy task (registered in conftest.py) with the tiny model."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import pytest

from gilbench.cli.sweep import (
    Job,
    add_sweep_parser,
    is_complete,
    plan,
    primed_groups,
    run_local,
    split_done,
    waves,
    worker_env,
)
from gilbench.cli.sweep_slurm import slurm_parameters, submit_slurm
from gilbench.cli.sweep_time import done_line, plan_estimate, progress_line
from gilbench.errors import GilbenchError
from gilbench.files import atomic_write_json, mark_done

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import curve, write_run  # noqa: E402
from tiny_run import TINY_SETTINGS, tiny_flags  # noqa: E402


def sweep_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers())
    return parser.parse_args(["sweep", *argv])


def test_plan_is_the_grid_of_gilbench_run_commands(tmp_path):
    plugin = tmp_path / "plugin.py"
    jobs = plan(
        ["gil", "ppo-kl"],
        ["toy", "chitchat-ood"],
        [0, 1, 2],
        str(tmp_path / "runs"),
        model="tiny",
        overrides=["rl.steps=4"],
        limit=16,
        includes=[str(plugin)],
        device="cpu",
    )
    assert len(jobs) == 12 and [j.name for j in jobs[:4]] == [
        "toy/gil/seed0",
        "toy/gil/seed1",
        "toy/gil/seed2",
        "toy/ppo-kl/seed0",
    ]
    cmd = jobs[0].command()
    assert cmd[:4] == [sys.executable, "-m", "gilbench", "run"]
    assert cmd[4:10] == ["--method", "gil", "--task", "toy", "--seed", "0"]
    for flag, value in (
        ("--output-dir", str(tmp_path / "runs")),
        ("--model", "tiny"),
        ("--limit", "16"),
        ("--set", "rl.steps=4"),
        ("--include", str(plugin)),
        ("--device", "cpu"),
    ):
        assert cmd[cmd.index(flag) + 1] == value
    assert jobs[0].run_dir == tmp_path / "runs" / "toy" / "gil" / "seed0"


def test_completed_runs_are_skipped(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "toy", "ppo-kl", 0, curve(5))  # summary.json (written last by the pipeline): complete
    # the committed store keeps no weights: a summary without the policy folder is a finished run, not one to redo
    atomic_write_json(root / "toy" / "ppo-kl" / "seed1" / "summary.json", {})
    mark_done(root / "toy" / "ppo-kl" / "seed2" / "policy")  # trained, killed while generating: not complete
    jobs = plan(["ppo-kl"], ["toy"], [0, 1, 2, 3], str(root))
    todo, done = split_done(jobs)
    assert [j.seed for j in done] == [0, 1] and [j.seed for j in todo] == [2, 3]
    assert is_complete(root / "toy" / "ppo-kl" / "seed1") and not is_complete(root / "toy" / "ppo-kl" / "seed2")


def test_waves_put_one_run_per_task_and_seed_first(tmp_path):
    jobs = plan(["gil", "ppo", "sft"], ["a", "b"], [0, 1], str(tmp_path))
    first, rest = waves(jobs)
    assert [(j.task, j.method, j.seed) for j in first] == [
        ("a", "gil", 0),
        ("a", "gil", 1),
        ("b", "gil", 0),
        ("b", "gil", 1),
    ]
    assert len(rest) == 8
    primed = waves(jobs, primed={("a", 0)})  # a finished run of (a, 0) built its caches: those runs need not wait
    assert {(j.task, j.seed) for j in primed[0]} >= {("a", 0)} and all((j.task, j.seed) != ("a", 0) for j in primed[1])


def test_a_finished_run_of_another_method_primes_its_task_and_seed(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "toy", "ppo-kl", 1, curve(5))  # another method's finished run: the (toy, 1) caches exist
    jobs = plan(["gil", "sft"], ["toy"], [0, 1], str(root))
    assert primed_groups(jobs, root) == {("toy", 1)}
    assert [(j.method, j.seed) for j in waves(jobs, primed_groups(jobs, root))[0]] == [
        ("gil", 0),
        ("gil", 1),
        ("sft", 1),
    ]


def test_concurrent_workers_split_the_cores_unless_the_user_chose():
    assert worker_env(2, environ={}, cores=16)["OMP_NUM_THREADS"] == "8"
    assert worker_env(4, environ={}, cores=2)["MKL_NUM_THREADS"] == "1"  # never 0
    assert worker_env(2, environ={"OMP_NUM_THREADS": "3"}, cores=16)["OMP_NUM_THREADS"] == "3"


def test_local_pool_runs_wave_one_before_wave_two(tmp_path):
    jobs = plan(["gil", "ppo"], ["a"], [0, 1], str(tmp_path))
    order, lock = [], threading.Lock()

    def fake(job: Job) -> int:
        with lock:
            order.append(job.name)
        return 3 if job.method == "ppo" and job.seed == 1 else 0

    status = run_local(jobs, workers=2, runner=fake, log=lambda s: None)
    assert set(order[:2]) == {"a/gil/seed0", "a/gil/seed1"} and set(order[2:]) == {"a/ppo/seed0", "a/ppo/seed1"}
    assert status == {"a/gil/seed0": 0, "a/gil/seed1": 0, "a/ppo/seed0": 0, "a/ppo/seed1": 3}


def test_time_estimates_come_from_finished_seeds_and_this_sweeps_runs(tmp_path):
    root = tmp_path / "runs"
    for seed, seconds in ((0, 3000.0), (1, 5000.0)):  # ppo-kl's finished seeds: 4,000 s on average
        atomic_write_json(root / "toy" / "ppo-kl" / f"seed{seed}" / "summary.json", {"seconds": seconds})
    todo, _ = split_done(plan(["ppo-kl", "gil"], ["toy"], [0, 1, 2, 3], str(root)))
    assert len(todo) == 6  # ppo-kl seeds 2-3 (4,000 s each) and gil seeds 0-3 (nothing to go by)
    assert plan_estimate(todo, workers=1).startswith("[sweep] expected: about 2.2 h for 2 of the 6 runs to do")
    assert "4 with none to go by" in plan_estimate(todo, workers=1)
    two = plan_estimate(todo, workers=2)  # two runs at once on shared cores are each slower: a bound, not a promise
    assert "about 2.2 h for 2 of the 6" in two and "2 workers at once take less, at best 1.1 h" in two
    assert "no time estimate" in plan_estimate(todo[2:], workers=1)
    todo, done = split_done(plan(["ppo-kl", "gil"], ["toy"], [0, 1, 2, 3], str(root)))
    assert done_line(done) == "[sweep] the 2 complete runs took 2.2 h (summary.json seconds; judge curves not counted)"
    # gil has no finished seed: its 4 runs at the mean of the sweep's complete runs (4,000 s) = 4.4 h
    assert "4 with none to go by: about 4.4 h more at the mean of this sweep's complete runs, 4000 s" in plan_estimate(
        todo, workers=1, done=done
    )
    # after 2 of 5 runs, one failed: 3 left at the mean of the one that succeeded (1,800 s) = 1.5 h
    assert (
        progress_line([1800.0], 2, 5, 1, 1)
        == "[sweep] 2 of 5 runs done (1 failed); about 1.5 h left at this sweep's mean of 1800 s per run"
    )
    assert progress_line([1800.0], 5, 5, 0, 1) == "[sweep] 5 of 5 runs done"


def test_local_pool_logs_progress_after_each_run(tmp_path):
    jobs = plan(["ppo"], ["a"], [0, 1, 2], str(tmp_path))
    lines = []
    run_local(jobs, runner=lambda job: 0, log=lines.append)
    done = [line for line in lines if " runs done" in line]
    assert [line.split(";")[0] for line in done] == [f"[sweep] {k} of 3 runs done" for k in (1, 2, 3)]
    assert "left at this sweep's mean" in done[0] and "left" not in done[-1]


def test_slurm_executor_parameters_and_sbatch_script(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from gilbench.cli.sweep_slurm import make_executor

    bin_dir = tmp_path / "bin"  # submitit checks that srun exists; nothing is ever submitted here
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    params = slurm_parameters("gpu", gpus_per_node=2, timeout_min=90, cpus_per_task=6, mem_gb=64, array_parallelism=4)
    executor = make_executor(
        tmp_path / "slurm", params | {"slurm_additional_parameters": {"dependency": "afterany:17"}}
    )
    p = executor._executor.parameters
    assert (p["partition"], p["gpus_per_node"], p["time"], p["cpus_per_task"], p["array_parallelism"]) == (
        "gpu",
        2,
        90,
        6,
        4,
    )
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in (
        "--partition=gpu",
        "--gpus-per-node=2",
        "--time=90",
        "--cpus-per-task=6",
        "--mem=64GB",
        "--dependency=afterany:17",
        "--job-name=gilbench",
    ):
        assert f"#SBATCH {line}" in script


def test_slurm_submission_wires_wave_two_after_wave_one(tmp_path):
    from gilbench.cli.sweep_slurm import run_job

    calls = []

    class FakeJob:
        def __init__(self, job_id):
            self.job_id = job_id

    class FakeExecutor:
        def __init__(self, folder, params):
            self.params, self.array = params, 100 + len(calls)

        def map_array(self, fn, argvs, judge_curves):  # submitit: fn(argvs[i], judge_curves[i]) per array task
            assert len(judge_curves) == len(argvs) and not any(judge_curves)  # no --judge-curve: nothing after
            calls.append((self.params, fn, argvs))
            return [FakeJob(f"{self.array}_{i}") for i in range(len(argvs))]

    jobs = plan(["gil", "ppo-kl"], ["toy"], [0, 1], str(tmp_path))
    ids = submit_slurm(jobs, slurm_parameters("gpu"), tmp_path, executor_factory=FakeExecutor, log=lambda s: None)
    assert ids == ["100_0", "100_1", "101_0", "101_1"] and len(calls) == 2
    (p1, fn, argv1), (p2, _, argv2) = calls
    assert fn is run_job and "slurm_additional_parameters" not in p1
    assert p2["slurm_additional_parameters"] == {"dependency": "afterany:100"} and p2["slurm_partition"] == "gpu"
    assert [a[1] for a in argv1] == ["gil", "gil"] and [a[1] for a in argv2] == ["ppo-kl", "ppo-kl"]


def test_dry_run_prints_the_plan(tmp_path, capsys):
    write_run(tmp_path / "runs", "toy", "ppo-kl", 0, curve(5))
    args = sweep_args(
        "--methods",
        "ppo-kl,gil",
        "--tasks",
        "toy",
        "--seeds",
        "0-1",
        "--output-dir",
        str(tmp_path / "runs"),
        "--dry-run",
        "--launcher",
        "slurm",
        "--partition",
        "gpu",
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 complete (skipped), 3 to run on slurm" in out
    assert out.count("skip  ") == 1 and out.count("run   ") == 3 and "'slurm_partition': 'gpu'" in out


def test_local_launcher_runs_the_grid_in_process_then_skips_it(tmp_path, capsys):
    """For real: toy task (registered in conftest, so in-process: the sequential launcher) and the tiny model."""
    out = tmp_path / "runs"
    grid = ["--methods", "ppo-kl,sft", "--tasks", "toy", "--seeds", "0"]
    args = sweep_args(*grid, *tiny_flags(out, [*TINY_SETTINGS, "rl.steps=1"]))
    assert args.func(args) == 0
    runs = [out / "toy" / m / "seed0" for m in ("ppo-kl", "sft")]
    assert all(is_complete(r) for r in runs)
    stamps = [(r / "summary.json").stat().st_mtime_ns for r in runs]
    capsys.readouterr()
    assert args.func(args) == 0
    assert "2 runs: 2 complete (skipped), 0 to run" in capsys.readouterr().out
    assert [(r / "summary.json").stat().st_mtime_ns for r in runs] == stamps


def test_a_variant_is_stored_beside_the_method_and_skipped_once_finished(tmp_path, capsys):
    out = tmp_path / "runs"
    grid = ["--methods", "ppo-kl", "--tasks", "toy", "--seeds", "0"]
    plain = sweep_args(*grid, *tiny_flags(out, [*TINY_SETTINGS, "rl.steps=1"]))
    variant = sweep_args(*grid, *tiny_flags(out, [*TINY_SETTINGS, "rl.steps=1", "rl.kl_coef=0.5", "variant=kl0.5"]))
    assert plain.func(plain) == 0 and variant.func(variant) == 0
    runs = {name: out / "toy" / name / "seed0" for name in ("ppo-kl", "ppo-kl@kl0.5")}
    assert all(is_complete(r) for r in runs.values())
    assert "kl_coef: 0.5" in (runs["ppo-kl@kl0.5"] / "config.yaml").read_text()
    assert "kl_coef: 0.5" not in (runs["ppo-kl"] / "config.yaml").read_text()
    capsys.readouterr()
    assert variant.func(variant) == 0
    assert "1 runs: 1 complete (skipped), 0 to run" in capsys.readouterr().out


def test_judge_curve_follows_each_run_and_fills_in_finished_ones(tmp_path, capsys):
    """--judge-curve JUDGE: each run is judged along training right after it finishes (so a grid cut short by the
    end of a session keeps the curves of what finished), and a finished run without a current curve gets one."""
    from gilbench import registry
    from gilbench.eval.judges import ScoreJudge

    registry.judges.register("test-length", lambda arg, ctx=None: ScoreJudge(score=lambda p, r: len(r), judge_id="len"))
    out = tmp_path / "runs"
    grid = ["--methods", "ppo-kl", "--tasks", "toy", "--seeds", "0,1"]
    flags = tiny_flags(out, [*TINY_SETTINGS, "rl.steps=2"])
    first = sweep_args(*grid[:-1], "0", *flags)
    assert first.func(first) == 0  # seed 0, no curve asked for
    curve0, curve1 = (out / "toy" / "ppo-kl" / f"seed{s}" / "judge_curve.jsonl" for s in (0, 1))
    assert not curve0.exists()
    both = sweep_args(*grid, *flags, "--judge-curve", "test-length", "--judge-window", "1")
    assert both.func(both) == 0  # seed 1 runs then is judged; finished seed 0 is judged too
    assert curve0.exists() and curve1.exists()
    assert len(curve1.read_text().splitlines()) == 2  # one point per step (window 1)
    stamp = curve1.stat().st_mtime_ns
    capsys.readouterr()
    assert both.func(both) == 0  # nothing left to run; the curves are current, so kept
    assert "up to date" in capsys.readouterr().out and curve1.stat().st_mtime_ns == stamp
    bad = sweep_args(*grid, *flags, "--judge-window", "2")
    with pytest.raises(GilbenchError, match="--judge-window needs --judge-curve"):
        bad.func(bad)


@pytest.mark.parametrize("native", [True, False])
def test_a_sweep_warns_when_its_bf16_runs_would_be_emulated_on_this_cpu(tmp_path, capsys, monkeypatch, native):
    """A plan pinned to bf16, started on a CPU without bf16 instructions: its time estimate comes from other
    machines and each run would take 100-500x longer, so the sweep says so before it starts."""
    from gilbench.models import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    base = ["--tasks", "toy", "--seeds", "0", "--device", "cpu", "--output-dir", str(tmp_path / "runs"), "--dry-run"]
    args = sweep_args("--methods", "ppo-kl,gil", "--set", "mixed_precision=bf16", *base)
    assert args.func(args) == 0
    warned = "2 of the runs to do compute bf16 on this CPU" in capsys.readouterr().out
    assert warned is not native
    args = sweep_args("--methods", "ppo-kl", "--set", "mixed_precision=fp32", *base)
    assert args.func(args) == 0
    assert "warning" not in capsys.readouterr().out
