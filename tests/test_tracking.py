"""report_to: every training stage (SFT, RM, RL, DPO) writes TensorBoard events that read back as the logged metrics."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from gilbench import tracking
from gilbench.config import RunConfig
from gilbench.errors import GilbenchError, MissingDependency
from gilbench.pipeline import run


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_of_all_four_stage_kinds(tmp_path, tiny_cfg):
    pytest.importorskip("tensorboard")
    rl_cfg = tiny_cfg("ppo-kl", steps=2)
    rl_cfg.report_to = "tensorboard"
    run(rl_cfg)
    rl_dir = tmp_path / "runs" / "toy" / "ppo-kl" / "seed0"
    board = rl_dir / "tracking" / "tensorboard"
    sft, rm, rl = scalars(board / "sft"), scalars(board / "rm"), scalars(board / "rl")
    assert [s for s, _ in sft["sft/loss"]] == [1, 2] and [s for s, _ in rm["rm/loss"]] == [
        1,
        2,
    ]  # 16 examples / pairs in batches of 8
    metrics = [json.loads(line) for line in (rl_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in rl["objective/score"]] == [1, 2]
    assert [v for _, v in rl["objective/kl"]] == pytest.approx([m["objective/kl"] for m in metrics], rel=1e-6)

    dpo_cfg = tiny_cfg("dpo")
    dpo_cfg.report_to = "tensorboard"
    dpo_cfg.method_args = {"epochs": 1, "batch_size": 8, "micro_batch_size": 4, "max_pairs": 16}
    run(dpo_cfg)
    dpo_dir = tmp_path / "runs" / "toy" / "dpo" / "seed0"
    dpo = scalars(dpo_dir / "tracking" / "tensorboard" / "dpo")
    rows = [json.loads(line) for line in (dpo_dir / "metrics.jsonl").read_text().splitlines()]
    assert dpo["loss/dpo"] == [(r["step"], pytest.approx(r["loss/dpo"], rel=1e-6)) for r in rows] and len(rows) == 2
    assert not (
        dpo_dir / "tracking" / "tensorboard" / "sft"
    ).exists()  # the SFT model came from the cache: logged once, by its trainer


def test_report_to_refuses_unknown_and_missing_trackers(monkeypatch, tmp_path):
    with pytest.raises(
        GilbenchError,
        match=r"unknown tracker\(s\) \['comet'\].*none or a comma list of tensorboard, wandb, mlflow, trackio",
    ):
        tracking.parse_report_to("tensorboard,comet")
    assert tracking.parse_report_to("none") == [] and tracking.parse_report_to("none", tensorboard_flag=True) == [
        "tensorboard"
    ]
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    cfg = RunConfig(report_to="wandb")
    with pytest.raises(
        MissingDependency, match=r"report_to=wandb needs the optional package 'wandb'.*gilbench\[wandb\]"
    ):
        tracking.configure(cfg, tmp_path, SimpleNamespace(is_main_process=True))


def test_only_the_main_process_writes(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = RunConfig(report_to="tensorboard")
    tracking.configure(cfg, tmp_path, SimpleNamespace(is_main_process=False))
    stage = tracking.open_stage("rl")
    stage.log({"x": 1.0}, 1)
    stage.close()
    assert not (tmp_path / "tracking").exists()
    tracking.configure(cfg, tmp_path, SimpleNamespace(is_main_process=True))
    stage = tracking.open_stage("rl")
    stage.log({"x": 1.0, "name": "text is not charted", "flag": True}, 1)
    stage.close()
    assert scalars(tmp_path / "tracking" / "tensorboard" / "rl") == {"x": [(1, 1.0)]}


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_heavy_trackers_write_locally(name, tmp_path, monkeypatch):
    """Where the extra is installed: mlflow into a local file store, wandb offline; nothing leaves the machine."""
    pytest.importorskip(name)
    from accelerate import Accelerator

    for var in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracking.configure(RunConfig(report_to=name), tmp_path, Accelerator(cpu=True))
    stage = tracking.open_stage("rl")
    for step in (1, 2, 3):
        stage.log({"objective/score": 0.5 * step}, step)
    stage.close()
    if name == "mlflow":
        import mlflow

        runs = mlflow.search_runs(experiment_names=["gilbench-chitchat"])
        assert list(runs["tags.mlflow.runName"]) == ["chitchat/ppo-kl/seed0/rl"]
        history = mlflow.tracking.MlflowClient().get_metric_history(runs.run_id[0], "objective/score")
        assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 1.0), (3, 1.5)]
        assert (tmp_path / "tracking" / "mlruns").is_dir()
    else:
        import os

        assert os.environ["WANDB_MODE"] == "offline"
        assert list((tmp_path / "tracking" / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
