"""The sft and dpo baselines: the DPO loss by hand, response-only log-probs, and both methods end to end on
the toy task with the tiny model (they share one run store, so the SFT model and reward model are built once)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gilbench import registry
from gilbench.data.types import PreferencePair
from gilbench.methods.dpo import EncodedPair, dpo_loss, encode_pairs, sequence_logps
from gilbench.models.presets import load_causal_lm
from gilbench.pipeline import run


def test_dpo_loss_by_hand_on_two_pairs():
    # pair 1: r_w = 0.5 * (-1.0 + 1.5) = 0.25, r_l = 0.5 * (-3.0 + 2.5) = -0.25, margin  0.5  -> log(1 + e^-0.5)  = 0.4740770
    # pair 2: r_w = 0.5 * (-2.0 + 2.0) = 0.0,  r_l = 0.5 * (-1.0 + 1.5) =  0.25, margin -0.25 -> log(1 + e^0.25)  = 0.8259394
    losses, rw, rl = dpo_loss(
        torch.tensor([-1.0, -2.0]),
        torch.tensor([-3.0, -1.0]),
        torch.tensor([-1.5, -2.0]),
        torch.tensor([-2.5, -1.5]),
        beta=0.5,
    )
    assert torch.allclose(rw, torch.tensor([0.25, 0.0])) and torch.allclose(rl, torch.tensor([-0.25, 0.25]))
    assert torch.allclose(losses, torch.tensor([0.4740770, 0.8259394]), atol=1e-6)
    assert losses.mean().item() == pytest.approx(0.6500082, abs=1e-6)
    # equal log-ratios give log 2, whatever beta
    same, _, _ = dpo_loss(
        torch.tensor([-4.0]), torch.tensor([-7.0]), torch.tensor([-4.0]), torch.tensor([-7.0]), beta=3.0
    )
    assert same.item() == pytest.approx(math.log(2), abs=1e-7)


def test_sequence_logps_sum_response_tokens_only():
    model, tokenizer = load_causal_lm("tiny")
    batch = [
        EncodedPair([72, 105, 33], [10, 11, 12, 256], [20, 256]),
        EncodedPair([65, 66, 67, 68, 69, 70], [30, 256], [40, 41, 42, 43, 256]),
    ]
    with torch.no_grad():
        chosen, rejected = sequence_logps(model, batch, tokenizer.pad_token_id, "cpu")

        def by_hand(prompt, response):  # one unpadded sequence: the logit at position t predicts token t+1
            ids = torch.tensor([prompt + response])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            return sum(logp[len(prompt) - 1 + j, tok].item() for j, tok in enumerate(response))

    for i, pair in enumerate(batch):
        assert chosen[i].item() == pytest.approx(by_hand(pair.prompt, pair.chosen), abs=1e-4)
        assert rejected[i].item() == pytest.approx(by_hand(pair.prompt, pair.rejected), abs=1e-4)


def test_encode_pairs_cuts_the_prompt_from_the_left_and_shares_it():
    _, tokenizer = load_causal_lm("tiny")  # byte-level: one token per character
    pairs = [PreferencePair("x" * 50 + "END?", "yes please", "no")]
    enc = encode_pairs(tokenizer, pairs, "plain", max_length=30)[0]
    assert len(enc.prompt) + len(enc.chosen) <= 30 and len(enc.prompt) + len(enc.rejected) <= 30
    assert tokenizer.decode(enc.prompt).endswith("xEND?")  # the end of the prompt survives
    assert (
        tokenizer.decode(enc.chosen) == " yes please<|endoftext|>"
        and tokenizer.decode(enc.rejected) == " no<|endoftext|>"
    )


# ---------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("dpo_sft_runs")


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def in_store(cfg, store):
    cfg.output_dir = str(store / "runs")  # both runs share cache/sft and cache/rm
    return cfg


def test_sft_baseline_returns_the_sft_model(store, tiny_cfg):
    assert registry.methods.get("sft").needs_reward_model
    summary = run(in_store(tiny_cfg("sft"), store))
    out = store / "runs" / "toy" / "sft" / "seed0"
    sft_dirs = list((store / "runs" / "cache" / "sft").iterdir())
    assert len(sft_dirs) == 1
    policy, reference = weights(out / "policy"), weights(sft_dirs[0])
    assert policy.keys() == reference.keys() and all(torch.equal(policy[k], reference[k]) for k in policy)
    assert set(summary["eval"]) == {"id:test", "ood:space"} and summary["training"] == {}
    assert json.loads((out / "method_summary.json").read_text())["sft/path"] == str(sft_dirs[0])


def test_dpo_trains_on_the_pairs_and_the_margin_grows(store, tiny_cfg):
    cfg = in_store(tiny_cfg("dpo"), store)
    cfg.method_args = {"lr": 1e-3, "epochs": 2, "batch_size": 8, "micro_batch_size": 4, "max_pairs": 32, "beta": 0.1}
    summary = run(cfg)
    out = store / "runs" / "toy" / "dpo" / "seed0"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))  # 32 pairs / 8 per step x 2 epochs
    first, last = rows[0], rows[-1]
    assert first["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5) and first["dpo/reward_margin"] == pytest.approx(
        0.0, abs=1e-5
    )
    assert (
        last["loss/dpo"] < first["loss/dpo"] - 0.05 and last["dpo/reward_margin"] > 0.5 and last["dpo/accuracy"] > 0.5
    )
    assert all(
        k in first
        for k in ("dpo/reward_chosen", "dpo/reward_rejected", "dpo/logp_chosen", "dpo/logp_rejected", "time/step")
    )
    # the SFT model and the reward model came from the cache the sft run filled; the policy moved away from it
    assert len(list((store / "runs" / "cache" / "sft").iterdir())) == 1
    sft_dir = next((store / "runs" / "cache" / "sft").iterdir())
    policy, reference = weights(out / "policy"), weights(sft_dir)
    assert any(not torch.equal(policy[k], reference[k]) for k in policy)
    method_summary = json.loads((out / "method_summary.json").read_text())
    assert method_summary["dpo/pairs"] == 32 and method_summary["dpo/loss_last"] < method_summary["dpo/loss_first"]
    assert set(summary["eval"]) == {"id:test", "ood:space"}


def test_dpo_trains_on_the_reward_models_pairs_by_default(tmp_path, tiny_cfg):
    # equal budgets: without max_pairs, DPO learns from the rm.max_pairs pairs the reward model was fitted on
    cfg = in_store(tiny_cfg("dpo"), tmp_path)
    cfg.rm.max_pairs = 24
    cfg.method_args = {"epochs": 1, "batch_size": 8, "micro_batch_size": 4}
    summary = run(cfg)
    method_summary = json.loads((tmp_path / "runs" / "toy" / "dpo" / "seed0" / "method_summary.json").read_text())
    assert method_summary["dpo/pairs"] == 24 == summary["reward_model"]["rm/train_pairs"]
