"""A prompt prefix shared by every row of a batch, run once instead of once per row.

Chat prompts open with the same tokens: SmolLM2's template puts its default system message and the user turn's
header (24 tokens) before every question, a quarter to a third of a chitchat [prompt; response] row. ``run_on``
finds the longest prefix all rows of a batch share, runs it alone (one row), and runs the rows without it; inside
the attention every row then reads the prefix's keys and values before its own. Causal attention makes this the same
computation: the prefix never sees what follows it, and the rows' positions continue from it. Only float
rounding differs (the attention sums in another order). Gradients reach the prefix through its keys and values,
summed over the rows, so a training forward may share it too. The rows also lose the left-pad columns none of them
uses: an update's minibatch keeps the width of the rollout batch it came from, padded to that batch's longest prompt.

It works through a registered attention function (``ATTENTION``) that wraps the model's own eager kernel, so a
model opts in by using that attention (``model.share_prompt_prefix``, gilbench/rl/model_setup.py); without a
prefix to share it is plain eager attention.
"""

from __future__ import annotations

import sys

import torch

from gilbench.errors import GilbenchError
from gilbench.models.heads import position_ids_from_mask

ATTENTION = "gilbench_shared_prefix"
MIN_PREFIX = 4  # shorter shared openings are not worth a second forward


class PrefixStore(dict):
    """layer index -> the prefix's (keys, values) [1, heads, P, head_dim], written by the prefix's forward."""

    def __init__(self, length: int):
        super().__init__()
        self.length = length
        self.read = False  # set by the rows' forward: a model that drops the attention's arguments never reads it

    def check_read(self, model) -> None:
        if not self.read:
            raise GilbenchError(
                f"{type(model).__name__} did not pass the shared prompt prefix to its attention; "
                "set --set model.share_prompt_prefix=false"
            )


