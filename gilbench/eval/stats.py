"""Statistics of a pairwise comparison: rates with bootstrap CIs resampled by prompt, a sign test, judge health.

An *item* is one judged pair (a prompt, a seed) with fractions ``win`` / ``tie`` / ``lose`` for method A (None when
invalid) and a ``cluster``: the prompt. With several seeds a prompt has several items; the bootstrap resamples
prompts with replacement and keeps all of a prompt's items together, so seeds are not counted as independent
prompts; the sign test over prompts (``prompt_sign_test``) averages a prompt's seeds first for the same reason, beside
the sign test over items. Score judges (gold, rm) also give each item both scores: ``score_difference`` is the
paired A - B difference, the primary metric where a gold function exists. CIs are percentile intervals; every resampling stream is seeded by (seed, row label), so a table is
reproducible and a row does not change when other rows are added.

The prompt bootstrap holds each seed's trained policies fixed: it says how sure we are about *these* runs, not about
retraining. ``across_seeds`` gives the other view for the score difference: each training seed's mean difference and
a t-interval over seeds (df = seeds - 1), the uncertainty that decides "does A beat B" when seeds disagree. Seed s of
A meets seed s of B: both trained against that seed's reward model (cached by seed), so the difference is paired.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.stats import binomtest
from scipy.stats import t as student_t

LEVEL = 0.95
_CHUNK = 256  # bootstrap draws per block, to bound memory with many prompts


def rng_for(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(label.encode()).hexdigest()[:12], 16)])


def cluster_bootstrap(
    clusters: list, columns: dict[str, np.ndarray], n_boot: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Bootstrap draws of the mean of each column, resampling whole clusters (ratio of resampled sums to counts)."""
    _, inverse = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    n_clusters = inverse.max() + 1
    counts = np.bincount(inverse, minlength=n_clusters).astype(float)
    sums = {k: np.bincount(inverse, weights=np.asarray(v, float), minlength=n_clusters) for k, v in columns.items()}
    draws: dict[str, list] = {k: [] for k in columns}
    for start in range(0, n_boot, _CHUNK):
        idx = rng.integers(0, n_clusters, size=(min(_CHUNK, n_boot - start), n_clusters))
        n = counts[idx].sum(axis=1)
        for k, s in sums.items():
            draws[k].append(s[idx].sum(axis=1) / n)
    return {k: np.concatenate(v) for k, v in draws.items()}


def interval(draws: np.ndarray) -> list[float]:
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def sign_test(items: list[dict]) -> dict:
    """Paired two-sided sign test: items A won (win > lose) against items A lost; ties are left out."""
    wins = sum(1 for it in items if it["win"] > it["lose"])
    losses = sum(1 for it in items if it["lose"] > it["win"])
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"wins": wins, "losses": losses, "p": float(p)}


def rates(items: list[dict], label: str, n_boot: int = 2000, seed: int = 0) -> tuple[dict, np.ndarray | None]:
    """Win / tie / lose rates of A over valid items, with CIs, the sign test and N; plus the win-rate draws."""
    valid = [it for it in items if it["win"] is not None]
    out = {"n": len(valid), "n_prompts": len({it["cluster"] for it in valid}), "n_invalid": len(items) - len(valid)}
    if not valid:
        return out | dict.fromkeys(("win", "tie", "lose", "win_ci", "tie_ci", "lose_ci")) | {
            "sign_test": sign_test([])
        }, None
    columns = {k: np.array([it[k] for it in valid], float) for k in ("win", "tie", "lose")}
    draws = cluster_bootstrap([it["cluster"] for it in valid], columns, n_boot, rng_for(seed, label))
    for k, v in columns.items():
        out[k] = float(v.mean())
        out[f"{k}_ci"] = interval(draws[k])
    out["sign_test"] = sign_test(valid)
    out["prompt_sign_test"] = prompt_sign_test(valid)
    if all("seed" in it for it in valid):  # the win and lose rates across training seeds, as for score differences
        out["win_seeds"] = across_seeds(valid, lambda it: it["win"])
        out["lose_seeds"] = across_seeds(valid, lambda it: it["lose"])
    return out, draws["win"]


def prompt_sign_test(items: list[dict], key=lambda it: it["win"] - it["lose"]) -> dict:
    """Two-sided sign test over prompts: each prompt's items (its seeds) are averaged first, so seeds of one prompt
    count once, not as independent observations; prompts whose mean is 0 are left out."""
    per_prompt: dict = {}
    for it in items:
        per_prompt.setdefault(it["cluster"], []).append(key(it))
    means = [sum(v) / len(v) for v in per_prompt.values()]
    wins, losses = sum(m > 0 for m in means), sum(m < 0 for m in means)
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"wins": wins, "losses": losses, "p": float(p), "n_prompts": len(means)}


def across_seeds(items: list[dict], key) -> dict:
    """Each training seed's mean of ``key(item)`` over its items, their mean, and a 95 % t-interval over seeds (None
    with fewer than 2 seeds): the spread from retraining, which resampling prompts does not see."""
    per_seed: dict = {}
    for it in items:
        per_seed.setdefault(it["seed"], []).append(key(it))
    seeds = sorted(per_seed)
    means = np.array([np.mean(per_seed[s]) for s in seeds], float)
    out = {"k": len(means), "per_seed": {str(s): float(m) for s, m in zip(seeds, means)}}
    out["mean"] = float(means.mean()) if len(means) else None
    out["ci"] = None
    if len(means) >= 2:
        half = float(student_t.ppf((1 + LEVEL) / 2, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means)))
        out["ci"] = [out["mean"] - half, out["mean"] + half]
    return out


