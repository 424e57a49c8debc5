"""Models: presets (named offline policy / reward models), loaders, LoRA, and the value / reward heads.

    from gilbench.models import load_causal_lm, load_sequence_classifier, ValueModel, sequence_scores

    policy, tokenizer = load_causal_lm("tiny")          # preset, local folder or hub id; pads LEFT
    reward, reward_tok = load_sequence_classifier("minilm")
    critic = ValueModel.from_causal_lm(policy)          # values [B, T] start at 0
    scores = sequence_scores(reward, ids, mask)         # [B], any padding side

Built-in presets: ``tiny``, ``smollm2-135m``, ``minilm`` (see ``gilbench.models.presets``); plugins add more
with ``@register_model(name)`` on a ``ModelPreset`` subclass.
"""

from gilbench.models.heads import ValueModel, last_token_index, position_ids_from_mask, sequence_scores
from gilbench.models.presets import (
    ModelPreset,
    apply_lora,
    cache_dir,
    get_preset,
    list_presets,
    load_causal_lm,
    load_sequence_classifier,
    tiny_tokenizer,
)

__all__ = [
    "ModelPreset",
    "ValueModel",
    "apply_lora",
    "cache_dir",
    "get_preset",
    "last_token_index",
    "list_presets",
    "load_causal_lm",
    "load_sequence_classifier",
    "position_ids_from_mask",
    "sequence_scores",
    "tiny_tokenizer",
]
