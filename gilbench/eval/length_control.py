"""A length-controlled win rate: the judge's preference for A with the length difference regressed out.

Judges (people too) tend to prefer the longer answer, so a method can "win" by talking more. We fit a logistic
regression of each pair's preference for A, ``y = win + tie / 2`` (in [0, 1]; the two orders already combined), on
the standardised length difference ``d = (length_A - length_B) / sd(length_A - length_B)``::

    P(A preferred | d) = sigmoid(b0 + b1 * d)

by penalised maximum likelihood (Newton's method; a small ridge term ``RIDGE`` keeps the fit finite when one method
wins every pair). The length-controlled win rate is the prediction at equal lengths, ``sigmoid(b0)``; it is reported
next to the raw preference rate ``mean(y)`` on the same pairs, with a 95 % percentile CI from the same cluster
bootstrap (prompts resampled, seeds kept together) as the raw rates. ``b1`` (``length_slope``) says how much the
judge rewards length: > 0 means a longer answer is preferred more often.
"""

from __future__ import annotations

import numpy as np

from gilbench.eval.stats import interval, rng_for

RIDGE = 1e-2
_ITERATIONS = 30


def fit_logistic(d: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(b0, b1) for each row of ``weights`` (shape (B, n)): weighted, ridge-penalised logistic regression of y on d."""
    b0 = np.zeros(weights.shape[0])
    b1 = np.zeros(weights.shape[0])
    for _ in range(_ITERATIONS):
        p = 1.0 / (1.0 + np.exp(-(b0[:, None] + b1[:, None] * d[None, :])))
        r = weights * (p - y[None, :])
        v = weights * p * (1.0 - p)
        g0, g1 = r.sum(1) + RIDGE * b0, (r * d).sum(1) + RIDGE * b1
        h00, h01, h11 = v.sum(1) + RIDGE, (v * d).sum(1), (v * d * d).sum(1) + RIDGE
        det = h00 * h11 - h01 * h01
        step0, step1 = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        b0, b1 = b0 - step0, b1 - step1
        if max(np.abs(step0).max(), np.abs(step1).max()) < 1e-10:
            break
    return b0, b1


def length_controlled(items: list[dict], label: str, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """``{"raw_preference", "lc_win", "lc_win_ci", "length_slope", "n"}`` over the valid items, or None without any."""
    valid = [it for it in items if it.get("win") is not None]
    if not valid:
        return None
    y = np.array([it["win"] + 0.5 * it["tie"] for it in valid], float)
    diff = np.array([float(it["length_a"]) - float(it["length_b"]) for it in valid])
    scale = diff.std()
    d = diff / scale if scale > 0 else np.zeros_like(diff)
    b0, b1 = fit_logistic(d, y, np.ones((1, len(valid))))
    _, inverse = np.unique(np.asarray([it["cluster"] for it in valid], dtype=str), return_inverse=True)
    n_clusters = inverse.max() + 1
    rng = rng_for(seed, f"lc/{label}")
    draws = []
    for start in range(0, n_boot, 256):
        picks = rng.integers(0, n_clusters, size=(min(256, n_boot - start), n_clusters))
        per_cluster = np.stack([np.bincount(row, minlength=n_clusters) for row in picks]).astype(float)
        boot_b0, _ = fit_logistic(d, y, per_cluster[:, inverse])
        draws.append(1.0 / (1.0 + np.exp(-boot_b0)))
    return {
        "n": len(valid),
        "raw_preference": float(y.mean()),
        "lc_win": float(1.0 / (1.0 + np.exp(-b0[0]))),
        "lc_win_ci": interval(np.concatenate(draws)) if n_boot else None,
        "length_slope": float(b1[0]),
        "length_diff_sd": float(scale),
    }
