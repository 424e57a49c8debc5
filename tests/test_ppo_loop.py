"""The shared PPO loop end to end on the tiny model: every PPO-family method, resume, NaN guard, stage cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from loop_fixtures import FIXED_NAMES

from gilbench.errors import GilbenchError
from gilbench.pipeline import run
from gilbench.rl import trainer as trainer_module
from gilbench.rl import update as update_module

TIMING = ("time/", "throughput/")


def metrics(summary: dict) -> list[dict]:
    path = Path(summary["run_dir"]) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


@pytest.mark.parametrize("method", ["ppo", "ppo-kl", "ppo-ptx"])
def test_each_ppo_method_runs_end_to_end(tiny_cfg, method):
    cfg = tiny_cfg(method, steps=2)
    summary = run(cfg, log=lambda s: None)
    rows = metrics(summary)
    assert [r["step"] for r in rows] == [1, 2]
    for name in FIXED_NAMES:
        assert name in rows[0], name
    if method == "ppo":
        assert rows[0]["objective/kl_coef"] == 0.0
    if method == "ppo-ptx":
        assert rows[0]["loss/ptx"] > 0
    assert all(torch.isfinite(torch.tensor(r["objective/kl"])) for r in rows)
    assert set(summary["eval"]) == {"id:test", "ood:space"}
    assert summary["eval"]["ood:space"]["distribution"] == "ood"
    gens = Path(summary["run_dir"]) / "generations" / "ood_space.jsonl"
    row = json.loads(gens.read_text().splitlines()[0])
    assert {"id", "prompt", "response", "rm_score", "split", "distribution", "group"} <= set(row)
    assert (Path(summary["run_dir"]) / "policy" / "model.safetensors").exists()


def test_ppo_without_kl_differs_from_ppo_kl_only_in_the_penalty(tiny_cfg):
    """Same seed: the first rollout (prompts, samples, scores) is identical; the shaped reward is not."""
    a = metrics(run(tiny_cfg("ppo", steps=1), log=lambda s: None))[0]
    b = metrics(run(tiny_cfg("ppo-kl", steps=1), log=lambda s: None))[0]
    assert a["objective/score"] == b["objective/score"]
    assert a["completions/mean_length"] == b["completions/mean_length"]


@pytest.mark.parametrize("critic", ["policy", "shared"])
def test_killed_run_resumes_to_the_same_metrics(tiny_cfg, tmp_path, monkeypatch, critic):
    cfg = tiny_cfg("ppo-kl", steps=4)
    cfg.model.critic = critic
    full = run(cfg, log=lambda s: None)
    expected = without_timing(metrics(full))

    cfg = tiny_cfg("ppo-kl", steps=4)
    cfg.model.critic = critic
    cfg.output_dir = str(tmp_path / "killed")
    original = trainer_module.RLMethod.iteration

    def dies_in_step_three(self, step):
        if step == 2:
            raise KeyboardInterrupt  # as if the process were killed after checkpoint 2
        return original(self, step)

    monkeypatch.setattr(trainer_module.RLMethod, "iteration", dies_in_step_three)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, log=lambda s: None)
    run_dir = Path(cfg.output_dir) / "toy" / "ppo-kl" / "seed0"
    assert (run_dir / "checkpoints" / "step_2" / "DONE").exists()
    assert not (run_dir / "policy").exists()

    monkeypatch.setattr(trainer_module.RLMethod, "iteration", original)
    logs = []
    resumed = run(cfg, log=logs.append)
    assert any("resumed from the checkpoint at step 2" in line for line in logs)
    assert any("SFT model cached" in line for line in logs)
    got = without_timing(metrics(resumed))
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want:
            assert have[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (want["step"], key)
    # the rollout log holds each step once, as in the unbroken run, and the finished run drops its checkpoint
    unbroken, redone = (rollouts(Path(s["run_dir"])) for s in (full, resumed))
    assert (
        [r["step"] for r in redone]
        == [r["step"] for r in unbroken]
        == [k for k in (1, 2, 3, 4) for _ in range(cfg.rl.rollout_batch_size)]
    )
    assert [r["response"] for r in redone] == [r["response"] for r in unbroken]
    assert not (run_dir / "checkpoints").exists()


def rollouts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]


def test_rollout_log_records_what_the_policy_said_and_its_score(tiny_cfg):
    cfg = tiny_cfg("ppo-kl", steps=3)
    cfg.rl.log_rollouts_every, cfg.rl.keep_checkpoint = 2, True
    summary = run(cfg, log=lambda s: None)
    rows, per_step = rollouts(Path(summary["run_dir"])), metrics(summary)
    assert sorted({r["step"] for r in rows}) == [1, 2]  # the first step, then every 2nd
    assert {"prompt_id", "prompt", "group", "response", "score", "kl", "length"} <= set(rows[0])
    first = [r for r in rows if r["step"] == 1]
    assert sum(r["score"] for r in first) / len(first) == pytest.approx(per_step[0]["objective/score"], rel=1e-5)
    assert sum(r["length"] for r in first) / len(first) == pytest.approx(per_step[0]["completions/mean_length"])
    assert (Path(summary["run_dir"]) / "checkpoints").exists()  # keep_checkpoint


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("ppo-kl", steps=3)
    original = update_module.clipped_value_loss
    calls = {"n": 0}

    def nan_in_step_two(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), stats) if calls["n"] > 4 else (loss, stats)  # 4 micro-steps per step

    monkeypatch.setattr(update_module, "clipped_value_loss", nan_in_step_two)
    with pytest.raises(GilbenchError, match=r"non-finite loss at step 2 .*last good checkpoint is step 1"):
        run(cfg, log=lambda s: None)
    run_dir = Path(cfg.output_dir) / "toy" / "ppo-kl" / "seed0"
    assert (run_dir / "checkpoints" / "step_1" / "DONE").exists()


def test_second_method_reuses_sft_and_reward_model(tiny_cfg):
    run(tiny_cfg("ppo-kl", steps=1), log=lambda s: None)
    logs = []
    run(tiny_cfg("ppo", steps=1), log=logs.append)
    assert any("SFT model cached" in line for line in logs)
    assert any("reward model cached" in line for line in logs)


def test_bad_batch_sizes_are_explained(tiny_cfg):
    cfg = tiny_cfg("ppo-kl", steps=1, minibatch_size=3)
    with pytest.raises(GilbenchError, match="multiple of rl.minibatch_size"):
        run(cfg, log=lambda s: None)


def test_lora_policy_uses_itself_without_adapters_as_reference(tiny_cfg):
    cfg = tiny_cfg("ppo-kl", steps=2)
    cfg.model.lora, cfg.model.lora_r = True, 4
    summary = run(cfg, log=lambda s: None)
    rows = metrics(summary)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start at zero: policy == reference
    assert (Path(summary["run_dir"]) / "policy" / "model.safetensors").exists()  # merged into a plain model


@pytest.mark.parametrize("method,critic", [("ppo-kl", "policy"), ("ppo-ptx", "policy"), ("ppo-kl", "shared")])
def test_critic_warmup_trains_only_the_value_model(tiny_cfg, method, critic):
    cfg = tiny_cfg(method, steps=4, critic_warmup_steps=2)
    cfg.model.critic = critic  # shared: only the head learns on the policy's fixed features
    summary = run(cfg, log=lambda s: None)
    rows = [json.loads(x) for x in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    # steps 1-3 sample from the start policy (= the reference: KL exactly 0); the update of step 3 moves it
    assert [r["objective/kl"] == 0.0 for r in rows] == [True, True, True, False]
    assert all(r["policy/approx_kl"] == 0.0 and r["policy/clipfrac"] == 0.0 for r in rows[:2])
    assert rows[0]["loss/value"] != rows[1]["loss/value"]  # the critic learned meanwhile
    assert ("loss/ptx" in rows[2]) == (method == "ppo-ptx") and "loss/ptx" not in rows[0]


def test_critic_warmup_needs_a_critic(tiny_cfg):
    with pytest.raises(GilbenchError, match="no value model to warm up"):
        run(tiny_cfg("rloo", steps=2, critic_warmup_steps=1), log=lambda s: None)


def test_ppo_ptx_text_comes_from_the_start_policy_without_sft(tiny_cfg):
    cfg = tiny_cfg("ppo-ptx", steps=2)
    cfg.sft.enabled = False  # the start policy is the base model: human SFT text would pull it off its reference
    cfg.method_args = {"ptx_examples": 5}
    summary = run(cfg, log=lambda s: None)
    run_dir = Path(summary["run_dir"])
    rows = [json.loads(x) for x in (run_dir / "ptx_reference.jsonl").read_text().splitlines()]
    from gilbench import registry
    from gilbench.data.tasks import as_task_spec

    sft_prompts = {ex.prompt for ex in as_task_spec(registry.tasks.get("toy"), "toy").load(seed=0).sft}
    assert len(rows) == 5 and all(r["prompt"] in sft_prompts for r in rows)
    source = lambda s: json.loads((Path(s["run_dir"]) / "method_summary.json").read_text())["ptx_source"]  # noqa: E731
    assert source(summary) == "reference" and metrics(summary)[0]["loss/ptx"] > 0
    cfg.sft.enabled = True
    cfg.output_dir = str(Path(cfg.output_dir).parent / "with-sft")
    assert source(run(cfg, log=lambda s: None)) == "sft"


def test_shared_critic_reads_values_off_the_policy_forward(tiny_cfg):
    from gilbench.models.heads import SharedValueHead
    from gilbench.models.presets import load_causal_lm
    from gilbench.rl.rollout import policy_and_values, response_logprobs

    policy, _ = load_causal_lm("tiny")
    critic = SharedValueHead(policy)
    torch.nn.init.normal_(critic.value_head.weight)  # a trained head: values depend on the hidden states
    assert [n for n, _ in critic.named_parameters()] == ["value_head.weight", "value_head.bias"]
    query, query_mask = torch.randint(5, 100, (2, 4)), torch.ones(2, 4, dtype=torch.long)
    response, response_mask = torch.randint(5, 100, (2, 3)), torch.tensor([[1, 1, 1], [1, 1, 0]])
    calls = []
    hook = policy.register_forward_hook(lambda *a: calls.append(1))
    logp, _, values, last_hidden = policy_and_values(policy, critic, query, query_mask, response, response_mask, 1.0)
    hook.remove()
    assert len(calls) == 1  # one forward gives the log-probs and the values
    assert torch.allclose(logp, response_logprobs(policy, query, query_mask, response, response_mask))
    own_values, hidden = critic(torch.cat([query, response], 1), torch.cat([query_mask, response_mask], 1))
    assert torch.allclose(values, own_values[:, 3:-1], atol=1e-5)  # the states before each response token
    assert torch.allclose(last_hidden[1], hidden[1, 5], atol=1e-5)  # the second row's last real token
    values.sum().backward()  # the value loss reaches the policy's trunk and the head
    assert critic.value_head.weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.trunk.parameters())


def test_shared_critic_refuses_lora_adapters(tiny_cfg):
    cfg = tiny_cfg("ppo-kl", steps=1)
    cfg.model.critic, cfg.model.critic_lora = "shared", True
    with pytest.raises(GilbenchError, match="no trunk of its own"):
        run(cfg, log=lambda s: None)
