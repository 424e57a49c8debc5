"""Shared by the RL-loop tests: the fixed metric names every logged step carries, and a rollout made by hand."""

from __future__ import annotations

import torch

from gilbench.data.types import Prompt
from gilbench.rl.rollout import Rollout

# the names every PPO-family step logs (README, "Per-step metric names"); a critic-free method logs all but CRITIC_NAMES
FIXED_NAMES = [
    "objective/score",
    "objective/kl",
    "objective/rlhf_reward",
    "objective/entropy",
    "objective/kl_coef",
    "policy/approx_kl",
    "policy/clipfrac",
    "policy/ratio_mean",
    "loss/policy",
    "loss/value",
    "val/clipfrac",
    "val/explained_var",
    "completions/mean_length",
    "completions/eos_rate",
    "completions/repetition_rate",
    "time/rollout",
    "time/update",
    "time/step",
    "throughput/tokens_per_s",
]
CRITIC_NAMES = ("loss/value", "val/clipfrac", "val/explained_var")


def fake_rollout(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor | None = None,
    samples_per_prompt: int = 1,
    with_values: bool = False,
    critic_hidden: torch.Tensor | None = None,
) -> Rollout:
    """B responses of R tokens (B, R = kl.shape) with the given scores and per-token KL; prompt ids 0, 1, ... each
    ``samples_per_prompt`` times in a row; every other tensor zeros (the critic's values too, ``with_values``)."""
    B, R = kl.shape
    zeros = torch.zeros(B, R)
    return Rollout(
        prompts=[Prompt(id=str(i // samples_per_prompt), text="q") for i in range(B)],
        query=torch.zeros(B, 2, dtype=torch.long),
        query_mask=torch.ones(B, 2, dtype=torch.long),
        response=torch.zeros(B, R, dtype=torch.long),
        mask=torch.ones(B, R) if mask is None else mask,
        texts=[""] * B,
        scores=scores,
        raw_scores=scores,
        logprobs=zeros,
        ref_logprobs=zeros,
        kl=kl,
        entropy=zeros,
        values=zeros if with_values else None,
        critic_hidden=critic_hidden,
    )
