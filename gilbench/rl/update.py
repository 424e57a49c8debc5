"""The PPO update: epochs x shuffled minibatches x micro-batches (gradient accumulation), one optimizer step per
minibatch. ``method`` is an ``RLMethod`` (rl/trainer.py): its ``loss`` turns per-sample clipped losses into the
policy loss, its critic (if any) adds the clipped value loss, ``extra_loss`` anything else.

A loss that couples the samples of a minibatch (``method.couples_samples``, GIL's group variance) is computed over
the whole minibatch whatever rl.micro_batch_size is: a no-grad pass gives every sample's loss l_i, the loss on
those gives the constant weights w_i = d loss / d l_i, and each micro-batch back-propagates sum_i w_i l_i. The
gradient is that of the whole-minibatch loss (it depends on the parameters only through the l_i).

During the first ``rl.critic_warmup_steps`` steps only the critic learns: the policy loss is computed without a
gradient (for its metrics) and the policy's optimizer does not step, so the value model first fits the start
policy's returns instead of steering the policy with advantages from an untrained critic.
"""

from __future__ import annotations

import torch

from gilbench.rl.core import clipped_policy_loss, clipped_value_loss
from gilbench.rl.rollout import Rollout, policy_and_values


def per_sample_policy_loss(method, mb: Rollout) -> tuple[torch.Tensor, dict]:
    """One policy forward (with grad if enabled): the clipped surrogate per sample, and its stats."""
    return policy_loss_and_values(method, mb, critic=None)[:2]


def policy_loss_and_values(method, mb: Rollout, critic, policy_grad: bool = True):
    """The clipped surrogate per sample, its stats, and ``critic``'s values (None without one); the policy part
    without a gradient if not ``policy_grad`` (critic warm-up)."""
    args = (mb.query, mb.query_mask, mb.response, mb.mask.long())
    logp, _, values, _ = policy_and_values(method.policy, critic, *args, method.rl.temperature, policy_grad=policy_grad)
    per_sample, stats = clipped_policy_loss(logp, mb.logprobs, mb.advantages, mb.mask, method.rl.clip_range)
    return per_sample, stats, values


def update(method, batch: Rollout, data, step: int) -> dict:
    """``rl.ppo_epochs`` passes over the batch; returns the metrics averaged over the micro-steps."""
    rl = method.rl
    gen = torch.Generator().manual_seed(method.step_seed(step) + 1)
    warming_up = method.critic is not None and step < rl.critic_warmup_steps
    trained = ([] if warming_up else [(method.policy, method.policy_opt)]) + (
        [(method.critic, method.critic_opt)] if method.critic is not None else []
    )
    sums: dict[str, float] = {}
    n = 0
    for model, _ in trained:
        model.train()
    for _ in range(rl.ppo_epochs):
        order = torch.randperm(len(batch), generator=gen).to(batch.mask.device)
        for start in range(0, len(batch), rl.minibatch_size):
            for stats in minibatch_backward(method, batch, data, order[start : start + rl.minibatch_size], step):
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                n += 1
            if warming_up:  # nothing reached the policy; a method's own terms must not carry over either
                method.policy_opt.zero_grad(set_to_none=True)
            for model, opt in trained:
                if rl.max_grad_norm:
                    method.acc.clip_grad_norm_(model.parameters(), rl.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
    return {k: v / n for k, v in sums.items()}


def minibatch_backward(method, batch: Rollout, data, mb_idx: torch.Tensor, step: int) -> list[dict]:
    """Accumulate the gradient of one minibatch (rows ``mb_idx`` of ``batch``), micro-batch by micro-batch; returns
    each micro-step's metrics."""
    micro = [mb_idx[i : i + method.rl.micro_batch_size] for i in range(0, len(mb_idx), method.rl.micro_batch_size)]
    whole = whole_minibatch_weights(method, batch, data, micro) if method.couples_samples and len(micro) > 1 else None
    return [
        micro_step(
            method,
            batch.select(idx),
            data.select(idx),
            step,
            len(idx) / len(mb_idx),
            None if whole is None else (whole[0][k], whole[1]),
        )
        for k, idx in enumerate(micro)
    ]


def whole_minibatch_weights(method, batch: Rollout, data, micro: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """Per micro-batch, the weights w_i = d loss / d l_i of the method's loss over the whole minibatch, and the
    loss's metrics (``loss/policy`` is its value)."""
    with torch.no_grad():
        losses = torch.cat([per_sample_policy_loss(method, batch.select(idx))[0] for idx in micro])
    idx = torch.cat(micro)
    losses.requires_grad_()
    loss, stats = method.loss(losses, batch.select(idx), data.select(idx))
    (weights,) = torch.autograd.grad(loss, losses)
    return list(weights.split([len(i) for i in micro])), {
        "loss/policy": loss.item(),
        **{k: float(v) for k, v in stats.items()},
    }


def micro_step(
    method, mb: Rollout, data, step: int, share: float, whole: tuple[torch.Tensor, dict] | None = None
) -> dict:
    """Forward and backward of one micro-batch, ``share`` of its minibatch; ``whole``: weights and metrics of a
    whole-minibatch loss (see the module docstring)."""
    rl = method.rl
    warming_up = method.critic is not None and step < rl.critic_warmup_steps
    per_sample, pstats, values = policy_loss_and_values(method, mb, method.critic, policy_grad=not warming_up)
    if whole is None:
        policy_loss, policy_stats = method.loss(per_sample, mb, data)
    else:
        policy_loss = (whole[0] * per_sample).sum()  # its gradient is the whole-minibatch loss's share
        policy_stats = {k: v for k, v in whole[1].items() if k != "loss/policy"}
    extra, extra_stats = (None, {}) if warming_up else method.extra_loss(mb)
    others = []  # added in this order, as (policy + value) + extra
    if method.critic is not None:
        value_loss, vstats = clipped_value_loss(values.float(), mb.values, mb.returns, mb.mask, rl.clip_range_value)
        others.append(rl.vf_coef * value_loss)
    if extra is not None:
        others.append(extra)
    loss = policy_loss
    for term in others:
        loss = loss + term
    if not torch.isfinite(loss):
        detail = f"policy {policy_loss.item()}" + (f", value {value_loss.item()}" if method.critic is not None else "")
        raise method.diverged(step, "non-finite loss", detail)
    if whole is None:
        method.acc.backward(loss * share)
    else:  # the policy term's weights already sum over the minibatch; the other terms are means like any other
        method.acc.backward(policy_loss + sum(others) * share if others else policy_loss)
    stats = {"loss/policy": policy_loss.item() if whole is None else whole[1]["loss/policy"]}
    if method.critic is not None:
        stats["loss/value"] = value_loss.item()
    stats.update(
        {
            "policy/approx_kl": pstats["approx_kl"],
            "policy/clipfrac": pstats["clipfrac"],
            "policy/ratio_mean": pstats["ratio_mean"],
        }
    )
    if method.critic is not None:
        stats["val/clipfrac"] = vstats["clipfrac"]
    stats.update({k: float(v) for k, v in policy_stats.items()})
    stats.update(extra_stats)
    return stats
