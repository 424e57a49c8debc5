"""Value model (critic) and reward scoring helpers.

Batches are usually LEFT-padded (see ``gilbench.models.presets``). Every function here takes the attention
mask and derives positions from it, so a sequence gets the same values / score whether it is padded or not.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from gilbench.errors import GilbenchError


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only: ``cumsum(mask) - 1``, clamped at 0 (pads get 0).

    With left padding the first real token of every row gets position 0, as if the row were unpadded.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _unwrap(model) -> nn.Module:
    """A plain transformers model: a peft-wrapped one is deep-copied with its adapters merged."""
    if hasattr(model, "merge_and_unload"):  # peft.PeftModel
        return copy.deepcopy(model).merge_and_unload()
    return copy.deepcopy(model)


def trunk_of(model) -> nn.Module:
    """The transformer body under the model's ``base_model_prefix``, without its LM / classification head."""
    prefix = getattr(model, "base_model_prefix", "")
    trunk = getattr(model, prefix, None) if prefix else None
    if trunk is None:
        raise GilbenchError(f"{type(model).__name__} has no transformer trunk under base_model_prefix '{prefix}'")
    return trunk


def is_decoder(model) -> bool:
    """True for decoder-only (causal) models; BERT-style encoders return False."""
    config = model.config
    return bool(getattr(config, "is_decoder", False)) or config.model_type in _decoder_types()


@functools.cache
def _decoder_types() -> frozenset[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES as masked

    return frozenset(causal) - frozenset(masked)


def zero_value_head(hidden_size: int) -> nn.Linear:
    """A linear value head whose every value starts at exactly 0, so the first advantages are the plain (whitened)
    returns instead of noise from a random head on large hidden states, and the first value-loss steps do not push
    big random gradients into a pretrained trunk. The head itself learns from step one (its weight gradient is the
    hidden state); the trunk starts learning once the head is non-zero."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def head_values(head: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """One float32 value per token: the head runs outside autocast (one output per token costs nothing)."""
    with torch.autocast(hidden.device.type, enabled=False):
        return head(hidden.to(head.weight.dtype)).squeeze(-1).float()


class ValueModel(nn.Module):
    """A transformer trunk plus a linear value head: one value per token.

    ``forward`` returns ``(values [B, T] float32, hidden [B, T, H])``; ``hidden`` are the trunk's final hidden
    states, for extra heads (e.g. GIL's group head). Build one with ``from_causal_lm`` (the policy's trunk,
    without its LM head) or ``from_sequence_classifier`` (the reward model's trunk, without its score head).
    Both deep-copy the trunk, so training the critic never changes the policy or the reward model.
    """

    def __init__(self, trunk: nn.Module, hidden_size: int | None = None, decoder: bool = True):
        super().__init__()
        self.trunk = trunk
        self.hidden_size = hidden_size or trunk.config.hidden_size
        self._decoder = decoder  # decoders get use_cache=False; encoders (BERT) take no such argument
        self.value_head = zero_value_head(self.hidden_size)

    shares_policy_trunk = False

    @property
    def config(self):
        return self.trunk.config

    @classmethod
    def from_causal_lm(cls, model) -> ValueModel:
        """Critic from a copy of a causal LM's base model (the LM head is dropped, never computed)."""
        plain = _unwrap(model)
        return cls._from_trunk(trunk_of(plain), decoder=True)

    @classmethod
    def from_sequence_classifier(cls, model) -> ValueModel:
        """Critic from a copy of a sequence classifier's trunk (its score head is dropped)."""
        plain = _unwrap(model)
        return cls._from_trunk(trunk_of(plain), decoder=is_decoder(plain))

    @classmethod
    def _from_trunk(cls, trunk: nn.Module, decoder: bool) -> ValueModel:
        value = cls(trunk, trunk.config.hidden_size, decoder=decoder)
        return value.to(device=next(trunk.parameters()).device)  # the head stays float32 (see forward)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.trunk.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids, attention_mask, position_ids=None, **kwargs):
        """``kwargs`` reach the attention layers (a shared prompt prefix, gilbench.models.shared_prefix)."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        if self._decoder:
            kwargs["use_cache"] = False
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        hidden = out[0]
        return head_values(self.value_head, hidden), hidden

    def train_adapters_only(self, r: int, alpha: int, frozen_dtype: torch.dtype | None = None) -> ValueModel:
        """LoRA adapters on the trunk's linear layers; the trunk's own weights are frozen (and held in
        ``frozen_dtype`` if given, see ``gilbench.models.precision``). The value head stays fully trained."""
        from gilbench.errors import require

        peft = require("peft", "a LoRA critic", extra="lora")
        config = peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=_lora_targets(self.trunk),
            fan_in_fan_out=self.trunk.config.model_type == "gpt2",
        )
        self.trunk.requires_grad_(False)
        self.trunk = peft.inject_adapter_in_model(config, self.trunk)
        for name, param in self.trunk.named_parameters():
            param.requires_grad_("lora_" in name)
        if frozen_dtype is not None:
            from gilbench.models.precision import frozen_weights_in_half

            frozen_weights_in_half(self.trunk, frozen_dtype)
        return self


class SharedValueHead(nn.Module):
    """A value head on the policy's own trunk (``model.critic=shared``): no second transformer to run or train.

    The rollout and the update read the values off the policy forward they run anyway
    (``response_logprobs(..., with_hidden=True)``), so the value loss also trains the policy's trunk, through the
    policy's optimizer; this module's own parameters are the head's. ``forward`` runs the trunk for callers
    without a policy forward at hand. The trunk is held outside ``nn.Module``'s registry, so that its parameters
    stay the policy's (not in this module's state dict or optimizer).
    """

    shares_policy_trunk = True

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.hidden_size = policy.config.hidden_size
        self.value_head = zero_value_head(self.hidden_size).to(next(policy.parameters()).device)
        self.__dict__["trunk"] = trunk_of(policy)

    def forward(self, input_ids, attention_mask, position_ids=None, **kwargs):
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        out = self.trunk(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
        )
        return head_values(self.value_head, out[0]), out[0]


def _lora_targets(trunk: nn.Module) -> list[str]:
    """Attention and MLP projections (all linear layers but a head): the usual LoRA placement for a critic."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, m in trunk.named_modules()
        if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"
    }
    return sorted(names)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row (works for left and right padding)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def right_pad(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Move every row's real tokens to the front (stable), turning left padding into right padding."""
    order = torch.argsort((attention_mask == 0).to(torch.int8), dim=1, stable=True)
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def sequence_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar reward ``[B]`` (float32) of a sequence-classifier reward model, i.e. ``logits[:, 0]``.

    Decoder classifiers (GPT-2, Llama, ...): the score head is applied to the hidden state of the last token
    with ``attention_mask == 1``. We do this ourselves rather than rely on the model's own pooling, which
    finds the last token through ``pad_token_id`` and so skips a real final eos when pad == eos; positions
    come from the mask, so left-padded and unpadded rows score the same.
    Encoder classifiers (BERT-style, CLS pooler): rows are moved to right padding first, then the model runs
    as trained. Gradients flow if the caller has them enabled (for reward-model training).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "score", None)
    if not is_decoder(base) or head is None:
        input_ids, attention_mask = right_pad(input_ids, attention_mask)
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    out = trunk_of(base)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    hidden = out[0]
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    return head(last)[:, 0].float()


__all__ = [
    "ValueModel",
    "is_decoder",
    "last_token_index",
    "position_ids_from_mask",
    "right_pad",
    "sequence_scores",
    "trunk_of",
]
