"""How far does the gold score fall from its peak along training, once the peak is not picked on the same samples?

    python benchmarks/gold_fall.py results/runs/qa-chat/ppo/seed* results/runs/qa-chat/ppo-kl@kl0.01/seed* [--window 10]

A judge curve's peak is the best of a dozen noisy windows, so "peak - end" is biased upwards even for a flat curve
(160 samples a window, gold SD ~0.3: the best of 12 flat windows sits ~0.04 above their mean). Here each run's
logged samples (rollouts.jsonl) are scored with the qa-chat gold function and cross-fitted: the samples of every
step are split in two halves at random, the peak window is picked on one half and measured on the other, and the
two directions and 200 random splits are averaged. ``fall`` = the held-out half's gold at the picked peak minus at
the last window: ~0 for a flat curve, the drop itself for a real one. 95 % CIs resample prompts (every sample of a
prompt together). Per-window means are checked against the stored judge_curve.jsonl when it has this gold.
Prints one line per run and, per method (the runs' parent folder), the mean +- SD over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from gilbench.data.qachat_gold import GOLD_VERSION, GoldFunction, judge_gold_function
from gilbench.eval.judge_curve import JUDGE_CURVE, read_rollouts, windows
from gilbench.eval.runs import load_run_config

SPLITS = 200


def cross_fitted(gold, window_of, step_of, unit_of, rng: np.random.Generator, splits: int = SPLITS) -> tuple:
    """(naive peak - end, cross-fitted peak - end, cross-fitted peak - first window), averaged over random splits.

    ``unit_of``: the logged sample each entry is (a bootstrap draw repeats some); copies go to the same half."""
    n_windows = window_of.max() + 1

    def window_means(mask: np.ndarray) -> np.ndarray:
        counts = np.bincount(window_of[mask], minlength=n_windows)
        return np.bincount(window_of[mask], weights=gold[mask], minlength=n_windows) / np.maximum(counts, 1)

    means = window_means(np.ones(len(gold), dtype=bool))
    fall, rise = [], []
    for _ in range(splits):
        chosen = []
        for s in np.unique(step_of):  # half of each step's samples, so both halves see every step
            units = np.unique(unit_of[step_of == s])
            chosen.append(rng.permutation(units)[: len(units) // 2])
        half = np.isin(unit_of, np.concatenate(chosen))
        for pick, hold in ((half, ~half), (~half, half)):
            peak, held = int(window_means(pick).argmax()), window_means(hold)
            fall.append(held[peak] - held[-1])
            rise.append(held[peak] - held[0])
    return means.max() - means[-1], float(np.mean(fall)), float(np.mean(rise))


def refuse(message: str) -> None:
    print(f"gold_fall: {message}", file=sys.stderr)
    sys.exit(2)


def run_fall(run: Path, gold_fn: GoldFunction, window: int, n_boot: int, seed: int) -> dict:
    task = load_run_config(run).task
    if task != "qa-chat":
        refuse(f"{run} is a {task} run; this script scores with the qa-chat gold function only: pass qa-chat runs")
    rows = read_rollouts(run)
    steps = sorted({r["step"] for r in rows})
    window_index = {s: i for i, group in enumerate(windows(steps, window)) for s in group}
    gold = np.array(gold_fn.score([r["prompt"] for r in rows], [r["response"].strip() for r in rows]))
    window_of = np.array([window_index[r["step"]] for r in rows])
    step_of = np.array([r["step"] for r in rows])
    curve_file = run / JUDGE_CURVE
    if curve_file.exists():  # the stored curve must agree, or this is not the gold it was judged with
        stored = [json.loads(line) for line in curve_file.read_text().splitlines() if line.strip()]
        mine = np.bincount(window_of, weights=gold) / np.bincount(window_of)
        if all(p["judge"] == f"gold-{GOLD_VERSION}" for p in stored):
            if len(stored) != len(mine):
                size = stored[0]["step"] - stored[0]["first_step"] + 1
                refuse(f"{run}: its {JUDGE_CURVE} has windows of {size} steps, not {window}: pass --window {size}")
            worst = max(abs(p["judge_score"] - m) for p, m in zip(stored, mine))
            if worst > 1e-3:
                refuse(f"{run}: window gold differs from {JUDGE_CURVE} by {worst:.4f}; pass its window as --window")
    rng = np.random.default_rng(seed)
    naive, fall, rise = cross_fitted(gold, window_of, step_of, np.arange(len(rows)), rng)
    prompts = np.array([r["prompt_id"] for r in rows])
    ids = np.unique(prompts)
    members = {p: np.flatnonzero(prompts == p) for p in ids}
    draws = []
    # resample prompts with all their samples; 4 splits a draw (their noise widens the CI a little)
    for _ in range(n_boot):
        idx = np.concatenate([members[p] for p in rng.choice(ids, size=len(ids))])
        if len(np.unique(window_of[idx])) < window_of.max() + 1:
            continue
        _, f, _ = cross_fitted(gold[idx], window_of[idx], step_of[idx], idx, rng, splits=4)
        draws.append(f)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"run": str(run), "naive": naive, "fall": fall, "lo": lo, "hi": hi, "rise": rise, "n": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--window", type=int, default=10, help="steps per window (the study's judge curves: 10)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    gold_fn = judge_gold_function()
    by_method = defaultdict(list)
    for run in args.runs:
        r = run_fall(run, gold_fn, args.window, args.n_boot, args.seed)
        by_method[run.parent.name].append(r)
        print(
            f"{run}: peak - end naive {r['naive']:+.3f}, cross-fitted {r['fall']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}];"
            f" cross-fitted peak - first window {r['rise']:+.3f} ({r['n']} samples)",
            flush=True,
        )
    for method, rs in by_method.items():
        falls, naive = [r["fall"] for r in rs], [r["naive"] for r in rs]
        sd = f" +- {statistics.stdev(falls):.3f}" if len(falls) > 1 else ""  # no spread from one seed
        print(
            f"{method}: {len(rs)} seed{'s' if len(rs) > 1 else ''}, peak - end cross-fitted {statistics.mean(falls):+.3f}{sd} "
            f"(naive {statistics.mean(naive):+.3f}); seeds with a fall whose CI excludes 0: "
            f"{sum(r['lo'] > 0 for r in rs)}/{len(rs)}"
        )


if __name__ == "__main__":
    main()
