"""A run folder never mixes configs, resumes however its path is spelled, and reports damaged files with a fix."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

import gilbench.rl.trainer as trainer_module
from gilbench.cli import main
from gilbench.errors import GilbenchError
from gilbench.files import UMASK, atomic_dir, atomic_write_text, clean_stale_temps
from gilbench.pipeline import run


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run (checkpoint kept), copied by each test that damages it."""
    from conftest import tiny_config

    root = tmp_path_factory.mktemp("finished")
    cfg = tiny_config(root, steps=2)
    cfg.rl.keep_checkpoint = True
    run(cfg, log=quiet)
    return cfg


def copy_of(finished, tmp_path) -> tuple:
    store = tmp_path / "store"
    shutil.copytree(finished.output_dir, store)
    cfg = copy.deepcopy(finished)
    cfg.output_dir = str(store)
    return cfg, store / "toy" / "ppo-kl" / "seed0"


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda c: setattr(c.rl, "steps", 3), "rl.steps: 2 -> 3"),
        (lambda c: setattr(c.rl, "lr", 3e-5), "rl.lr: 1e-05 -> 3e-05"),
        (lambda c: setattr(c, "limit", 12), "limit: 0 -> 12"),  # would train a new reward model the policy never saw
        (lambda c: setattr(c.generate, "max_prompts", 1), "generate.max_prompts"),
    ],
)
def test_a_finished_run_is_not_reused_under_another_config(finished, tmp_path, change, named):
    cfg, out = copy_of(finished, tmp_path)
    shutil.rmtree(
        out / "checkpoints"
    )  # as after a default run (keep_checkpoint false): before the fix nothing was compared then
    before = (out / "config.yaml").read_text()
    change(cfg)
    with pytest.raises(GilbenchError, match=f"different config.*{named}.*--overwrite"):
        run(cfg, log=quiet)
    assert (out / "config.yaml").read_text() == before  # the record still describes what was run