def register() -> None:
    """Make ``ATTENTION`` a valid attn_implementation (idempotent): our attention with eager's 4D mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)


_PROBED: dict[type, bool] = {}  # model class -> probe result: it depends on the class and the transformers release


def supports(model) -> bool:
    """Whether ``model``'s attention layers have an eager kernel this module can wrap (Llama, GPT-2, ...) and its
    forward passes extra arguments down to them (some transformers releases drop them for some models, e.g. 5.0's
    GPT-2 LM head): a two-token probe forward must reach the attention, once per model class."""
    if type(model) not in _PROBED:
        _PROBED[type(model)] = _probe(model)
    return _PROBED[type(model)]


def _probe(model) -> bool:
    if not (getattr(model, "_supports_attention_backend", False) and _has_eager_kernel(model)):
        return False
    register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    store = PrefixStore(2)
    ids = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), prefix_capture=store)
    model.set_attn_implementation(previous)
    return bool(store)


def _has_eager_kernel(model) -> bool:
    return hasattr(sys.modules.get(type(model).__module__), "eager_attention_forward")


def _eager_kernel(module):
    return sys.modules[type(module).__module__].eager_attention_forward


def _attention(module, query, key, value, attention_mask, prefix_capture=None, shared_prefix=None, **kwargs):
    """Eager attention; in the prefix's forward it also stores its keys and values (``prefix_capture``), in the
    rows' forward it puts the stored ones before every row's (``shared_prefix``)."""
    if prefix_capture is not None:
        # setdefault: a gradient-checkpointing replay of the prefix's layer must not replace what the rows used
        prefix_capture.setdefault(module.layer_idx, (key, value))
    elif shared_prefix is not None:
        prefix_key, prefix_value = shared_prefix[module.layer_idx]
        shared_prefix.read = True
        rows = key.shape[0]
        key = torch.cat([prefix_key.expand(rows, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix_value.expand(rows, -1, -1, -1), value], dim=2)
        if attention_mask is not None:  # eager's additive mask [B, 1, q, kv]: 0 = attend, for every prefix column
            open_columns = attention_mask.new_zeros(*attention_mask.shape[:-1], shared_prefix.length)
            attention_mask = torch.cat([open_columns, attention_mask], dim=-1)
    return _eager_kernel(module)(module, query, key, value, attention_mask, **kwargs)


def uses_shared_prefix(model) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == ATTENTION


def common_prefix_length(query: torch.Tensor, query_mask: torch.Tensor) -> int:
    """Tokens every left-padded prompt starts with, leaving each at least its last token of its own (the state a
    critic may read at the end of the prompt stays in the rows' forward)."""
    lengths = query_mask.sum(dim=1)
    longest = int(lengths.min()) - 1
    if longest < MIN_PREFIX or len(query) < 2:
        return 0
    starts = query.shape[1] - lengths
    aligned = query.gather(1, starts[:, None] + torch.arange(longest, device=query.device))
    length = int((aligned == aligned[:1]).all(dim=0).long().cumprod(0).sum())
    return length if length >= MIN_PREFIX else 0


def drop_prefix(query: torch.Tensor, query_mask: torch.Tensor, length: int):
    """The prompts without their first ``length`` real tokens, still left-padded (every row loses as many), and
    without the pad columns no row uses (a minibatch's rows keep their batch's width)."""
    pads = (query.shape[1] - query_mask.sum(dim=1))[:, None]
    unused = int(pads.min())
    columns = torch.arange(query.shape[1] - length - unused, device=query.device)[None, :]
    index = unused + columns + length * (columns >= pads - unused)
    return query.gather(1, index), query_mask.gather(1, index)


def split_prefix(model, query, query_mask, **prefix_kwargs):
    """For a model with the shared-prefix attention: run the opening the prompts share through it (with
    ``prefix_kwargs``), if there is one, and cut it and the unused pad columns off the prompts; returns the prompts,
    the opening's length (0: nothing shared) and the keyword arguments that give it to the rows' forwards."""
    if not uses_shared_prefix(model):
        return query, query_mask, 0, {}
    length = common_prefix_length(query, query_mask)
    shared = {}
    if length:
        store = PrefixStore(length)
        start = int(query.shape[1] - query_mask[0].sum())
        prefix = query[:1, start : start + length]
        positions = torch.arange(length, device=query.device)[None]
        model(
            input_ids=prefix,
            attention_mask=torch.ones_like(prefix),
            position_ids=positions,
            prefix_capture=store,
            **prefix_kwargs,
        )
        shared = {"shared_prefix": store}
    query, query_mask = drop_prefix(query, query_mask, length)
    return query, query_mask, length, shared


def run_on(model, query, query_mask, response, response_mask, **kwargs):
    """``model`` over the rows [query; response] (query left-padded); returns its output and the query length
    that the output's positions follow: ``query``'s, or shorter by the prefix when one was shared."""
    head = {"logits_to_keep": 1} if "logits_to_keep" in kwargs else {}  # a causal LM: its head on one position
    query, query_mask, length, shared = split_prefix(model, query, query_mask, **head)
    ids, mask, positions = full_inputs(query, query_mask, response, response_mask, offset=length)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs, **shared)
    if shared:
        shared["shared_prefix"].check_read(model)
    return out, query.shape[1]


def full_inputs(query, query_mask, response, response_mask, offset: int = 0):
    """Ids, mask and positions of the rows [query; response]; real tokens' positions start at ``offset``."""
    mask = torch.cat([query_mask, response_mask], dim=1)
    return torch.cat([query, response], dim=1), mask, positions_after(mask, offset)


def positions_after(mask: torch.Tensor, offset: int) -> torch.Tensor:
    """Positions of left-padded rows whose first real token follows ``offset`` shared ones: left pads keep 0, a
    padded tail goes on from its row's last token (``position_ids_from_mask`` shifted)."""
    started = mask.cumsum(dim=1) > 0
    return position_ids_from_mask(mask) + offset * started
