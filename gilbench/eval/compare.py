"""Compare two methods' generations with a judge: pair them, judge both orders, aggregate, write the results.

``compare(run_a_dirs, run_b_dirs, judge)`` pairs rows by (split, prompt id, seed), judges every pair in both orders
(concurrently, through the judge's cache, so a rerun makes no calls and a killed run resumes), and writes into
``out_dir`` (default ``<output_dir>/<task>/compare/<A>_vs_<B>/<judge id>/``):

* ``judgments.jsonl`` -- one line per pair: item id, split, group, both responses, each order's raw judge answers
  and verdict, the mapped outcome, attempts, cached or not, cost;
* ``results.json`` -- per eval split, per group and per distribution (ID / OOD): win / tie / lose of A with 95 %
  bootstrap CIs resampled by prompt, sign tests over pairs and over prompts, N, judge health; for score judges
  (gold) the paired score difference A - B with its CI and each group's lowest mean; per split and distribution the
  length-controlled preference rate (``gilbench.eval.length_control``); the ID - OOD win-rate gap; and
  each method's mean reward-model score (the runs' own ``rm_score``) with a CI.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from gilbench.errors import GilbenchError
from gilbench.eval import stats
from gilbench.eval.base import Judge
from gilbench.eval.client import CostMeter
from gilbench.eval.judges import ScoreJudge
from gilbench.eval.length_control import length_controlled
from gilbench.eval.protocol import ORDERS, POLICIES, combine, order_texts
from gilbench.eval.runs import load_generations, pair_generations
from gilbench.files import atomic_write_json, atomic_write_text, dumps


def judge_item(judge: Judge, item: dict, policy: str) -> dict:
    """Both orders of one pair, mapped back and combined by ``policy``; identical responses are a tie, no call."""
    a, b = item["response_a"], item["response_b"]
    if item["identical"]:
        orders = [
            {
                "order": o,
                "verdict": "C",
                "outcome": "tie",
                "raw": [],
                "attempts": 0,
                "cached": False,
                "calls": 0,
                "cost": 0.0,
            }
            for o in ORDERS
        ]
    else:
        orders = [asdict(judge.judge_order(item["prompt"], *order_texts(o, a, b), o)) for o in ORDERS]
    scores = {}
    if isinstance(judge, ScoreJudge):  # a score judge's scores are the finer measure: kept for paired differences
        scores = {"score_a": judge.score(item["prompt"], a), "score_b": judge.score(item["prompt"], b)}
    return {
        **item,
        **scores,
        "orders": orders,
        "policy": policy,
        **combine([o["outcome"] for o in orders], policy),
        "attempts": sum(o["attempts"] for o in orders),
        "calls": sum(o["calls"] for o in orders),
        "cached": not item["identical"] and all(o["cached"] for o in orders),
        "cost": sum(o["cost"] for o in orders),
    }


def plan(judge: Judge, items: list[dict], expected_output_tokens: int = 80) -> dict:
    """What a run would do: paid calls still needed (the cache answers the rest) and their estimated cost."""
    calls = cached = tokens_in = 0
    for item in items:
        for o in ORDERS if not item["identical"] else ():
            p = judge.plan(item["prompt"], *order_texts(o, item["response_a"], item["response_b"]), o)
            calls, tokens_in, cached = calls + p["calls"], tokens_in + p["tokens_in"], cached + p["cached"]
    identical = sum(item["identical"] for item in items)
    meter = getattr(judge, "meter", None) or CostMeter()
    max_tokens = getattr(judge, "max_tokens", expected_output_tokens)
    expected_output_tokens = min(expected_output_tokens, max_tokens)
    return {
        "pairs": len(items),
        "identical_pairs": identical,
        "calls": calls,
        "cached_calls": cached,
        "tokens_in": tokens_in,
        "tokens_out": calls * expected_output_tokens,
        "cost": meter.price(tokens_in, calls * expected_output_tokens),
        "cost_upper": meter.price(tokens_in, calls * max_tokens),
        "price_per_1k": [meter.price_in, meter.price_out],
    }


def run_judging(
    judge: Judge,
    items: list[dict],
    policy: str,
    concurrency: int = 8,
    on_item: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Judge every item with up to ``concurrency`` in flight; the first error cancels what has not started.
    The judge is checked, shown every (prompt, response) first (``prepare``) and closed at the end."""
    judge.check_ready()
    judge.prepare(sorted({(it["prompt"], it[k]) for it in items for k in ("response_a", "response_b")}))
    workers = max(1, min(concurrency, judge.max_concurrency or concurrency))
    records: dict[int, dict] = {}
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge")
    futures = {pool.submit(judge_item, judge, item, policy): i for i, item in enumerate(items)}
    try:
        with tqdm(
            total=len(items), desc=f"judging ({judge.id})", disable=not progress, dynamic_ncols=True, leave=False
        ) as bar:
            for future in cf.as_completed(futures):
                record = future.result()
                records[futures[future]] = record
                bar.update(1)
                if on_item is not None:
                    on_item(record)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # in-flight calls finish and land in the cache
        judge.close()
    return [records[i] for i in range(len(items))]