def test_overwrite_starts_the_run_again(finished, tmp_path):
    cfg, out = copy_of(finished, tmp_path)
    cfg.rl.steps = 1
    run(cfg, log=quiet, overwrite=True)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_cli_names_the_differing_fields_in_one_line(finished, tmp_path, capsys):
    cfg, out = copy_of(finished, tmp_path)
    rc = main(
        [
            "run",
            "--method",
            "ppo-kl",
            "--task",
            "toy",
            "--model",
            "tiny",
            "--output-dir",
            cfg.output_dir,
            "--device",
            "cpu",
            "--set",
            "rl.steps=40",
            "--set",
            "rl.lr=3.0e-5",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "rl.steps" in err and "rl.lr" in err


def test_fields_that_change_nothing_are_ignored(finished, tmp_path):
    cfg, out = copy_of(finished, tmp_path)
    cfg.rl.log_rollouts_every, cfg.rl.checkpoint_every, cfg.tensorboard = 5, 7, False
    run(cfg, log=quiet)


def test_running_a_finished_run_again_changes_nothing(finished, tmp_path, monkeypatch):
    # its env.json names the code that made it and summary.json its wall time: a second call must not rewrite them
    cfg, out = copy_of(finished, tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg.output_dir = "store"  # another spelling of the same store, as a later sweep may use
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    logs = []
    summary = run(cfg, log=logs.append)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert summary["seconds"] == json.loads(before[out / "summary.json"])["seconds"]
    assert any("already finished" in line and "unchanged" in line for line in logs)


@pytest.mark.parametrize("spelling", ["trailing slash", "relative", "moved"])
def test_resume_accepts_any_spelling_of_the_store(finished, tmp_path, monkeypatch, spelling):
    cfg, out = copy_of(finished, tmp_path)
    shutil.rmtree(out / "policy")  # an unfinished run: its checkpoint must be resumed, not refused
    (out / "summary.json").unlink()
    if spelling == "trailing slash":
        cfg.output_dir += "/"
    elif spelling == "relative":
        monkeypatch.chdir(tmp_path)
        cfg.output_dir = "store"
    else:
        os.rename(tmp_path / "store", tmp_path / "moved")
        cfg.output_dir, out = str(tmp_path / "moved"), tmp_path / "moved" / "toy" / "ppo-kl" / "seed0"
    logs = []
    run(cfg, log=logs.append)
    assert any("resumed from the checkpoint at step 2" in line for line in logs)


def damage_torn_metrics(out):
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "objective/sc')


def damage_missing_row(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(lines[1] + "\n")


def damage_generations(out):
    path = out / "generations" / "id_test.jsonl"
    path.write_text(path.read_text()[:-20])


def damage_weights(out):
    path = out / "policy" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def damage_config(out):
    (out / "config.yaml").write_text("rl: {steps: [\n")


def damage_checkpoint(out):
    shutil.rmtree(out / "policy")
    (out / "summary.json").unlink()
    (out / "checkpoints" / "step_2" / "trainer.pt").write_bytes(b"garbage")


@pytest.mark.parametrize(
    "damage, message",
    [
        (damage_torn_metrics, r"metrics.jsonl line 3 is damaged.*--overwrite"),
        (damage_missing_row, r"metrics.jsonl line 1: step 2 where step 1 was due"),
        (damage_generations, r"id_test.jsonl line 2 is damaged.*delete"),
        (damage_weights, r"trained policy in .* is damaged.*delete"),
        (damage_config, r"config.yaml is damaged.*--overwrite"),
        (damage_checkpoint, r"checkpoint .*step_2 is damaged.*delete that folder"),
    ],
)
def test_damaged_files_are_reported_with_the_fix(finished, tmp_path, damage, message):
    cfg, out = copy_of(finished, tmp_path)
    damage(out)
    with pytest.raises(GilbenchError, match=message):
        run(cfg, log=quiet)


def test_missing_middle_row(tmp_path):
    from gilbench.files import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.extend([{"step": 1}, {"step": 3}])
    with pytest.raises(GilbenchError, match="step 3 where step 2 was due"):
        log.rows()


def test_non_finite_sampling_names_the_step_and_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("ppo-kl", steps=3)
    original, calls = trainer_module.sample, {"n": 0}

    def sample(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "sample", sample)
    with pytest.raises(
        GilbenchError, match=r"non-finite probabilities while sampling at step 2.*last good checkpoint is step 1"
    ):
        run(cfg, log=quiet)


def test_files_and_folders_follow_the_umask(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~UMASK
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~UMASK
    if UMASK == 0o022:
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # before: 0600 and 0700


def test_stale_temporaries_are_cleaned_on_the_next_start(tmp_path):
    (tmp_path / ".step_3.tmp-abc123").mkdir()  # left by a run killed while saving (old naming included)
    (tmp_path / ".config.yaml.tmp-host.1-x").write_text("")
    assert len(clean_stale_temps(tmp_path, owned=True)) == 2 and not list(tmp_path.iterdir())
    shared = tmp_path / "cache"
    shared.mkdir()
    import socket

    host = socket.gethostname().replace(".", "_")
    (shared / f".k1.tmp-{host}.{2**22 + 12345}-x").mkdir()  # a dead writer on this host
    (shared / f".k2.tmp-{host}.{os.getpid()}-x").mkdir()  # a live one: still working
    assert [p.name for p in clean_stale_temps(shared)] == [f".k1.tmp-{host}.{2**22 + 12345}-x"]


def test_a_killed_runs_temp_folders_are_removed_when_it_restarts(finished, tmp_path):
    cfg, out = copy_of(finished, tmp_path)
    (out / "checkpoints" / ".step_3.tmp-zzz").mkdir()
    run(cfg, log=quiet)
    assert not list((out / "checkpoints").glob(".*tmp*"))


def test_a_precision_mismatch_says_auto_resolves_per_machine(finished, tmp_path):
    """mixed_precision auto is resolved and recorded per run, so a run started on a bf16 CPU and continued on
    one without native bf16 differs in it: the refusal says why, not only what."""
    cfg, out = copy_of(finished, tmp_path)
    recorded = yaml.safe_load((out / "config.yaml").read_text())["mixed_precision"]
    cfg.mixed_precision = "no" if recorded == "bf16" else "bf16"
    with pytest.raises(GilbenchError, match="different config.*mixed_precision.*machine like the one that started it"):
        run(cfg, log=quiet)


def test_env_json_names_the_machine(finished):
    """Wall times and mixed_precision auto depend on the machine, so the run records it."""
    from gilbench.models.precision import cpu_has_native_bf16

    env = json.loads((Path(finished.output_dir) / "toy" / "ppo-kl" / "seed0" / "env.json").read_text())
    assert env["machine"]["cpu_native_bf16"] is cpu_has_native_bf16()
    assert env["machine"]["cores"] >= 1 and env["machine"]["cpu"]
    assert env["machine"]["allocator"] in ("glibc, freed memory kept", "system default")
