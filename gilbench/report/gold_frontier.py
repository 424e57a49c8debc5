"""Proxy vs gold along training (Gao et al. 2023): does the gold score peak and fall while the proxy keeps rising?

Reads each run's ``judge_curve.jsonl`` (``gilbench judge-curve RUN --judge <a score judge>``: the judge's mean
score of the run's own training samples per window of steps) and its per-step KL from ``metrics.jsonl``. A run's
*path* is one point per window: √KL (the mean sequence KL of the window's steps, in nats, square-rooted as in Gao
et al.), the gold score, the proxy (reward-model) score, and the gold score per prompt group; the starting policy,
judged on the same prompts, is the point at KL 0. From the path:

* peak: the window with the highest gold score (its step, gold, √KL); end: the last window; drop = peak − end;
  late: the mean of the last two windows (the beta_policy sweep's selection rule reads it, results/README.md);
* gold at matched KL: the path's gold score linearly interpolated at fixed √KL values (n/a if the run never got
  that far), so that methods that drift at different speeds are compared at equal distance from the start;
* group gap: highest minus lowest group's gold, in the first and last window; worst group: the lowest group's gold
  over the last two windows (the worst-group view of invariance).

``gilbench table --spec frontier`` shows these as mean ± SD across seeds; ``gilbench plot`` draws the paths
(gilbench/report/plots.py ``plot_gold_frontier``).
"""

from __future__ import annotations

import math

from gilbench.report import store
from gilbench.report.stability import mean_sd

SQRT_KL_POINTS = (1.0, 2.0, 3.0)  # default √KL values for gold at matched KL


def gold_path(metrics: list[dict], curve: list[dict] | None) -> list[dict]:
    """One point per judge-curve window that carries a judge score: step, sqrt_kl, gold, proxy, groups."""
    kl_at = {r["step"]: r.get("objective/kl") for r in metrics if r.get("step") is not None}
    path = []
    for p in curve or []:
        if p.get("judge_score") is None:
            continue
        kls = [v for s, v in kl_at.items() if p.get("first_step", p["step"]) <= s <= p["step"] and v is not None]
        kl = sum(kls) / len(kls) if kls else None
        path.append(
            {
                "step": p["step"],
                "sqrt_kl": math.sqrt(max(kl, 0.0)) if kl is not None else None,
                "gold": p["judge_score"],
                "proxy": p.get("rm_score"),
                "start_gold": p.get("reference_judge_score"),
                "groups": p.get("judge_score_groups") or {},
            }
        )
    return path


def gold_at(path: list[dict], sqrt_kl: float) -> float | None:
    """Gold score where the path first reaches ``sqrt_kl`` (linear between windows; the start is √KL 0)."""
    pts = [(0.0, start_gold(path))] + [(p["sqrt_kl"], p["gold"]) for p in path if p["sqrt_kl"] is not None]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if y0 is not None and x0 <= sqrt_kl <= x1:
            return y1 if x1 == x0 else y0 + (y1 - y0) * (sqrt_kl - x0) / (x1 - x0)
    return None


def start_gold(path: list[dict]) -> float | None:
    return _mean([p.get("start_gold") for p in path])


def _group_gap(point: dict) -> float | None:
    groups = point.get("groups") or {}
    return max(groups.values()) - min(groups.values()) if len(groups) > 1 else None


def _worst_group(point: dict) -> float | None:
    groups = point.get("groups") or {}
    return min(groups.values()) if groups else None


def summarise_path(path: list[dict], sqrt_kl_points=SQRT_KL_POINTS) -> dict | None:
    if not path:
        return None
    peak, end = max(path, key=lambda p: p["gold"]), path[-1]
    return {
        "start_gold": start_gold(path),
        "peak_gold": peak["gold"],
        "peak_step": peak["step"],
        "peak_sqrt_kl": peak["sqrt_kl"],
        "end_gold": end["gold"],
        "late_gold": sum(p["gold"] for p in path[-2:]) / len(path[-2:]),
        "end_proxy": end["proxy"],
        "end_sqrt_kl": end["sqrt_kl"],
        "drop": peak["gold"] - end["gold"],
        "gap_first": _group_gap(path[0]),
        "gap_end": _group_gap(end),
        "worst_late": _mean([_worst_group(p) for p in path[-2:]]),
        **{f"gold@{x:g}": gold_at(path, x) for x in sqrt_kl_points},
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def method_paths(output_dir, task: str, method: str) -> list[list[dict]]:
    """The gold path of each finished seed of a method that has a judge curve with scores."""
    paths = []
    for d in store.finished_seed_dirs(output_dir, task, method):
        path = gold_path(store.read_metrics(d), store.read_judge_curve(d))
        if path:
            paths.append(path)
    return paths


def summarise_method(paths: list[list[dict]], sqrt_kl_points=SQRT_KL_POINTS) -> dict | None:
    """Mean ± SD across seeds of each number of ``summarise_path``; None without paths."""
    runs = [s for s in (summarise_path(p, sqrt_kl_points) for p in paths) if s]
    if not runs:
        return None
    return {"n": len(runs), **{k: mean_sd([r[k] for r in runs]) for k in runs[0]}}
