"""Scoring (prompt, response) pairs with a reward model, whatever its tokenizer.

Responses are decoded to text and re-encoded with the reward model's own tokenizer, so a policy and a
reward model need not share a vocabulary (SmolLM2 policy, MiniLM reward model).

Pooling (how hidden states become one score) is recorded in the model's own config as ``reward_pooling``, so a
saved reward model scores the way it was trained wherever it is loaded: ``last`` (decoders: the last real
token), ``cls`` (encoders: the model's own CLS pooler and classifier) or ``mean`` (encoders: the mean of the
final hidden states over real tokens, then the classifier; what sentence encoders such as all-MiniLM-L6-v2
were trained to produce). ``auto`` is the architecture's own head (``cls`` / ``last``): how every reward model
scored before the option existed, and what one saved without the field still does."""

from __future__ import annotations

import torch

from gilbench.data.format import has_chat_template
from gilbench.errors import GilbenchError
from gilbench.models.heads import is_decoder, right_pad, sequence_scores, trunk_of

POOLINGS = ("auto", "cls", "mean", "last")


def reward_pooling(model) -> str:
    """The pooling ``model`` scores with: its recorded ``reward_pooling``, else ``last`` / ``cls`` (decoder / encoder)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "reward_pooling", None) or ("last" if is_decoder(base) else "cls")


def set_reward_pooling(model, pooling: str) -> str:
    """Record ``pooling`` (``auto``: ``last`` for decoders, ``cls`` for encoders) in ``model.config``, so it is
    saved with the weights; returns the resolved value."""
    decoder = is_decoder(model)
    if pooling == "auto":
        pooling = "last" if decoder else "cls"
    if pooling not in POOLINGS:
        raise GilbenchError(
            f"rm.pooling={pooling!r}: must be one of {', '.join(POOLINGS)}; set it with --set rm.pooling=auto"
        )
    if decoder != (pooling == "last"):
        kind = "decoder" if decoder else "encoder"
        allowed = "last" if decoder else "cls or mean"
        raise GilbenchError(
            f"rm.pooling={pooling} does not fit the {kind} reward model {type(model).__name__}; set --set rm.pooling={allowed} (or auto)"
        )
    if pooling == "mean" and not isinstance(getattr(model, "classifier", None), torch.nn.Linear):
        raise GilbenchError(
            f"rm.pooling=mean needs a BERT-style encoder whose classifier is one linear layer; {type(model).__name__} "
            "pools inside its head: set --set rm.pooling=cls (or auto)"
        )
    model.config.reward_pooling = pooling
    return pooling


def mean_pooled_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Encoder classifier score ``[B]`` from the mean of the final hidden states over real tokens (any padding)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    input_ids, attention_mask = right_pad(input_ids, attention_mask)
    hidden = trunk_of(base)(input_ids=input_ids, attention_mask=attention_mask)[0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    dropout = getattr(base, "dropout", None)
    if dropout is not None:  # the classifier's own dropout, as in the CLS path
        pooled = dropout(pooled)
    return base.classifier(pooled)[:, 0].float()


def reward_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar reward ``[B]`` (float32) with the model's recorded pooling (see the module doc)."""
    if reward_pooling(model) == "mean":
        return mean_pooled_scores(model, input_ids, attention_mask)
    return sequence_scores(model, input_ids, attention_mask)


def encode_for_reward(tokenizer, prompts: list[str], responses: list[str], max_length: int, device) -> dict:
    """Too-long inputs lose the start of the prompt, never the response the score is about."""
    tokenizer.truncation_side = "left"
    if has_chat_template(tokenizer):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, responses)
        ]
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt", add_special_tokens=False
        )
    else:  # encoders take the pair natively: [CLS] prompt [SEP] response [SEP]
        enc = tokenizer(
            prompts, responses, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
        )
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
        return reward_scores(model or self.model, enc["input_ids"], enc["attention_mask"])

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Scores in the order given. More than one batch is scored in batches of similar text length, so that short
        texts are not padded to a long one's length (half the tokens of a reward model's held-out pairs); one batch
        is scored as given (an RL rollout's scores do not depend on this)."""
        was_training = self.model.training
        self.model.eval()
        n = len(prompts)
        order = list(range(n))
        if n > self.batch_size:
            order.sort(key=lambda i: len(prompts[i]) + len(responses[i]))
        out = [
            self.logits([prompts[i] for i in idx], [responses[i] for i in idx])
            for idx in (order[k : k + self.batch_size] for k in range(0, n, self.batch_size))
        ]
        self.model.train(was_training)
        if not out:
            return torch.zeros(0)
        scores = torch.empty(n, dtype=torch.float32)
        scores[torch.tensor(order)] = torch.cat(out).float().cpu()
        return scores
