"""The small supervised loop the SFT and reward-model stages share: shuffled minibatches, AdamW, clipping."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from gilbench import tracking


def fit(
    model,
    items: Sequence,
    batch_loss: Callable,
    cfg,
    accelerator,
    seed: int,
    desc: str,
    split: Callable[[list], list[tuple[list, float]]] | None = None,
):
    """``cfg.epochs`` passes over ``items`` in ``cfg.batch_size`` batches; ``batch_loss(model, batch)`` is
    minimised with AdamW at ``cfg.lr``. ``split(batch)``, if given, cuts a batch into micro-batches with weights
    (``batch_loss`` of each, times its weight, sums to the batch's loss): each is forwarded and backpropagated on
    its own and the gradients add up before the step. Returns the (accelerate-prepared) model and the per-step
    losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    rng = random.Random(seed)
    losses: list[float] = []
    stage = {"reward model": "rm"}.get(desc, desc)
    tracker = tracking.open_stage(stage)
    bar = tqdm(total=cfg.epochs * ((len(items) + cfg.batch_size - 1) // cfg.batch_size), desc=desc, dynamic_ncols=True)
    for _ in range(cfg.epochs):
        order = list(range(len(items)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            batch = [items[i] for i in order[start : start + cfg.batch_size]]
            loss = backward_batch(model, batch, batch_loss, accelerator, split)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            tracker.log({f"{stage}/loss": loss}, len(losses))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    tracker.close()
    return model, losses


def backward_batch(model, batch: list, batch_loss: Callable, accelerator, split=None) -> float:
    """Backpropagate one batch's loss, part by part when ``split`` cuts it (see ``fit``); returns the batch's loss."""
    loss = 0.0
    for part, weight in split(batch) if split else [(batch, 1.0)]:
        part_loss = batch_loss(model, part)
        if weight != 1.0:
            part_loss = part_loss * weight
        accelerator.backward(part_loss)
        loss += part_loss.item()
    return loss


def start_end(losses: list[float]) -> tuple[float, float]:
    """Mean loss over the first and the last tenth of training."""
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k
