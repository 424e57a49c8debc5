"""Tensor math shared by every PPO-style method.

Conventions: per-token tensors are ``[B, T]`` over response tokens, with a ``mask`` of the same
shape (float or bool; 1 marks a real response token). Each row's ones are contiguous from index 0
and every row has at least one. Padding may hold any value, including ``nan``/``inf``: helpers
select with ``torch.where`` rather than multiplying by the mask, so padding never leaks in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "masked_sum",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "kl_per_token",
    "KL_ESTIMATORS",
    "gae",
    "clipped_policy_loss",
    "clipped_value_loss",
    "explained_variance",
    "entropy_from_logits",
    "logprobs_from_logits",
    "token_logprobs",
    "token_logprobs_and_entropy",
    "RunningMoments",
]


def _keep(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` on real tokens, 0 elsewhere (a select, so ``nan`` in padding cannot propagate)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum over real tokens only: all of them (``dim=None``) or along ``dim``."""
    kept = _keep(x, mask)
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over real tokens only, so padding does not dilute it; ``dim=1`` gives one per row."""
    count = mask.float()  # float32 counts stay exact where a bf16/fp16 sum would round
    count = count.sum() if dim is None else count.sum(dim=dim)
    return masked_sum(x, mask, dim) / count


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the real tokens (a scalar).

    With ``unbiased`` the n/(n-1) correction is applied when n > 1; a single entry has no spread,
    so it gives 0 rather than ``nan`` (whitening one token then yields 0, which is harmless).
    """
    n = mask.bool().sum()
    if n == 0:
        raise ValueError("masked_var needs at least one unmasked entry; the mask is all zeros")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * (n / (n - 1))
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit variance over real tokens (and mean 0 unless ``shift_mean`` is False).

    Used on advantages so the policy step size does not depend on the reward scale. Statistics
    come from real tokens only; padding is 0 in the output.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _keep(whitened, mask)


KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens sampled from the policy.

    k1 = log r is unbiased but noisy and can be negative; k2 = (log r)^2 / 2 is low-variance but
    biased; k3 = (1/r - 1) + log r is unbiased and never negative (Schulman's estimators,
    where r = p/p_ref).
    """
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        # exp(-d) - 1 + d, with expm1 for accuracy when d is near 0.
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; valid estimators are: {', '.join(KL_ESTIMATORS)}")


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation per row, returning ``(advantages, returns)``.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, with
    V and A taken as 0 after a row's last real token (the episode ends there). Returns are
    A + V, the value-function targets. Padding is 0 in both outputs.
    """
    real = mask.bool()
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    rewards = torch.where(real, rewards, zero)
    values = torch.where(real, values.to(rewards.dtype), zero)

    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = torch.where(real[:, t], delta + gamma * lam * next_adv, zero)
        advantages[:, t] = adv
        next_adv = adv
        next_value = values[:, t]  # already 0 on padding, so the step past the end sees V = 0
    returns = torch.where(real, advantages + values, zero)
    return advantages, returns


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, returned per sample as ``([B] loss, stats)``.

    Per token: max(-A * ratio, -A * clip(ratio, 1-c, 1+c)), the pessimistic bound that removes
    the incentive to move the ratio outside [1-c, 1+c]. Each row is the mean over its own tokens,
    so every sample counts equally whatever its length: the caller averages samples, and GIL
    re-weights them. Stats (``clipfrac``, ``approx_kl``, ``ratio_mean``) are detached floats
    over all real tokens.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.maximum(unclipped, clipped)
    per_sample = masked_mean(per_token, mask, dim=1)

    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask).item(),
            "ratio_mean": masked_mean(ratio.detach(), mask).item(),
        }
    return per_sample, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value regression, ``(scalar loss, stats)``.

    The new value may move at most ``clip_range_value`` from the rollout's value before the
    clipped error takes over; the max of the two squared errors keeps the update pessimistic.
    loss = 0.5 * mean over real tokens; ``clipfrac`` is the share of tokens where the clipped
    error is the larger one.
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err_unclipped = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((err_clipped > err_unclipped).float(), mask).item()}
    return loss, stats


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over real tokens: 1 is a perfect critic, 0 no better than a constant.

    ``nan`` when the returns have no variance (the ratio is undefined).
    """
    var_returns = masked_var(returns, mask).item()
    if var_returns == 0.0:
        return math.nan
    return 1.0 - masked_var(returns - values, mask).item() / var_returns


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim, from log_softmax (stable for large logits).

    Entries with probability 0 (e.g. ``-inf`` logits) contribute 0, with finite gradients.
    """
    return entropy_from_logprobs(F.log_softmax(logits, dim=-1))


