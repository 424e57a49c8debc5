"""Mixed precision and the fused log-prob kernels: exact against the naive computation, bf16 within stated tolerances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gilbench.errors import GilbenchError
from gilbench.models import precision
from gilbench.models.precision import freeze_in_half, resolve_mixed_precision
from gilbench.pipeline import run
from gilbench.rl import trainer as trainer_module
from gilbench.rl.core import entropy_from_logits, logprobs_from_logits, token_logprobs, token_logprobs_and_entropy


@pytest.fixture
def tiny():
    from gilbench.models.presets import load_causal_lm

    return load_causal_lm("tiny")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equal_the_naive_log_softmax_and_its_gradient(temperature):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 11, generator=gen) * 4).requires_grad_()
    tokens = torch.randint(0, 11, (3, 5), generator=gen)
    weights = torch.randn(3, 5, generator=gen)
    naive = logprobs_from_logits(logits / temperature, tokens)
    (naive_grad,) = torch.autograd.grad((naive * weights).sum(), logits)
    fused = token_logprobs(logits, tokens, temperature, chunk=4)  # chunks that do not divide the 15 rows
    (fused_grad,) = torch.autograd.grad((fused * weights).sum(), logits)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, naive, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused_grad, naive_grad, rtol=1e-6, atol=1e-6)


def test_token_logprobs_of_bf16_logits_are_float32_and_close():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 50, generator=gen) * 3
    tokens = torch.randint(0, 50, (2, 4), generator=gen)
    half = logits.bfloat16().requires_grad_()
    out = token_logprobs(half, tokens)
    assert out.dtype == torch.float32
    # exact log-softmax of the rounded logits: only the bf16 rounding of the inputs remains
    torch.testing.assert_close(out, logprobs_from_logits(half.detach().float(), tokens), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert half.grad.dtype == torch.bfloat16


def test_fused_logprobs_and_entropy_equal_the_naive_ones():
    gen = torch.Generator().manual_seed(2)
    logits, tokens = torch.randn(2, 7, 13, generator=gen), torch.randint(0, 13, (2, 7), generator=gen)
    logits[0, 0, 3] = float("-inf")  # a token of probability 0 adds nothing to the entropy
    logp, entropy = token_logprobs_and_entropy(logits, tokens, 0.5, chunk=3)
    torch.testing.assert_close(logp, logprobs_from_logits(logits / 0.5, tokens))
    torch.testing.assert_close(entropy, entropy_from_logits(logits / 0.5))
    assert torch.isfinite(entropy).all()


def test_mixed_precision_resolves_from_the_hardware(monkeypatch):
    assert resolve_mixed_precision("no", "cpu") == resolve_mixed_precision("fp32", "cpu") == "no"
    assert resolve_mixed_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_mixed_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_mixed_precision("auto", "cpu") == "no"
    with pytest.raises(GilbenchError, match="mixed_precision must be one of"):
        resolve_mixed_precision("fp8", "cpu")


def test_a_frozen_half_model_computes_what_autocast_computes(tiny):
    model, tok = tiny
    ids = tok(["hello there, how are you"], return_tensors="pt")["input_ids"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(input_ids=ids).logits
        frozen = freeze_in_half(model, torch.bfloat16)
        got = frozen(input_ids=ids).logits
    assert not any(p.requires_grad for p in frozen.parameters())
    assert frozen.get_input_embeddings().weight.dtype == torch.float32
    assert torch.equal(got, expected)


def _rows(summary) -> list[dict]:
    return [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]


# bf16 tolerances of a step's metrics against fp32 on the same samples (tiny, 2 steps, 2 PPO epochs)
# (observed differences are ~5x smaller: KL 7e-4, entropy 3e-6, policy loss 5e-5, ratio 4e-5)
BF16_TOLERANCE = {
    "objective/kl": 0.005,
    "objective/entropy": 0.01,
    "loss/policy": 0.002,
    "loss/value": 0.001,
    "policy/approx_kl": 1e-4,
    "policy/ratio_mean": 1e-3,
    "val/explained_var": 0.01,
}


def test_a_bf16_step_stays_within_tolerance_of_fp32(tiny_cfg, tmp_path, monkeypatch):
    """Same seed, same sampled responses (recorded in fp32, replayed in bf16): scores are equal, KL at step 1 is
    exactly 0 in both (the half-precision reference computes what autocast on the policy computes), and the
    other metrics stay within BF16_TOLERANCE (absolute)."""
    samples = []
    original = trainer_module.sample

    def record(*args, **kwargs):
        samples.append(original(*args, **kwargs))
        return samples[-1]

    monkeypatch.setattr(trainer_module, "sample", record)
    fp32 = tiny_cfg("ppo-kl", steps=2)
    fp32.mixed_precision = "no"
    expected = _rows(run(fp32, log=lambda s: None))
    replay = iter(list(samples))
    monkeypatch.setattr(trainer_module, "sample", lambda *a, **k: next(replay))
    bf16 = tiny_cfg("ppo-kl", steps=2)
    bf16.mixed_precision, bf16.output_dir = "bf16", str(tmp_path / "bf16")
    got = _rows(run(bf16, log=lambda s: None))
    assert got[0]["objective/kl"] == 0.0 and expected[0]["objective/kl"] == 0.0
    for a, b in zip(got, expected):
        assert a["objective/score"] == pytest.approx(b["objective/score"], abs=1e-6)
        for name, tol in BF16_TOLERANCE.items():
            assert a[name] == pytest.approx(b[name], abs=tol), name


def test_a_lora_critic_trains_only_its_adapters_and_value_head(tiny):
    from gilbench.models.heads import ValueModel

    model, tok = tiny
    critic = ValueModel.from_causal_lm(model).train_adapters_only(r=4, alpha=8, frozen_dtype=torch.bfloat16)
    trained = {name for name, p in critic.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or name.startswith("value_head.") for name in trained)
    assert all(p.dtype == torch.float32 for p in critic.parameters() if p.requires_grad)
    enc = tok(["a b c"], return_tensors="pt")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values, _ = critic(enc["input_ids"], enc["attention_mask"])
    assert values.dtype == torch.float32 and torch.all(values == 0)  # zero-initialised head, as a full critic


def test_gradient_checkpointing_is_exact_and_a_lean_run_completes(tiny_cfg, tmp_path):
    """Recomputing activations gives the same numbers; the lean layout (LoRA critic, checkpointing) runs end to end."""
    plain = _rows(run(tiny_cfg("ppo-kl", steps=1), log=lambda s: None))
    cfg = tiny_cfg("ppo-kl", steps=1)
    cfg.model.gradient_checkpointing, cfg.output_dir = True, str(tmp_path / "gc")
    recomputed = _rows(run(cfg, log=lambda s: None))
    drop = ("time/", "throughput/")
    assert [{k: v for k, v in r.items() if not k.startswith(drop)} for r in recomputed] == [
        {k: v for k, v in r.items() if not k.startswith(drop)} for r in plain
    ]
    lean = tiny_cfg("gil", steps=2)
    lean.model.gradient_checkpointing, lean.model.critic_lora, lean.model.lora_r = True, True, 4
    lean.output_dir = str(tmp_path / "lean")
    rows = _rows(run(lean, log=lambda s: None))
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss/value"] == r["loss/value"] for r in rows)


def test_token_logprobs_backward_leaves_float32_logits_untouched():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 11, generator=gen).requires_grad_()
    tokens = torch.randint(0, 11, (3, 5), generator=gen)
    before = logits.detach().clone()
    token_logprobs(logits, tokens, 0.7, chunk=4).sum().backward()
    assert torch.equal(logits.detach(), before)
    expected = torch.autograd.grad(logprobs_from_logits(before.requires_grad_() / 0.7, tokens).sum(), before)[0]
    torch.testing.assert_close(logits.grad, expected)


def test_bf16_on_a_cpu_that_emulates_it_is_announced(tiny_cfg, tmp_path, monkeypatch):
    """Forced bf16 where the CPU has no bf16 matmul instructions runs (the tests above need it), but 100-500x
    slower than float32 at SmolLM2 sizes: the run says so in its first lines."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    cfg = tiny_cfg("ppo", steps=1)
    cfg.mixed_precision, cfg.device = "bf16", "cpu"  # a CPU check, also where GILBENCH_TEST_DEVICE=cuda
    lines = []
    run(cfg, log=lines.append)
    assert any("warning: mixed_precision=bf16" in line and "emulated" in line for line in lines[:3])
    cfg = tiny_cfg("ppo", steps=1)
    cfg.mixed_precision, cfg.device, cfg.output_dir = "no", "cpu", str(tmp_path / "fp32")
    lines.clear()
    run(cfg, log=lines.append)
    assert not any("emulated" in line for line in lines)
