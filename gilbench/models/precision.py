"""Mixed precision: which one a machine should use, and frozen models held in half precision.

``mixed_precision: auto`` (the default) resolves to ``bf16`` where the hardware computes bfloat16 natively
(a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX, read from /proc/cpuinfo) and to ``no``
elsewhere: emulated bfloat16 would be slower than float32. ``bf16`` means autocast for the forwards of
trained models, whose master weights and optimizer states stay float32; log-probs, KL, advantages and
losses are float32 (see ``gilbench.rl.core.token_logprobs``). Frozen models (the reference) keep their
matmul weights in bfloat16 (``freeze_in_half``), which gives the same numbers as autocast with half the memory.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from gilbench.errors import GilbenchError

MIXED_PRECISION = ("auto", "no", "fp32", "bf16", "fp16")  # fp32 = no (a bare `no` on the command line is YAML false)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX (bfloat16 matmul instructions) in this CPU's flags."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_emulated(device: str, precision: str) -> bool:
    """Whether a run on ``device`` (cpu, cuda, cuda:N or auto) in ``precision`` computes bfloat16 on a CPU that only
    emulates it (100-500x slower than float32 at SmolLM2 sizes)."""
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return precision == "bf16" and on_cpu and not cpu_has_native_bf16()


def resolve_mixed_precision(setting: str, device: str) -> str:
    """``no``, ``bf16`` or ``fp16`` for ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``)."""
    if setting not in MIXED_PRECISION:
        raise GilbenchError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {setting!r}")
    if setting != "auto":
        return "no" if setting == "fp32" else setting
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def half_dtype(mixed_precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


def _matmul_modules(model: nn.Module):
    """nn.Linear and GPT-2's Conv1D: the layers whose weights autocast would cast to half anyway."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]


def freeze_in_half(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Freeze ``model`` (eval, no grad) and store its matmul weights in ``dtype`` (see ``frozen_weights_in_half``)."""
    model.requires_grad_(False).eval()
    return frozen_weights_in_half(model, dtype)


def frozen_weights_in_half(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the frozen (``requires_grad=False``) matmul weights of ``model`` in ``dtype``; trained ones stay float32.

    Under autocast to ``dtype`` the outputs are the same as with float32 weights (autocast would round the
    weights to ``dtype`` for every matmul): norms, embeddings and the residual stream stay float32. A weight
    tied to the input embedding (a tied LM head) stays float32, so the embedding lookup is unchanged.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = embeddings.weight if embeddings is not None else None
    for module in _matmul_modules(model):
        if module.weight is tied or module.weight.requires_grad:
            continue
        module.weight.data = module.weight.data.to(dtype)
        if getattr(module, "bias", None) is not None and not module.bias.requires_grad:
            module.bias.data = module.bias.data.to(dtype)
    return model
