"""What every training method is: a class with a config dataclass and ``train(ctx)``.

A method file registers itself with ``@register_method("name")``; RL methods subclass
``gilbench.rl.trainer.RLMethod`` and fill in its small contract (prepare, advantages, loss, needs_critic)
instead of writing a loop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gilbench.config import RunConfig
from gilbench.data.types import TaskData


@dataclass
class RunContext:
    """What the pipeline hands a method: configs, data, the SFT model, the reward model, where to write."""

    cfg: RunConfig
    method_cfg: Any
    task: TaskData
    run_dir: Path
    accelerator: Any  # accelerate.Accelerator
    sft_path: Path  # the SFT policy (save_pretrained folder): the start point and the reference
    reward: Any = None  # gilbench.models.reward.RewardScorer, or None for methods that need none
    log: Callable[[str], None] = print
    summary: dict = field(default_factory=dict)  # numbers the method wants in the run summary

    def load_policy(self):
        """The SFT policy and its tokenizer, fresh from disk (each call gives a new copy)."""
        from gilbench.models.presets import load_causal_lm

        return load_causal_lm(str(self.sft_path))


class Method(abc.ABC):
    """Base class. ``Config`` is the method's own dataclass (None: no fields); ``defaults`` are dotted
    overrides of the shared config (e.g. ``{"rl.kl_coef": 0.0}``) applied before the user's."""

    Config: ClassVar[type | None] = None
    defaults: ClassVar[dict] = {}
    needs_reward_model: ClassVar[bool] = True
    registered_name: ClassVar[str] = ""

    @abc.abstractmethod
    def train(self, ctx: RunContext):
        """Train and return ``(policy, tokenizer)``; the pipeline saves and evaluates it."""

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().split("\n")[0]
