"""Supervised fine-tuning: causal-LM loss on the task's responses (prompt tokens are not trained on)."""

from __future__ import annotations

import torch

from gilbench.data.format import format_example
from gilbench.data.types import SFTExample
from gilbench.stages.fit import fit, start_end


def encode_sft(
    tokenizer, examples: list[SFTExample], prompt_format: str, max_length: int
) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) per example; the loss covers the tokens after the prompt."""
    out = []
    for ex in examples:
        head, tail = format_example(tokenizer, ex.prompt, ex.response, prompt_format)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
        # Keep the response: cut the prompt from the left (its end matters most), then the response's tail.
        tail_ids = tail_ids[:max_length]
        head_ids = (
            head_ids[max(0, len(head_ids) - (max_length - len(tail_ids))) :] if len(tail_ids) < max_length else []
        )
        if tail_ids:
            out.append((head_ids + tail_ids, len(head_ids)))
    return out


def lm_loss(model, batch: list[tuple[list[int], int]], pad_id: int, device) -> torch.Tensor:
    """Mean token cross-entropy on the response part of each (right-padded) sequence."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        attention[row, : len(ids)] = 1
    out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), labels=labels.to(device))
    return out.loss


def train_sft(model, tokenizer, examples: list[SFTExample], cfg, prompt_format: str, accelerator, seed: int) -> dict:
    """Fine-tune ``model`` in place; returns the loss at the start and the end."""
    encoded = encode_sft(tokenizer, examples, prompt_format, cfg.max_length)
    if not encoded:
        return {"sft/examples": 0}
    _, losses = fit(
        model,
        encoded,
        lambda m, batch: lm_loss(m, batch, tokenizer.pad_token_id, accelerator.device),
        cfg,
        accelerator,
        seed,
        "sft",
    )
    first, last = start_end(losses)
    return {"sft/examples": len(encoded), "sft/loss_start": first, "sft/loss_end": last, "sft/steps": len(losses)}
