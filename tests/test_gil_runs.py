"""GIL end to end on the toy task: equal to PPO w/ KL with both terms off, gil-oracle, a shared trunk with three
groups, resume, and the ablations' registered defaults (the group math and head by hand: tests/test_gil.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gilbench import registry
from gilbench.methods.gil import (
    GIL,
    GILConfig,
)
from gilbench.pipeline import run


# ----------------------------------------------------------------------------- runs on the toy task
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SFT model and reward model for every run in this file (runs get their own folders)."""
    root = tmp_path_factory.mktemp("gil_runs")
    (root / "cache").mkdir()
    return root


def configure(cfg, store: Path, name: str, **method_args):
    """Give a run its own output folder that shares the stage cache (tiny_cfg applied the method's defaults)."""
    out = store / name
    out.mkdir()
    (out / "cache").symlink_to(store / "cache")
    cfg.output_dir = str(out)
    cfg.method_args.update(method_args)
    return cfg


def metrics_of(cfg) -> list[dict]:
    path = Path(cfg.output_dir) / "toy" / cfg.method / f"seed{cfg.seed}" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "throughput/"))}


def assert_same_rows(rows_a: list[dict], rows_b: list[dict], keys=None) -> None:
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b):
        for key in keys or comparable(a):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)


def quiet(*_):
    pass


def test_gil_with_both_terms_off_is_ppo_with_kl(tiny_cfg, store):
    ppo = configure(tiny_cfg("ppo-kl", steps=3), store, "ppo")
    gil = configure(tiny_cfg("gil", steps=3), store, "gil-off", beta_policy=0.0, adaptive_kl=False)
    run(ppo, log=quiet)
    run(gil, log=quiet)
    ppo_rows, gil_rows = metrics_of(ppo), metrics_of(gil)
    shared = set(comparable(ppo_rows[0])) & set(gil_rows[0])
    assert {"loss/policy", "loss/value", "objective/score", "objective/kl", "policy/approx_kl"} <= shared
    assert_same_rows(ppo_rows, gil_rows, sorted(shared))
    weights = [
        load_file(Path(c.output_dir) / "toy" / c.method / "seed0" / "policy" / "model.safetensors") for c in (ppo, gil)
    ]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], atol=1e-6, rtol=0), name


GROUP_METRICS = [
    "group/variance",
    "group/worst",
    "group/gap",
    "loss/group",
    "gil/kl_weight_mean",
    "gil/kl_weight_std",
    "group/nmi",
    "group/purity",
    "loss/invariance",
]


def check_group_metrics(rows: list[dict], n_groups: int) -> None:
    for row in rows:
        for name in GROUP_METRICS + [
            f"group/{g}/{q}" for g in range(n_groups) for q in ("mass", "score", "kl", "length")
        ]:
            assert name in row and row[name] is not None and math.isfinite(row[name]), (row["step"], name)
        assert sum(row[f"group/{g}/mass"] for g in range(n_groups)) == pytest.approx(1.0, abs=1e-5)
        assert 0 <= row["group/nmi"] <= 1 and 0.5 <= row["group/purity"] <= 1
        assert row["gil/kl_weight_mean"] == pytest.approx(1.0, abs=1e-5)  # kl_normalise is on by default
        assert row["group/worst"] <= row[f"group/{0}/score"] + 1e-6


def test_gil_oracle_end_to_end(tiny_cfg, store):
    cfg = configure(tiny_cfg("gil-oracle", steps=2), store, "oracle")
    assert cfg.method_args == {"groups": "oracle"}
    run(cfg, log=quiet)
    rows = metrics_of(cfg)
    check_group_metrics(rows, n_groups=2)  # toy has two labelled groups: food, pets
    assert all(r["group/nmi"] == pytest.approx(1.0) and r["group/purity"] == 1.0 for r in rows)


def test_gil_with_a_shared_trunk_and_three_groups_end_to_end(tiny_cfg, store):
    cfg = configure(tiny_cfg("gil", steps=2), store, "gil-trunk", n_groups=3, group_head_shares_trunk=True)
    run(cfg, log=quiet)
    check_group_metrics(metrics_of(cfg), n_groups=3)


