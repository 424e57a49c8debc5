"""GRPO: group-normalised advantages (Shao et al., 2024, DeepSeekMath), critic-free.

Each prompt is sampled k times (``group_size``; rl.rollout_batch_size counts samples). A sample's advantage is its
return standardised within its prompt's group,

    A_i = (R_i - mean_{j in prompt(i)} R_j) / (std_{j in prompt(i)} R_j + 1e-4),   std with Bessel's correction,

broadcast to every token of the response, and the policy minimises the shared clipped surrogate on it. The KL to
the reference enters the REWARD as in PPO w/ KL and RLOO (R_i = score_i - kl_coef * sum_t KL_i,t; rl.kl_estimator
picks the per-token estimate), not as the paper's k3 loss term (ours): so rloo, grpo and ppo-kl differ only in how
they estimate the advantage. No value model is loaded or trained. Everything else is RLOO's (rloo.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gilbench import register_method
from gilbench.methods.rloo import RLOO, check_samples_per_prompt

STD_EPS = 1e-4  # a group whose samples all score the same gets advantage 0, not 0/0


@dataclass
class GRPOConfig:
    group_size: int = 4  # samples per prompt (k >= 2); rl.rollout_batch_size must be a multiple of it

    def validate(self, cfg=None) -> None:
        check_samples_per_prompt("group_size", self.group_size, cfg)


def group_normalised_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """[B] returns, k consecutive samples per prompt -> [B] (R_i - group mean) / (group std + STD_EPS)."""
    grouped = returns.view(-1, k)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    return (centred / (grouped.std(dim=1, keepdim=True) + STD_EPS)).reshape(-1)


@register_method("grpo")
class GRPO(RLOO):
    """Group-normalised advantages over k samples per prompt (GRPO), KL in the reward; no critic."""

    Config = GRPOConfig

    def samples_per_prompt(self) -> int:
        return self.ctx.method_cfg.group_size

    def sequence_advantages(self, returns: torch.Tensor) -> torch.Tensor:
        return group_normalised_advantages(returns, self.samples_per_prompt())