def entropy_from_logprobs(logp: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the last dim of log-probabilities; -inf entries (probability 0) contribute 0."""
    p = logp.exp()
    logp = torch.where(torch.isfinite(logp), logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    return -(p * logp).sum(dim=-1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] for each position: ``[B, T, V]`` and ``[B, T]`` give ``[B, T]``.

    Gathers the logit and subtracts logsumexp, so no full ``[B, T, V]`` log-prob tensor is kept.
    """
    picked = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


class RunningMoments:
    """Running mean and standard deviation of scalar rewards across batches.

    Merges each batch with Chan et al.'s parallel formula, so the result equals the mean and
    (population, ddof=0) std of all values seen, without storing them. Before any update the
    moments are mean 0, std 1, so normalising with them is the identity.
    """

    def __init__(self) -> None:
        self._mean = 0.0
        self._var = 1.0
        self._count = 0.0

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def std(self) -> float:
        return math.sqrt(self._var)

    @property
    def count(self) -> float:
        return self._count

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> tuple[float, float]:
        """Fold a batch in; returns that batch's own ``(mean, std)`` (ddof=0)."""
        x = x.detach().reshape(-1).to(torch.float64)
        n = float(x.numel())
        if n == 0:
            raise ValueError("RunningMoments.update got an empty tensor")
        batch_mean = x.mean().item()
        batch_var = x.var(unbiased=False).item()

        total = self._count + n
        delta = batch_mean - self._mean
        m2 = self._var * self._count + batch_var * n + delta**2 * self._count * n / total
        self._mean += delta * n / total
        self._var = m2 / total
        self._count = total
        return batch_mean, math.sqrt(batch_var)

    def state_dict(self) -> dict[str, float]:
        return {"mean": self._mean, "var": self._var, "count": self._count}

    def load_state_dict(self, d: dict[str, float]) -> None:
        self._mean = float(d["mean"])
        self._var = float(d["var"])
        self._count = float(d["count"])


class _TokenLogprobs(torch.autograd.Function):
    """Fused log_softmax(logits / T)[token], computed ``chunk`` rows at a time in float32.

    Saves only the input logits (in their own dtype, e.g. bfloat16) and a float32 logsumexp per row; the
    backward rebuilds softmax chunk by chunk. So no full-vocabulary float32 tensor is ever alive for all
    tokens at once, in the forward or the backward.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, temperature: float, chunk: int):
        flat, idx = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1).long()
        logp = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logp)
        for i in range(0, flat.shape[0], chunk):
            scaled = flat[i : i + chunk].float() / temperature
            lse[i : i + chunk] = torch.logsumexp(scaled, dim=-1)
            logp[i : i + chunk] = scaled.gather(-1, idx[i : i + chunk, None]).squeeze(-1) - lse[i : i + chunk]
        ctx.save_for_backward(logits, idx, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return logp.view(tokens.shape)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, idx, lse = ctx.saved_tensors
        flat, grad_flat = logits.reshape(-1, logits.shape[-1]), grad_out.reshape(-1).float()
        grad = torch.empty_like(flat)
        T = ctx.temperature
        for i in range(0, flat.shape[0], ctx.chunk):
            g = grad_flat[i : i + ctx.chunk, None] / T
            # d logp / d logits = (onehot - softmax) / T; in place on one float32 copy of the chunk, no temporaries
            part = (
                flat[i : i + ctx.chunk]
                .to(torch.float32, copy=True)
                .div_(T)
                .sub_(lse[i : i + ctx.chunk, None])
                .exp_()
                .mul_(-g)
            )
            part.scatter_add_(-1, idx[i : i + ctx.chunk, None], g)
            grad[i : i + ctx.chunk] = part
        return grad.view(logits.shape), None, None, None


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, chunk: int = 256
) -> torch.Tensor:
    """log softmax(logits / temperature)[token] in float32, ``[B, T, V]`` and ``[B, T]`` -> ``[B, T]``.

    Equal to ``logprobs_from_logits(logits.float() / temperature, tokens)`` but never materialises the
    float32 ``[B, T, V]`` tensor (see ``_TokenLogprobs``): with a 49k vocabulary that tensor is hundreds of MB.
    Differentiable; the gradient comes back in ``logits``' dtype.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return _TokenLogprobs.apply(logits, tokens, float(temperature), chunk)


@torch.no_grad()
def token_logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` and the entropy of softmax(logits / temperature) per position, float32, in one pass of
    ``chunk`` rows over the vocabulary (no grad: the rollout's forward, where the entropy is a metric)."""
    flat, idx = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1).long()
    logp, entropy = torch.empty(2, flat.shape[0], dtype=torch.float32, device=logits.device)
    for i in range(0, flat.shape[0], chunk):
        scaled = flat[i : i + chunk].float() / temperature
        lse = torch.logsumexp(scaled, dim=-1)
        # the log-probs exactly as token_logprobs computes them: a model equal to its reference has KL 0, not 1e-8
        logp[i : i + chunk] = scaled.gather(-1, idx[i : i + chunk, None]).squeeze(-1) - lse
        entropy[i : i + chunk] = entropy_from_logprobs(scaled - lse[:, None])
    return logp.view(tokens.shape), entropy.view(tokens.shape)
