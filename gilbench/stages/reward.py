"""Reward model: Bradley-Terry on preference pairs, with held-out pairwise accuracy."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gilbench.data.types import PreferencePair
from gilbench.models.reward import RewardScorer


def pairwise_accuracy(scorer: RewardScorer, pairs: list[PreferencePair]) -> float:
    if not pairs:
        return float("nan")
    prompts = [p.prompt for p in pairs]
    chosen = scorer.score(prompts, [p.chosen for p in pairs])
    rejected = scorer.score(prompts, [p.rejected for p in pairs])
    return ((chosen > rejected).float().mean()).item()


def train_reward_model(scorer: RewardScorer, pairs: list[PreferencePair], val_pairs: list[PreferencePair], cfg, accelerator, seed: int) -> dict:
    """Train ``scorer.model`` in place on -log sigmoid(r_chosen - r_rejected)."""
    stats = {"rm/val_accuracy_before": pairwise_accuracy(scorer, val_pairs), "rm/train_pairs": len(pairs), "rm/val_pairs": len(val_pairs)}
    optimizer = torch.optim.AdamW(scorer.model.parameters(), lr=cfg.lr)
    scorer.model, optimizer = accelerator.prepare(scorer.model, optimizer)
    scorer.model.train()
    rng = random.Random(seed)
    losses = []
    steps = cfg.epochs * ((len(pairs) + cfg.batch_size - 1) // cfg.batch_size)
    bar = tqdm(total=steps, desc="reward model", dynamic_ncols=True)
    for _ in range(cfg.epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            batch = [pairs[i] for i in order[start : start + cfg.batch_size]]
            prompts = [p.prompt for p in batch] * 2
            scores = scorer.logits(prompts, [p.chosen for p in batch] + [p.rejected for p in batch])
            chosen, rejected = scores.chunk(2)
            loss = -F.logsigmoid(chosen - rejected).mean()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(scorer.model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    scorer.model = accelerator.unwrap_model(scorer.model)
    scorer.model.eval()
    stats["rm/val_accuracy"] = pairwise_accuracy(scorer, val_pairs)
    stats["rm/train_accuracy"] = pairwise_accuracy(scorer, pairs[: len(val_pairs) or 256])
    k = max(1, len(losses) // 10)
    stats.update({"rm/loss_start": sum(losses[:k]) / k, "rm/loss_end": sum(losses[-k:]) / k})
    return stats
