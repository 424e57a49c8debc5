"""Reward model: Bradley-Terry on preference pairs, with held-out pairwise accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gilbench.data.types import PreferencePair
from gilbench.models.reward import RewardScorer
from gilbench.stages.fit import fit, start_end


def pairwise_accuracy(scorer: RewardScorer, pairs: list[PreferencePair]) -> float:
    if not pairs:
        return float("nan")
    prompts = [p.prompt for p in pairs]
    chosen = scorer.score(prompts, [p.chosen for p in pairs])
    rejected = scorer.score(prompts, [p.rejected for p in pairs])
    return ((chosen > rejected).float().mean()).item()


def pair_texts(batch: list[PreferencePair]) -> tuple[list[str], list[str]]:
    """(prompts, replies) of a batch as the reward model reads them: every chosen reply, then every rejected one."""
    return [p.prompt for p in batch] * 2, [p.chosen for p in batch] + [p.rejected for p in batch]


def bradley_terry_loss(scorer: RewardScorer, model, batch: list[PreferencePair]) -> torch.Tensor:
    scores = scorer.logits(*pair_texts(batch), model=model)
    chosen, rejected = scores.chunk(2)
    return -F.logsigmoid(chosen - rejected).mean()


def by_length(pairs: list[PreferencePair], size: int) -> list[tuple[list[PreferencePair], float]]:
    """Micro-batches of ``size`` pairs of similar text length (a pair's chosen and rejected reply stay together, so
    each micro-batch's loss is complete), weighted by their share of the batch: short pairs are not padded to the
    batch's longest, and memory holds ``size`` pairs' activations at a time. Same loss, fewer padded tokens."""
    if not size or size >= len(pairs):
        return [(pairs, 1.0)]
    ordered = sorted(pairs, key=lambda p: len(p.prompt) + max(len(p.chosen), len(p.rejected)))
    return [(ordered[k : k + size], min(size, len(pairs) - k) / len(pairs)) for k in range(0, len(pairs), size)]


def train_reward_model(
    scorer: RewardScorer, pairs: list[PreferencePair], val_pairs: list[PreferencePair], cfg, accelerator, seed: int
) -> dict:
    """Train ``scorer.model`` in place on -log sigmoid(r_chosen - r_rejected)."""
    stats = {
        "rm/val_accuracy_before": pairwise_accuracy(scorer, val_pairs),
        "rm/train_pairs": len(pairs),
        "rm/val_pairs": len(val_pairs),
    }
    model, losses = fit(
        scorer.model,
        pairs,
        lambda m, batch: bradley_terry_loss(scorer, m, batch),
        cfg,
        accelerator,
        seed,
        "reward model",
        split=lambda batch: by_length(batch, cfg.micro_batch_size),
    )
    scorer.model = accelerator.unwrap_model(model)
    scorer.model.eval()
    stats["rm/val_accuracy"] = pairwise_accuracy(scorer, val_pairs)
    stats["rm/train_accuracy"] = pairwise_accuracy(scorer, pairs[: len(val_pairs) or 256])
    stats["rm/loss_start"], stats["rm/loss_end"] = start_end(losses)
    return stats
