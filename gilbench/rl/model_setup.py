"""Small helpers every training method shares when it sets up models: dropout off, frozen references,
activation recomputation, the optimizer, seeding. Kept apart from the RL loop so that DPO and other
loop-free methods can use them without importing it."""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from gilbench.models import shared_prefix
from gilbench.models.heads import ValueModel
from gilbench.models.precision import freeze_in_half


def disable_dropout(model: torch.nn.Module) -> None:
    """PPO's ratio must compare the same function: dropout would make old and new log-probs differ."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def freeze(model: torch.nn.Module, half: torch.dtype | None) -> None:
    """A frozen model (the reference): no grad, eval mode, matmul weights in ``half`` under mixed precision."""
    if half is not None:
        freeze_in_half(model, half)
    else:
        model.requires_grad_(False).eval()


def recompute_activations(model: torch.nn.Module) -> None:
    """Gradient checkpointing, non-reentrant (exact; works with frozen inputs such as LoRA's)."""
    model = model.trunk if isinstance(model, ValueModel) else model
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_attention(model: torch.nn.Module, setting: str, device: torch.device, share_prefix: bool = False) -> None:
    """The attention kernel (model.attention). ``auto`` is eager on CPU: on SmolLM2-135M, 16 sequences of 65
    tokens, forward + backward took 2.45 s eager against 3.29 s with sdpa (whose CPU flash kernel has a slow
    backward at these lengths); forwards alone were equal. Elsewhere sdpa, transformers' own default.
    ``share_prefix`` (model.share_prompt_prefix): eager attention that can run a batch's shared prompt
    opening once (gilbench.models.shared_prefix)."""
    impl = ("eager" if torch.device(device).type == "cpu" else "sdpa") if setting == "auto" else setting
    if impl == "eager" and share_prefix:
        if shared_prefix.supports(model):
            impl = shared_prefix.ATTENTION
        else:
            warnings.warn(
                f"model.share_prompt_prefix: {type(model).__name__} does not pass extra arguments to its attention "
                "with this transformers release; every row runs whole (a newer transformers shares the opening)",
                stacklevel=2,
            )
    model.set_attn_implementation(impl)


def adamw(params: list, lr: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over each parameter, no foreach temporaries the size of the model)."""
    return torch.optim.AdamW(params, lr=lr, fused=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
