"""One resolution path: resolve_run's precedence, the task include: files, and the config field docs."""

from __future__ import annotations

import dataclasses

import pytest

from gilbench import registry
from gilbench.cli import main
from gilbench.cli.fields import field_docs, field_rows
from gilbench.config import RLConfig, RunConfig
from gilbench.data.tasks import parse_task_file
from gilbench.errors import GilbenchError
from gilbench.models.precision import resolve_mixed_precision
from gilbench.resolve import ResolvedRun, resolve_config, resolve_run

# The 13 run-config defaults tasks/chitchat.yaml and tasks/chitchat-ood.yaml listed in full before they shared
# tasks/_chitchat-defaults.yaml; the resolved configs must not change.
CHITCHAT_DEFAULTS = {
    "model.policy": "smollm2-135m",
    "sft.enabled": False,
    "rm.max_pairs": 1024,
    "rm.micro_batch_size": 4,  # pairs of similar length per forward (README, Models)
    "rl.rollout_batch_size": 16,
    "rl.minibatch_size": 8,  # 2 epochs x 2 minibatches: real PPO (issue 13)
    "rl.micro_batch_size": 8,
    "rl.forward_batch_size": 16,
    "rl.ppo_epochs": 2,
    "rl.max_new_tokens": 24,
    "rl.lr": 2.0e-5,
    "generate.max_prompts": 32,
    "generate.max_new_tokens": 32,
    "generate.batch_size": 32,  # a split's prompts in one decoding loop
}


def test_resolve_run_precedence_task_method_file_fields_overrides(tmp_path):
    r = resolve_run("ppo", "chitchat-ood")
    assert isinstance(r, ResolvedRun) and r.method_cls is registry.methods.get("ppo") and r.task.name == "chitchat-ood"
    assert r.cfg.rl.steps == 14 and r.cfg.rl.kl_coef == 0.0  # the task's size, the method's defining default
    path = tmp_path / "run.yaml"
    path.write_text("method: gil\nrl: {steps: 3, lr: 1.0e-4}\n")
    r = resolve_run(
        None, "chitchat", ["rl.lr=3e-4"], config_file=path, fields={"rl": {"steps": 5}, "model": {"policy": "tiny"}}
    )
    assert r.cfg.method == "gil" and r.cfg.rl.steps == 5 and r.cfg.rl.lr == 3e-4 and r.cfg.model.policy == "tiny"
    assert r.method_cfg == registry.methods.get("gil").Config()  # the method's own config, built once
    assert r.record()["method_args"] == dataclasses.asdict(r.method_cfg)
    assert resolve_run("ppo-kl", "chitchat", config_file=path).cfg.method == "ppo-kl"  # a flag wins over the file


def test_resolve_refuses_invalid_values_and_names():
    with pytest.raises(GilbenchError, match="rl.minibatch_size"):
        resolve_run("ppo-kl", "chitchat", ["rl.minibatch_size=5"])
    with pytest.raises(GilbenchError, match="must be at least 1"):
        resolve_run("gil", "chitchat", ["n_groups=0"])
    with pytest.raises(GilbenchError, match="unknown method 'gill'. Did you mean 'gil'"):
        resolve_run("gill", "chitchat")


def test_with_seed_and_resolve_config_agree_with_resolve_run():
    r = resolve_run("ppo-kl", "chitchat", ["rl.steps=2"])
    again = resolve_config(r.with_seed(3).cfg)
    assert again.cfg.seed == 3 and again.record() == r.with_seed(3).record() and r.cfg.seed == 0


@pytest.mark.parametrize("task, steps", [("chitchat", 20), ("chitchat-ood", 14)])
def test_chitchat_tasks_resolve_as_before_the_shared_defaults_file(task, steps):
    spec = registry.tasks.get(task)
    lean = {"model.critic": "shared", "model.gradient_checkpointing": True} if task == "chitchat-ood" else {}
    assert spec.defaults == CHITCHAT_DEFAULTS | lean | {"rl.steps": steps}
    expected = RunConfig(method="ppo-kl", task=task, mixed_precision=resolve_mixed_precision("auto", "auto"))
    expected.model.policy, expected.sft.enabled, expected.rm.max_pairs = "smollm2-135m", False, 1024
    expected.rm.micro_batch_size = 4
    expected.model.gradient_checkpointing = bool(lean)
    expected.model.critic = "shared" if lean else "policy"
    expected.rl = dataclasses.replace(
        RLConfig(),
        steps=steps,
        rollout_batch_size=16,
        minibatch_size=8,
        micro_batch_size=8,
        forward_batch_size=16,
        ppo_epochs=2,
        max_new_tokens=24,
        lr=2.0e-5,
    )
    expected.generate.max_prompts, expected.generate.max_new_tokens, expected.generate.batch_size = 32, 32, 32
    assert resolve_run("ppo-kl", task).cfg == expected


def test_task_include_merges_mappings_and_is_checked(tmp_path):
    (tmp_path / "_shared.yaml").write_text(
        "description: shared\ndefaults: {rl.steps: 3, rl.lr: 1.0e-4}\noptions: {n: 1}\n"
    )
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nloader: m:f\ninclude: _shared.yaml\ndefaults: {rl.steps: 7}\n")
    spec = parse_task_file(task)
    assert (
        spec.description == "shared" and spec.defaults == {"rl.steps": 7, "rl.lr": 1.0e-4} and spec.options == {"n": 1}
    )
    (tmp_path / "_shared.yaml").write_text("include: other.yaml\n")
    with pytest.raises(GilbenchError, match="may not include another"):
        parse_task_file(task)
    task.write_text("name: t\nloader: m:f\ninclude: missing.yaml\n")
    with pytest.raises(GilbenchError, match="missing.yaml: no such file"):
        parse_task_file(task)
    assert "_chitchat-defaults" not in registry.tasks.names()


def test_config_field_docs_reach_help_and_ls(capsys):
    assert field_docs(RLConfig)["steps"] == "PPO iterations (rollout + update)"
    rows = {name: doc for name, _, doc in field_rows(RunConfig)}
    assert all(rows.values()) and rows["rl.kl_coef"].startswith("KL penalty coefficient")
    assert main(["ls", "config"]) == 0
    assert "rl.kl_estimator" in capsys.readouterr().out
    assert main(["ls", "methods", "-v"]) == 0
    assert "# M, groups the head infers" in capsys.readouterr().out  # gil's n_groups doc
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "rl.clip_range = 0.2  # PPO ratio clip" in capsys.readouterr().out
