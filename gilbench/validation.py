"""Validation of a run's config at load: ranges and allowed values of every field, refused before anything runs.

Each refusal is one line naming the field, what it accepts and how to set it (``--set FIELD=VALUE``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from pathlib import Path
from typing import Any

from gilbench.config import RunConfig
from gilbench.errors import GilbenchError


def _at_least(lo: float):
    return lambda v: v >= lo, f"at least {lo}"


def _positive():
    return lambda v: v > 0, "greater than 0"


def _unit(open_low: bool = False):
    return (lambda v: 0 < v <= 1, "in (0, 1]") if open_low else (lambda v: 0 <= v <= 1, "in [0, 1]")


def _one_of(*names: str):
    return lambda v: v in names, f"one of {', '.join(names)}"


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
VARIANT_PATTERN = re.compile(r"^[A-Za-z0-9._-]*$")

# Ranges of every numeric and categorical run-config field (dotted name -> (check, what is allowed)).
RULES: dict[str, tuple] = {
    "seed": _at_least(0),
    "split_seed": _at_least(0),
    "limit": _at_least(0),
    "device": (lambda v: bool(DEVICE_PATTERN.match(v)), "auto, cpu, cuda or cuda:N"),
    "mixed_precision": _one_of("auto", "no", "fp32", "bf16", "fp16"),
    "variant": (
        lambda v: bool(VARIANT_PATTERN.match(v)),
        "empty, or letters, digits, '.', '_' and '-' (a folder name)",
    ),
    "model.policy": (lambda v: bool(v.strip()), "a preset, hub id or local path"),
    "model.reward": (lambda v: bool(v.strip()), "auto, a preset, hub id or local path"),
    "model.critic": _one_of("policy", "shared", "reward"),
    "model.attention": _one_of("auto", "eager", "sdpa"),
    "model.lora_r": _at_least(1),
    "model.lora_alpha": _positive(),
    "sft.epochs": _at_least(1),
    "sft.lr": _positive(),
    "sft.batch_size": _at_least(1),
    "sft.max_length": _at_least(2),
    "sft.max_examples": _at_least(0),
    "rm.epochs": _at_least(1),
    "rm.lr": _positive(),
    "rm.batch_size": _at_least(1),
    "rm.max_length": _at_least(2),
    "rm.max_pairs": _at_least(0),
    "rm.micro_batch_size": _at_least(0),
    "rm.pooling": _one_of("auto", "cls", "mean", "last"),
    "rl.steps": _at_least(1),
    "rl.rollout_batch_size": _at_least(1),
    "rl.minibatch_size": _at_least(1),
    "rl.micro_batch_size": _at_least(1),
    "rl.ppo_epochs": _at_least(1),
    "rl.max_prompt_length": _at_least(1),
    "rl.max_new_tokens": _at_least(1),
    "rl.temperature": (lambda v: v > 0, "greater than 0 (rollouts must sample; PPO's log-probs need a temperature)"),
    "rl.top_p": _unit(open_low=True),
    "rl.forward_batch_size": _at_least(1),
    "rl.lr": _positive(),
    "rl.critic_lr": _positive(),
    "rl.critic_warmup_steps": _at_least(0),
    "rl.clip_range": _positive(),
    "rl.clip_range_value": _positive(),
    "rl.vf_coef": _at_least(0),
    "rl.gamma": _unit(),
    "rl.lam": _unit(),
    "rl.kl_coef": _at_least(0),
    "rl.kl_estimator": _one_of("k1", "k2", "k3"),
    "rl.kl_target": _positive(),
    "rl.kl_horizon": _at_least(1),
    "rl.reward_clip": _at_least(0),
    "rl.max_grad_norm": _at_least(0),
    "rl.missing_eos_penalty": _at_least(0),
    "rl.checkpoint_every": _at_least(0),
    "rl.log_rollouts_every": _at_least(0),
    "generate.max_prompts": _at_least(0),
    "generate.max_new_tokens": _at_least(1),
    "generate.temperature": (lambda v: v >= 0, "at least 0 (0 = greedy)"),
    "generate.top_p": _unit(open_low=True),
    "generate.batch_size": _at_least(1),
}


# Fields of the built-in methods' own configs (method_args.<name>), by name; a method config may add ``validate()``
# or ``validate(run_config)``.
METHOD_RULES: dict[str, tuple] = {
    "n_groups": _at_least(1),
    "group_steps": _at_least(0),
    "group_lr": _positive(),
    "beta_critic": _at_least(0),
    "penalty_scale": _one_of("none", "loss_std"),
    "beta_policy": _at_least(0),
    "group_balance": _at_least(0),
    "performance": _one_of("score", "return"),
    "groups": _one_of("inferred", "oracle"),
    "group_input": _one_of("response", "prompt"),
    "beta": _positive(),
    "lr": _positive(),
    "epochs": _at_least(1),
    "batch_size": _at_least(1),
    "micro_batch_size": _at_least(1),
    "max_length": _at_least(2),
    "max_pairs": _at_least(0),
    "max_grad_norm": _at_least(0),
    "ptx_coef": _at_least(0),
    "ptx_batch_size": _at_least(1),
    "ptx_max_length": _at_least(2),
    "ptx_source": _one_of("auto", "sft", "reference"),
    "ptx_examples": _at_least(1),
}


def _flat_fields(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flat_fields(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def validate_config(cfg: RunConfig, method_cfg: Any = None) -> None:
    """Refuse out-of-range values before anything is computed, naming the field and what it accepts."""
    values = _flat_fields(cfg)
    if method_cfg is not None:
        values.update({f"method_args.{k}": v for k, v in _flat_fields(method_cfg).items()})
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise GilbenchError(
                f"config field {name} = {value}: must be a finite number; set it with --set {name}=VALUE"
            )
        if isinstance(value, int) and not isinstance(value, bool) and name.startswith("method_args.") and value < 0:
            raise GilbenchError(f"config field {name} = {value}: must not be negative; set it with --set {name}=VALUE")
        rule = RULES.get(name) or (METHOD_RULES.get(name.split(".", 1)[1]) if name.startswith("method_args.") else None)
        if rule is not None and value is not None and not isinstance(value, bool) and not rule[0](value):
            raise GilbenchError(f"config field {name} = {value!r}: must be {rule[1]}; set it with --set {name}=VALUE")
    if cfg.data_dir and not Path(cfg.data_dir).expanduser().is_dir():
        raise GilbenchError(
            f"--data-dir {cfg.data_dir}: no such folder; pass the folder holding the datasets' public layout"
        )
    batch, micro = values.get("method_args.batch_size"), values.get("method_args.micro_batch_size")
    if isinstance(batch, int) and isinstance(micro, int) and micro >= 1 and batch % micro:
        raise GilbenchError(
            f"method_args.batch_size ({batch}) must be a multiple of method_args.micro_batch_size ({micro}); change them with --set"
        )
    rl = cfg.rl
    if rl.rollout_batch_size % rl.minibatch_size or rl.minibatch_size % rl.micro_batch_size:
        raise GilbenchError(
            f"rl.rollout_batch_size ({rl.rollout_batch_size}) must be a multiple of rl.minibatch_size ({rl.minibatch_size}), "
            f"and that of rl.micro_batch_size ({rl.micro_batch_size}); change them with --set"
        )
    from gilbench.tracking import parse_report_to

    parse_report_to(cfg.report_to, cfg.tensorboard)
    check = getattr(method_cfg, "validate", None)
    if callable(check):  # a method config's own checks; one that takes an argument also sees the run config
        if inspect.signature(check).parameters:
            check(cfg)
        else:
            check()