def compare(
    run_a_dirs: list[str | Path],
    run_b_dirs: list[str | Path],
    judge: Judge,
    *,
    policy: str = "conservative",
    concurrency: int = 8,
    out_dir: str | Path | None = None,
    dry_run: bool = False,
    max_cost: float | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
    log: Callable[[str], None] = print,
    on_item: Callable[[dict], None] | None = None,
    progress: bool = True,
    limit: int | None = None,
    splits: list[str] | None = None,
) -> dict:
    """Judge run A against run B; returns the results dict (or, with ``dry_run``, the plan) and writes both files.
    ``limit``: judge only the first N prompts (by id) of each split, e.g. for a slow or paid judge.
    ``splits``: judge only these splits (e.g. a prompt file's name from ``gilbench generate``); the default folder
    then ends in ``<judge id>@<split>+...`` so the full comparison's files are not replaced."""
    if policy not in POLICIES:
        raise GilbenchError(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    run_a_dirs, run_b_dirs = [Path(d) for d in run_a_dirs], [Path(d) for d in run_b_dirs]
    rows_a, rows_b = load_generations(run_a_dirs), load_generations(run_b_dirs)
    items, unmatched = pair_generations(rows_a, rows_b)
    if splits:
        missing = sorted(set(splits) - {it["split"] for it in items})
        if missing:
            raise GilbenchError(
                f"--split {', '.join(missing)}: no generations both runs share there "
                f"(shared splits: {', '.join(sorted({it['split'] for it in items})) or 'none'}); run `gilbench generate` on both"
            )
        items = [it for it in items if it["split"] in splits]
    if limit:
        keep = {
            split: sorted({it["id"] for it in items if it["split"] == split})[:limit]
            for split in {it["split"] for it in items}
        }
        items = [it for it in items if it["id"] in keep[it["split"]]]
    name_a, name_b = _method_name(rows_a, run_a_dirs), _method_name(rows_b, run_b_dirs)
    if not items:
        raise GilbenchError(
            f"no generations of {name_a} and {name_b} share a (split, prompt id, seed); nothing to compare"
        )
    if unmatched["only_a"] or unmatched["only_b"]:
        log(
            f"[gilbench] pairing: {len(items)} pairs; {unmatched['only_a']} rows only in {name_a}, {unmatched['only_b']} only in {name_b} (left out)"
        )
    judge.set_budget(max_cost)
    if dry_run:
        return {"dry_run": True, "a": name_a, "b": name_b, "judge": judge.describe(), **plan(judge, items)}
    records = run_judging(judge, items, policy, concurrency, on_item, progress)
    folder = judge.id + ("@" + "+".join(sorted(splits)) if splits else "")
    out_dir = Path(out_dir) if out_dir else run_a_dirs[0].parent.parent / "compare" / f"{name_a}_vs_{name_b}" / folder
    results = aggregate(records, name_a, name_b, n_boot, boot_seed)
    results.update(
        task=run_a_dirs[0].parent.parent.name,
        judge=judge.describe(),
        policy=policy,
        unmatched=unmatched,
        out_dir=str(out_dir),
        seeds=sorted({it["seed"] for it in items}),
        runs_a=[str(d) for d in run_a_dirs],
        runs_b=[str(d) for d in run_b_dirs],
    )
    atomic_write_text(out_dir / "judgments.jsonl", "".join(dumps(r, sort_keys=True) + "\n" for r in records))
    atomic_write_json(out_dir / "results.json", results)
    return results


def _method_name(rows: dict, dirs: list[Path]) -> str:
    names = {row.get("method") for row in rows.values()} - {None}
    return names.pop() if len(names) == 1 else dirs[0].parent.name


def _summary(items: list[dict], label: str, n_boot: int, seed: int, cluster_by_split: bool):
    for it in items:
        it["cluster"] = f"{it['split']}/{it['id']}" if cluster_by_split else it["id"]
    return stats.summarise(items, label, n_boot, seed)


def aggregate(records: list[dict], name_a: str, name_b: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Win / tie / lose with CIs, sign tests and health per split, group and distribution; gap; reward-model means."""
    items = [dict(r) for r in records]
    splits: dict[str, list[dict]] = {}
    for it in items:
        splits.setdefault(it["split"], []).append(it)
    split_rows = []
    for split, rows in splits.items():
        overall, _ = _summary(rows, split, n_boot, seed, False)
        overall["length_controlled"] = length_controlled(rows, split, n_boot, seed)
        groups = {}
        for group in sorted({it["group"] for it in rows}):
            groups[group], _ = _summary(
                [it for it in rows if it["group"] == group], f"{split}/{group}", n_boot, seed, False
            )
        scored = {g: s for g, s in groups.items() if s["win"] is not None}
        by_score = {g: s["score_difference"] for g, s in groups.items() if s.get("score_difference")}
        worst = min(scored, key=lambda g: (scored[g]["win"], -scored[g]["n"])) if len(scored) > 1 else None
        split_rows.append(
            {
                "split": split,
                "distribution": rows[0]["distribution"],
                **overall,
                "groups": groups,
                "worst_group": {"group": worst, "win": scored[worst]["win"], "n": scored[worst]["n"]}
                if worst
                else None,
                "worst_group_score": _worst_group_score(by_score),
            }
        )
    dists, draws = {}, {}
    for dist in sorted({it["distribution"] for it in items}):
        in_dist = [it for it in items if it["distribution"] == dist]
        dists[dist], draws[dist] = _summary(in_dist, f"dist/{dist}", n_boot, seed, True)
        dists[dist]["length_controlled"] = length_controlled(in_dist, f"dist/{dist}", n_boot, seed)
        if "score_difference" in dists[dist]:
            per_group = {
                g: stats.score_difference([it for it in in_dist if it["group"] == g], f"dist/{dist}/{g}", n_boot, seed)
                for g in sorted({it["group"] for it in in_dist})
            }
            dists[dist]["worst_group_score"] = _worst_group_score(per_group)
    gap = stats.gap(draws.get("id"), draws.get("ood"), dists.get("id", {}).get("win"), dists.get("ood", {}).get("win"))
    return {
        "a": name_a,
        "b": name_b,
        "n_items": len(items),
        "n_identical": sum(it["identical"] for it in items),
        "calls": {
            "made": sum(it["calls"] for it in items),
            "cached": sum(o["cached"] for it in items for o in it["orders"]),
            "cost": sum(it["cost"] for it in items),
        },
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": stats.LEVEL, "resampled_by": "prompt"},
        "splits": split_rows,
        "distributions": dists,
        "gap_id_minus_ood": gap,
        "reward_model_score": _reward_scores(items, name_a, name_b, n_boot, seed),
    }


def _worst_group_score(by_group: dict[str, dict]) -> dict | None:
    """Each method's lowest group mean of a score judge (the worst-group view of invariance), where groups differ."""
    by_group = {g: d for g, d in by_group.items() if d}
    if len(by_group) < 2:
        return None
    out = {}
    for side in ("a", "b"):
        g = min(by_group, key=lambda k: (by_group[k][side], k))
        out[side] = {"group": g, "score": by_group[g][side], "n": by_group[g]["n"]}
    return out


def _reward_scores(items: list[dict], name_a: str, name_b: str, n_boot: int, seed: int) -> dict:
    """Mean ``rm_score`` of each method (as scored by its own run's reward model) on the paired prompts, with a CI."""

    def entry(label: str, rows: list[dict]) -> dict:
        out = {}
        for side, name in (("a", name_a), ("b", name_b)):
            scored = [it for it in rows if it.get(f"rm_score_{side}") is not None]
            out[side] = {
                "method": name,
                **stats.mean_ci(
                    [it[f"rm_score_{side}"] for it in scored],
                    [f"{it['split']}/{it['id']}" for it in scored],
                    f"rm/{label}/{side}",
                    n_boot,
                    seed,
                ),
            }
        return out

    splits = dict.fromkeys(it["split"] for it in items)
    dists = sorted({it["distribution"] for it in items})
    return {
        "splits": {s: entry(s, [it for it in items if it["split"] == s]) for s in splits},
        "distributions": {d: entry(f"dist/{d}", [it for it in items if it["distribution"] == d]) for d in dists},
    }
