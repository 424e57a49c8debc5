"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al., 2024), critic-free.

Each prompt is sampled k times (``rloo_k``; rl.rollout_batch_size counts samples, so a step has
rollout_batch_size / k prompts). A sample's return is its KL-shaped reward summed over its tokens, as in PPO w/ KL:

    R_i = score_i - kl_coef * sum_t KL_i,t

and its advantage is R_i minus the mean return of the other k - 1 samples of the same prompt,

    A_i = R_i - (sum_{j in prompt(i)} R_j - R_i) / (k - 1),

the same for every token of the response. No value model is loaded or trained. The update is the shared clipped
surrogate on these advantages: with rl.ppo_epochs = 1 and one minibatch the ratio is 1 and it is REINFORCE exactly;
more epochs or minibatches reuse the samples with PPO's clip. The advantages are not whitened (rl.whiten_advantages
is the GAE path's). With the contract of rl/trainer.py this file needs nothing from the loop but its hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gilbench import register_method
from gilbench.errors import GilbenchError
from gilbench.rl.rollout import Rollout
from gilbench.rl.trainer import RLMethod


@dataclass
class RLOOConfig:
    rloo_k: int = 4  # samples per prompt (k >= 2); rl.rollout_batch_size must be a multiple of it

    def validate(self, cfg=None) -> None:
        check_samples_per_prompt("rloo_k", self.rloo_k, cfg)


def check_samples_per_prompt(name: str, k: int, cfg) -> None:
    """k >= 2 (a baseline needs another sample), and a whole number of prompts per rollout."""
    if k < 2:
        raise GilbenchError(f"config field method_args.{name} = {k}: must be at least 2; set it with --set {name}=4")
    if cfg is not None and cfg.rl.rollout_batch_size % k:
        raise GilbenchError(
            f"rl.rollout_batch_size ({cfg.rl.rollout_batch_size}) counts samples and must be a multiple of "
            f"method_args.{name} ({k}); change one of them with --set"
        )


def leave_one_out_advantages(returns: torch.Tensor, k: int) -> torch.Tensor:
    """[B] returns, k consecutive samples per prompt -> [B] advantages R_i - mean of the prompt's other samples."""
    grouped = returns.view(-1, k)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others_mean).reshape(-1)


@register_method("rloo")
class RLOO(RLMethod):
    """REINFORCE leave-one-out: k samples per prompt, each baselined by the others' mean return; no critic."""

    Config = RLOOConfig
    needs_critic = False

    def samples_per_prompt(self) -> int:
        return self.ctx.method_cfg.rloo_k

    def sequence_advantages(self, returns: torch.Tensor) -> torch.Tensor:
        return leave_one_out_advantages(returns, self.samples_per_prompt())

    def advantages(self, batch: Rollout) -> tuple[torch.Tensor, None]:
        returns = batch.rewards.sum(dim=1)  # score + the KL penalty of every token (shape_rewards)
        return self.sequence_advantages(returns)[:, None] * batch.mask, None
