"""Scoring (prompt, response) pairs with a reward model, whatever its tokenizer.

Responses are decoded to text and re-encoded with the reward model's own tokenizer, so a policy and a
reward model need not share a vocabulary (SmolLM2 policy, MiniLM reward model)."""

from __future__ import annotations

import torch

from gilbench.data.format import has_chat_template
from gilbench.models.heads import sequence_scores


def encode_for_reward(tokenizer, prompts: list[str], responses: list[str], max_length: int, device) -> dict:
    """Too-long inputs lose the start of the prompt, never the response the score is about."""
    tokenizer.truncation_side = "left"
    if has_chat_template(tokenizer):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
            for p, r in zip(prompts, responses)
        ]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt", add_special_tokens=False)
    else:  # encoders take the pair natively: [CLS] prompt [SEP] response [SEP]
        enc = tokenizer(prompts, responses, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class RewardScorer:
    """A sequence-classifier reward model with its tokenizer: ``score(prompts, responses) -> Tensor[B]``."""

    def __init__(self, model, tokenizer, max_length: int = 256, batch_size: int = 32):
        self.model, self.tokenizer = model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    @property
    def device(self):
        return next(self.model.parameters()).device

    def logits(self, prompts: list[str], responses: list[str], model=None) -> torch.Tensor:
        """Differentiable scores (for training; ``model``: a wrapped copy of ``self.model``, e.g. by accelerate)."""
        enc = encode_for_reward(self.tokenizer, prompts, responses, self.max_length, self.device)
        return sequence_scores(model or self.model, enc["input_ids"], enc["attention_mask"])

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        out = [self.logits(prompts[i : i + self.batch_size], responses[i : i + self.batch_size]) for i in range(0, len(prompts), self.batch_size)]
        self.model.train(was_training)
        return torch.cat(out).cpu() if out else torch.zeros(0)