def test_gil_resumes_to_the_same_metrics_and_logs_groups(tiny_cfg, store, monkeypatch):
    whole = configure(tiny_cfg("gil", steps=4), store, "gil-whole")
    run(whole, log=quiet)
    check_group_metrics(metrics_of(whole), n_groups=2)

    broken = configure(tiny_cfg("gil", steps=4), store, "gil-killed")
    original = GIL.iteration

    def killed_after_two_steps(self, step):
        if step == 2:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    monkeypatch.setattr(GIL, "iteration", killed_after_two_steps)
    with pytest.raises(KeyboardInterrupt):
        run(broken, log=quiet)
    assert [r["step"] for r in metrics_of(broken)] == [1, 2]
    monkeypatch.setattr(GIL, "iteration", original)
    run(broken, log=quiet)  # the same run folder: resumes from the checkpoint at step 2
    assert_same_rows(metrics_of(whole), metrics_of(broken))


def test_an_ablation_run_without_its_defaults_is_refused(tiny_cfg, store):
    from gilbench.errors import GilbenchError

    cfg = tiny_cfg("gil-oracle", steps=1)
    cfg.method_args = {}  # as if built with RunConfig(method="gil-oracle"), not config_for_method
    cfg.output_dir = str(store)  # the shared cache; the run stops in setup, before any step
    with pytest.raises(GilbenchError, match="needs its defaults"):
        run(cfg, log=quiet)


def test_ablations_are_registered_with_their_defaults():
    expected = {
        "gil-fixed-kl": ("adaptive_kl", False),
        "gil-no-inv": ("beta_policy", 0.0),
        "gil-oracle": ("groups", "oracle"),
    }
    for name, (field, value) in expected.items():
        cls = registry.methods.get(name)
        assert issubclass(cls, GIL) and cls.Config is GILConfig and cls.defaults == {f"method_args.{field}": value}
    from argparse import Namespace

    from gilbench.cli import build_configs

    args = Namespace(
        config=None,
        method="gil-no-inv",
        task="toy",
        model=None,
        seed=None,
        output_dir=None,
        limit=None,
        overrides=["n_groups=4"],
        device=None,
        data_dir=None,
        include=[],
    )
    cfg = build_configs(args)[0]
    assert cfg.method_args == {"beta_policy": 0.0, "n_groups": 4}


@pytest.mark.parametrize("critic_kind", ["policy", "shared"])
def test_group_input_prompt_reads_a_state_the_sampled_response_cannot_move(critic_kind):
    from gilbench.models.heads import SharedValueHead, ValueModel
    from gilbench.models.presets import load_causal_lm
    from gilbench.rl.rollout import policy_and_values

    policy, _ = load_causal_lm("tiny")
    critic = SharedValueHead(policy) if critic_kind == "shared" else ValueModel.from_causal_lm(policy)
    query = torch.randint(5, 100, (2, 4))
    query_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # left-padded
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    one, other = torch.randint(5, 100, (2, 3)), torch.randint(5, 100, (2, 3))
    with torch.no_grad():
        hidden = {
            (at, i): policy_and_values(policy, critic, query, query_mask, r, mask, 1.0, hidden_at=at)[3]
            for at in ("prompt", "response")
            for i, r in enumerate((one, other))
        }
    assert torch.allclose(hidden["prompt", 0], hidden["prompt", 1])  # the prompt's last token, whatever follows
    assert not torch.allclose(hidden["response", 0], hidden["response", 1])


def test_gil_on_prompt_groups_end_to_end(tiny_cfg, store):
    cfg = configure(tiny_cfg("gil", steps=2), store, "gil-prompt", group_input="prompt")
    run(cfg, log=quiet)
    check_group_metrics(metrics_of(cfg), n_groups=2)
    cfg = configure(
        tiny_cfg("gil", steps=1), store, "gil-prompt-trunk", group_input="prompt", group_head_shares_trunk=True
    )
    run(cfg, log=quiet)
    check_group_metrics(metrics_of(cfg), n_groups=2)