def welch_difference(a: dict, b: dict) -> dict | None:
    """``a - b`` for two groups of runs given as ``{"mean", "sd", "n"}`` (unpaired: seeds of different methods), with
    a 95 % Welch t-interval (None unless both have 2 or more runs); None where a mean is missing."""
    if not a or not b or a.get("mean") is None or b.get("mean") is None:
        return None
    out = {"diff": a["mean"] - b["mean"], "ci": None, "df": None}
    if a.get("n", 0) >= 2 and b.get("n", 0) >= 2 and a.get("sd") is not None and b.get("sd") is not None:
        va, vb = a["sd"] ** 2 / a["n"], b["sd"] ** 2 / b["n"]
        out["ci"] = [out["diff"], out["diff"]]  # no spread in either group: the difference is exact
        if va + vb > 0:
            df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
            half = float(student_t.ppf((1 + LEVEL) / 2, df) * np.sqrt(va + vb))
            out |= {"ci": [out["diff"] - half, out["diff"] + half], "df": float(df)}
    return out


def score_difference(items: list[dict], label: str, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Paired A - B difference of a score judge's scores (the primary metric of a gold judge): the mean over items
    with a 95 % CI from resampling prompts (all seeds of a prompt together), both methods' means, the sign test over
    prompts and, where items name their seed, the difference across seeds (``across_seeds``). None when the judge
    gives no scores."""
    scored = [it for it in items if it.get("score_a") is not None and it.get("score_b") is not None]
    if not scored:
        return None
    a, b = (np.array([it[k] for it in scored], float) for k in ("score_a", "score_b"))
    draws = cluster_bootstrap([it["cluster"] for it in scored], {"d": a - b}, n_boot, rng_for(seed, "diff/" + label))
    out = {
        "n": len(scored),
        "n_prompts": len({it["cluster"] for it in scored}),
        "a": float(a.mean()),
        "b": float(b.mean()),
        "diff": float((a - b).mean()),
        "diff_ci": interval(draws["d"]),
        "prompt_sign_test": prompt_sign_test(scored, key=lambda it: it["score_a"] - it["score_b"]),
    }
    if all("seed" in it for it in scored):
        out["across_seeds"] = across_seeds(scored, lambda it: it["score_a"] - it["score_b"])
    return out


def gap(
    draws_id: np.ndarray | None, draws_ood: np.ndarray | None, win_id: float | None, win_ood: float | None
) -> dict | None:
    """ID - OOD win rate, with a CI from the two (independent) bootstrap streams."""
    if draws_id is None or draws_ood is None:
        return None
    return {"win": win_id - win_ood, "ci": interval(draws_id - draws_ood)}


def mean_ci(values: list[float], clusters: list, label: str, n_boot: int = 2000, seed: int = 0) -> dict:
    if not values:
        return {"n": 0, "mean": None, "ci": None}
    draws = cluster_bootstrap(clusters, {"x": np.array(values, float)}, n_boot, rng_for(seed, label))["x"]
    return {"n": len(values), "mean": float(np.mean(values)), "ci": interval(draws)}


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def health(items: list[dict]) -> dict:
    """How trustworthy the judge looks on these items (identical pairs, which it never saw, are left out).

    position_flip_rate: pairs whose two orders, mapped back to the methods, disagree (both orders valid);
    first_position_win_rate: decisive verdicts (not a tie) that picked the response shown first (0.5 = no bias);
    longer_wins_rate: decisive verdicts between responses of different length won by the longer one;
    invalid_rate: orders without a readable verdict after the reminder.
    """
    judged = [it for it in items if not it.get("identical")]
    orders = [(it, o) for it in judged for o in it["orders"]]
    valid = [(it, o) for it, o in orders if o["outcome"] != "invalid"]
    both = [it for it in judged if all(o["outcome"] != "invalid" for o in it["orders"])]
    flips = sum(1 for it in both if len({o["outcome"] for o in it["orders"]}) > 1)
    decisive = [(it, o) for it, o in valid if o["outcome"] in ("a", "b")]
    first = sum(1 for _, o in decisive if o["verdict"] == "A")
    uneven = [(it, o) for it, o in decisive if it["length_a"] != it["length_b"]]
    longer = sum(1 for it, o in uneven if o["outcome"] == ("a" if it["length_a"] > it["length_b"] else "b"))
    return {
        "position_flip_rate": _rate(flips, len(both)),
        "first_position_win_rate": _rate(first, len(decisive)),
        "longer_wins_rate": _rate(longer, len(uneven)),
        "invalid_rate": _rate(len(orders) - len(valid), len(orders)),
        "n_orders": len(orders),
        "n_decisive": len(decisive),
    }


def summarise(items: list[dict], label: str, n_boot: int = 2000, seed: int = 0) -> tuple[dict, np.ndarray | None]:
    out, draws = rates(items, label, n_boot, seed)
    out["health"] = health(items)
    diff = score_difference(items, label, n_boot, seed)
    if diff is not None:
        out["score_difference"] = diff
    return out, draws
