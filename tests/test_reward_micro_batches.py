"""Reward-model micro-batches (``rm.micro_batch_size``): pairs grouped by length, weights that add up to the batch,
the same Bradley-Terry gradient as one forward of the whole batch, the same steps in the shared ``fit`` loop, and
cache keys that stay those of earlier versions when the option is off."""

from dataclasses import replace

import pytest
import torch
from test_reward_pooling import tiny_bert

from gilbench.config import RewardModelConfig, RunConfig
from gilbench.data.types import PreferencePair
from gilbench.models.reward import RewardScorer
from gilbench.stages.fit import fit
from gilbench.stages.reward import bradley_terry_loss, by_length


def pair(prompt: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


PAIRS = [
    pair("the reply is a question here", "very good", "bad"),
    pair("good", "fine", "awful"),
    pair("a question", "the reply is very fine here good", "the reply is bad"),
    pair("here", "good", "very awful"),
    pair("the question is here", "fine reply", "awful reply is here"),
]


def test_pairs_go_in_length_order_weighted_by_their_share_of_the_batch():
    parts = by_length(PAIRS, 2)
    assert [len(p) for p, _ in parts] == [2, 2, 1]
    assert [w for _, w in parts] == [0.4, 0.4, 0.2]
    flat = [p for part, _ in parts for p in part]
    assert sorted(map(id, flat)) == sorted(map(id, PAIRS))  # every pair once, chosen and rejected together
    lengths = [len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in flat]
    assert lengths == sorted(lengths)
    # off, or a micro-batch as large as the batch: the batch as given, in one forward (as before the option)
    assert by_length(PAIRS, 0) == [(PAIRS, 1.0)] and by_length(PAIRS, 5) == [(PAIRS, 1.0)]


def test_micro_batches_give_the_whole_batchs_loss_and_gradient():
    from transformers import BertConfig, BertForSequenceClassification

    model, tok = tiny_bert(seed=1)
    config = BertConfig(**{**model.config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    torch.manual_seed(1)
    model = BertForSequenceClassification(config).train()  # training mode, no dropout: both ways are deterministic
    scorer = RewardScorer(model, tok, max_length=32)

    def grads_after(parts):
        model.zero_grad()
        total = 0.0
        for part, weight in parts:
            loss = bradley_terry_loss(scorer, model, part) * weight
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in model.parameters()]

    whole_loss, whole = grads_after(by_length(PAIRS, 0))
    micro_loss, micro = grads_after(by_length(PAIRS, 2))
    assert micro_loss == pytest.approx(whole_loss, rel=1e-6)
    for a, b in zip(whole, micro):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_fit_with_micro_batches_takes_the_same_steps():
    """The shared loop: a least-squares line fitted in batches of 6, whole or cut into weighted parts of 4 and 2."""
    from accelerate import Accelerator

    xs = [(x / 10, 3 * x / 10 - 1) for x in range(30)]

    def batch_loss(model, batch):
        x = torch.tensor([[a] for a, _ in batch])
        y = torch.tensor([b for _, b in batch])
        return ((model(x)[:, 0] - y) ** 2).mean()

    def trained(split):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
        cfg = RewardModelConfig(epochs=20, lr=0.2, batch_size=6)
        model, losses = fit(model, xs, batch_loss, cfg, Accelerator(cpu=True), 0, "line", split=split)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), losses

    params, losses = trained(None)
    cut = lambda batch: [(batch[:4], len(batch[:4]) / len(batch)), (batch[4:], len(batch[4:]) / len(batch))]  # noqa: E731
    params_cut, losses_cut = trained(cut)
    assert len(losses) == len(losses_cut) == 100
    assert losses_cut == pytest.approx(losses, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(params_cut, params, atol=1e-5, rtol=1e-5)
    assert sum(losses[-5:]) < sum(losses[:5]) / 10  # it did learn the line


def test_micro_batches_are_part_of_the_rm_cache_key_when_on():
    from gilbench.stages.cache import rm_key

    cfg = RunConfig()  # off by default: the key of earlier versions (tests/test_reward_pooling.py)
    assert cfg.rm.micro_batch_size == 0
    assert rm_key(replace(cfg, rm=replace(cfg.rm, micro_batch_size=4))) != rm_key(cfg)


def test_a_negative_micro_batch_is_refused_at_load():
    from gilbench.errors import GilbenchError
    from gilbench.resolve import resolve_run

    with pytest.raises(GilbenchError, match="rm.micro_batch_size"):
        resolve_run("ppo-kl", "chitchat", ["rm.micro_batch_size=-1"])
