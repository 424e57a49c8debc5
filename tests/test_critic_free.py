"""The critic-free methods (gilbench/methods/rloo.py, grpo.py): advantages by hand, k samples per prompt,
refusals at load, and runs on the toy task that build no value model and log no val/* metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from loop_fixtures import CRITIC_NAMES, FIXED_NAMES, fake_rollout

from gilbench.data.types import Prompt
from gilbench.errors import GilbenchError
from gilbench.methods.grpo import GRPO, GRPOConfig, group_normalised_advantages
from gilbench.methods.rloo import RLOO, RLOOConfig, leave_one_out_advantages
from gilbench.models.heads import ValueModel
from gilbench.pipeline import run
from gilbench.resolve import resolve_run
from gilbench.rl import trainer as trainer_module
from gilbench.rl.trainer import shape_rewards


def test_leave_one_out_advantages_by_hand():
    # prompt a: R = 1, 2, 3, 6. The others' means: (2+3+6)/3 = 11/3, (1+3+6)/3 = 10/3, (1+2+6)/3 = 3, (1+2+3)/3 = 2
    # -> A = 1 - 11/3 = -8/3, 2 - 10/3 = -4/3, 0, 4.  prompt b: R = 0, 0, 0, 4 -> -4/3 three times, and 4 - 0 = 4.
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    expected = torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0, -4 / 3, -4 / 3, -4 / 3, 4.0])
    assert torch.allclose(leave_one_out_advantages(returns, 4), expected)
    # k = 2: each sample against the other one; a prompt's advantages sum to 0 for any k
    assert torch.allclose(
        leave_one_out_advantages(torch.tensor([5.0, 1.0, -2.0, -2.0]), 2), torch.tensor([4.0, -4.0, 0.0, 0.0])
    )
    assert leave_one_out_advantages(returns, 4).view(2, 4).sum(dim=1).abs().max() < 1e-6


def test_group_normalised_advantages_by_hand():
    # R = 1, 2, 3, 6: mean 3, deviations -2, -1, 0, 3, Bessel variance (4 + 1 + 0 + 9) / 3 = 14/3, std 2.16025
    std = math.sqrt(14 / 3) + 1e-4
    got = group_normalised_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0, 2.0, 2.0, 2.0, 2.0]), 4)
    assert torch.allclose(got, torch.tensor([-2 / std, -1 / std, 0.0, 3 / std, 0.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("cls,config", [(RLOO, RLOOConfig(rloo_k=2)), (GRPO, GRPOConfig(group_size=2))])
def test_sequence_advantage_is_the_kl_shaped_return_baselined_and_broadcast(cls, config):
    # Two prompts x 2 samples, kl_coef 0.1. Returns: 1 - 0.1 * (0.5 + 0.5) = 0.9 and 0 (prompt 1); 2 and 1 - 0.1 * 2 = 0.8
    # (prompt 2; its second response has one token: the KL of the masked token does not count).
    # RLOO: A = 0.9, -0.9, 1.2, -1.2.  GRPO (k = 2: deviations +-d with d = |R1 - R2| / 2, Bessel std d * sqrt 2):
    # +-0.45 / (0.45 sqrt 2 + 1e-4) and +-0.6 / (0.6 sqrt 2 + 1e-4), about +-1/sqrt 2.
    method = cls.__new__(cls)
    method.ctx = SimpleNamespace(method_cfg=config)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    kl = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.0, 0.0], [2.0, 7.0]]) * mask
    batch = fake_rollout(torch.tensor([1.0, 0.0, 2.0, 1.0]), kl, mask, samples_per_prompt=2)
    batch.rewards = shape_rewards(batch, 0.1)
    advantages, returns = method.advantages(batch)
    assert returns is None
    if cls is RLOO:
        per_sample = torch.tensor([0.9, -0.9, 1.2, -1.2])
    else:
        a, b = 0.45 / (0.45 * math.sqrt(2) + 1e-4), 0.6 / (0.6 * math.sqrt(2) + 1e-4)
        per_sample = torch.tensor([a, -a, b, -b])
    assert torch.allclose(advantages, per_sample[:, None] * mask, atol=1e-6)


def test_k_samples_per_prompt_in_a_row():
    method = RLOO.__new__(RLOO)
    method.ctx = SimpleNamespace(method_cfg=RLOOConfig(rloo_k=4))
    method.cfg, method.rl, method.acc = (
        SimpleNamespace(seed=0),
        SimpleNamespace(rollout_batch_size=12),
        SimpleNamespace(process_index=0),
    )
    method.prompts = [Prompt(id=str(i), text=f"q{i}") for i in range(50)]
    ids = [p.id for p in method.sample_prompts(3)]
    assert len(ids) == 12 and len(set(ids)) == 3 and all(len(set(ids[i : i + 4])) == 1 for i in range(0, 12, 4))


@pytest.mark.parametrize(
    "method,sets,match",
    [
        (
            "rloo",
            ["rl.rollout_batch_size=6", "rl.minibatch_size=6", "rl.micro_batch_size=6"],
            r"multiple of method_args.rloo_k \(4\)",
        ),
        ("rloo", ["rloo_k=1"], "rloo_k = 1: must be at least 2"),
        ("grpo", ["group_size=3"], r"multiple of method_args.group_size \(3\)"),
    ],
)
def test_bad_samples_per_prompt_are_refused_at_load(method, sets, match):
    with pytest.raises(GilbenchError, match=match):
        resolve_run(method, "toy", sets)


def rows(summary: dict) -> list[dict]:
    return [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]


APPLY = [name for name in FIXED_NAMES if name not in CRITIC_NAMES]  # the fixed names without a critic


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_critic_free_runs_build_no_value_model(tiny_cfg, monkeypatch, method):
    built = []
    for name in ("from_causal_lm", "from_sequence_classifier"):
        original = getattr(ValueModel, name)
        monkeypatch.setattr(
            ValueModel, name, classmethod(lambda cls, *a, _o=original, **k: built.append(1) or _o(*a, **k))
        )
    seen = []
    setup = trainer_module.RLMethod.setup
    monkeypatch.setattr(trainer_module.RLMethod, "setup", lambda self, ctx: (setup(self, ctx), seen.append(self))[0])
    summary = run(tiny_cfg(method, steps=2), log=lambda s: None)
    assert built == [] and seen[0].critic is None and seen[0].critic_opt is None
    # the models the method holds: the policy and its frozen reference, nothing a third of that size (PPO's critic)
    held = [m for m in vars(seen[0]).values() if isinstance(m, torch.nn.Module)]
    n_policy = sum(p.numel() for p in seen[0].policy.parameters())
    assert sum(p.numel() for m in held for p in m.parameters()) == 2 * n_policy
    metrics = rows(summary)
    assert [r["step"] for r in metrics] == [1, 2]
    for row in metrics:
        assert all(name in row for name in APPLY), sorted(set(APPLY) - set(row))
        assert not [k for k in row if k.startswith("val/") or k == "loss/value"]
    rollout = [json.loads(line) for line in (Path(summary["run_dir"]) / "rollouts.jsonl").read_text().splitlines()]
    first = [r["prompt_id"] for r in rollout if r["step"] == 1]
    assert len(first) == 8 and all(len(set(first[i : i + 4])) == 1 for i in range(0, 8, 4))  # 2 prompts x 4 samples


def test_a_killed_rloo_run_resumes_to_the_same_metrics(tiny_cfg, tmp_path, monkeypatch):
    whole = rows(run(tiny_cfg("rloo", steps=3), log=lambda s: None))
    cfg = tiny_cfg("rloo", steps=3)
    cfg.output_dir = str(tmp_path / "killed")
    original = trainer_module.RLMethod.iteration

    def dies_in_step_three(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(trainer_module.RLMethod, "iteration", dies_in_step_three)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, log=lambda s: None)
    monkeypatch.setattr(trainer_module.RLMethod, "iteration", original)
    resumed = rows(run(cfg, log=lambda s: None))
    for a, b in zip(whole, resumed):
        for key in a:
            if not key.startswith(("time/", "throughput/")):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_every_task_resolves_with_the_critic_free_methods(method):
    """Every task's defaults give a whole number of prompts per rollout for k = 4."""
    from gilbench import registry

    for task in registry.tasks.names():
        resolved = resolve_run(method, task)
        assert resolved.cfg.rl.rollout_batch_size % 4 == 0 and resolved.method_cls.needs_critic is False
