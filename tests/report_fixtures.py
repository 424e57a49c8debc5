"""Synthetic stored results in exactly the formats the real code writes, for the report and sweep tests.

Run folders go through the real writers: ``MetricsLog.append`` (rows with the trainer's metric names),
``pipeline.build_summary`` (summary.json) and ``compare.aggregate`` on judged records shaped like
``compare.judge_item``'s (results.json, with the fields ``compare.compare`` adds). No model is trained.

    python tests/report_fixtures.py OUT   # a demo store in OUT/runs and its plots in OUT/plots
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from pathlib import Path

from gilbench import registry
from gilbench.config import build_method_config
from gilbench.eval.compare import aggregate
from gilbench.files import MetricsLog, atomic_write_json, atomic_write_text, atomic_write_yaml, dumps, mark_done
from gilbench.resolve import config_for_method
from gilbench.store import RunStore

TASK = "chitchat-ood"
SPLITS = (("id:test", "id"), ("ood:hypotheticals", "ood"), ("ood:chatterbot", "ood"))
GROUPS = ("computers", "personal")


def curve(
    steps: int = 40,
    seed: int = 0,
    collapse: str | None = None,
    at: int = 25,
    groups: int = 0,
    lift: float = 0.5,
    kl_scale: float = 3.0,
) -> list[dict]:
    """Per-step rows like RLMethod.iteration's: healthy (score up, KL saturating) unless ``collapse`` names one of
    length | repetition | kl | kl_superlinear, which starts at step ``at``. ``groups`` > 0 adds GIL's group metrics."""
    rng = random.Random(seed)
    rows = []
    swap = seed % 2 == 1  # group numbers are arbitrary per run
    for t in range(1, steps + 1):
        score = 0.2 + lift * (1 - math.exp(-t / 15)) + rng.gauss(0, 0.02)
        kl = kl_scale * (1 - math.exp(-t / 20)) + abs(rng.gauss(0, 0.05))
        length, rep = 20 + rng.gauss(0, 0.8), 0.05 + abs(rng.gauss(0, 0.01))
        if collapse == "length" and t >= at:
            length *= 3
        if collapse == "repetition" and t >= at:
            rep = 0.8
        if collapse == "kl" and t >= at:
            kl = 25.0 + t
        if collapse == "kl_superlinear" and t >= at:
            kl += 0.5 * (t - at) ** 2
        row = {
            "step": t,
            "samples": 8 * t,
            "objective/score": score,
            "objective/kl": kl,
            "objective/rlhf_reward": score - 0.05 * kl,
            "objective/entropy": 2.0 - 0.01 * t + rng.gauss(0, 0.01),
            "objective/kl_coef": 0.05,
            "val/explained_var": min(0.9, 0.1 + 0.02 * t) if t > 1 else None,
            "completions/mean_length": length,
            "completions/eos_rate": 0.9,
            "completions/repetition_rate": rep,
            "loss/policy": -0.01,
            "loss/value": 0.1,
            "policy/approx_kl": 0.01,
            "policy/clipfrac": 0.1,
            "policy/ratio_mean": 1.0,
            "val/clipfrac": 0.05,
            "time/rollout": 0.5,
            "time/update": 0.5,
            "time/step": 1.0,
            "throughput/tokens_per_s": 160.0,
        }
        if groups:
            gap = 0.6 * math.exp(-t / 30)
            scores = [score + gap / 2, score - gap / 2][:: -1 if swap else 1]
            for g, s in enumerate(scores):
                row.update(
                    {f"group/{g}/mass": 0.5, f"group/{g}/score": s, f"group/{g}/kl": kl, f"group/{g}/length": length}
                )
            row.update(
                {
                    "group/variance": gap**2 / 4,
                    "group/worst": min(scores),
                    "group/gap": gap,
                    "loss/group": -(gap**2) / 4,
                    "group/nmi": min(0.6, 0.02 * t),
                    "group/purity": min(0.85, 0.5 + 0.01 * t),
                    "loss/invariance": 0.001,
                    "gil/negative_weight": float(t % 4 == 0),  # a quarter of the steps
                }
            )
        rows.append(row)
    return rows


def write_run(
    root: Path,
    task: str,
    method: str,
    seed: int,
    rows: list[dict],
    eval_means: dict[str, float] | None = None,
    n_eval: int = 16,
) -> Path:
    """A finished run: config.yaml, metrics.jsonl, generations/, policy/DONE, summary.json (pipeline.build_summary)."""
    from gilbench.pipeline import build_summary
    from gilbench.stages.generate import summarise_scores

    name = method
    method, variant = name.split("@", 1) if "@" in name else (name, "")  # a variant: <method>@<variant>
    cfg = config_for_method(method, task=task, seed=seed, output_dir=str(root))
    cfg.variant = variant
    method_cfg = build_method_config(registry.methods.get(method).Config, cfg.method_args, method)
    out = RunStore(root).run(task, name, seed).path
    atomic_write_yaml(
        out / "config.yaml", asdict(cfg) | {"method_args": asdict(method_cfg) if method_cfg is not None else {}}
    )
    log = MetricsLog(out / "metrics.jsonl")
    for row in rows:
        log.append(row)
    rng, evals = random.Random(f"{method}/{seed}"), {}
    for split, dist in SPLITS:
        mean = (eval_means or {}).get(dist, 0.3)
        gens = [
            {
                "id": f"p{i}",
                "prompt": f"Question {i} of {split}?",
                "response": f"answer {i}",
                "length": 5,
                "group": GROUPS[i % 2],
                "rm_score": mean + rng.gauss(0, 0.1),
                "split": split,
                "distribution": dist,
                "method": name,
                "seed": seed,
            }
            for i in range(n_eval)
        ]
        atomic_write_text(
            out / "generations" / f"{split.replace(':', '_')}.jsonl", "".join(dumps(g) + "\n" for g in gens)
        )
        evals[split] = summarise_scores([g["rm_score"] for g in gens]) | {"distribution": dist, "mean_length": 5.0}
    (out / "policy").mkdir(exist_ok=True)
    mark_done(out / "policy")
    rm = {"rm/val_accuracy": 0.75, "rm/val_pairs": 40, "rm/backbone": "tiny"}
    atomic_write_json(out / "summary.json", build_summary(cfg, out, {"sft/loss": 1.0}, rm, evals, 0.0))
    return out


def _order(order: str, outcome: str) -> dict:
    verdict = {"tie": "C", "a": "A" if order == "ab" else "B", "b": "B" if order == "ab" else "A"}[outcome]
    return {
        "order": order,
        "verdict": verdict,
        "outcome": outcome,
        "raw": [f"[[{verdict}]]"],
        "attempts": 1,
        "cached": False,
        "calls": 1,
        "cost": 0.0,
    }


def write_compare(
    root: Path,
    task: str,
    a: str,
    b: str,
    p_win: dict[str, float],
    seeds=(0, 1, 2),
    judge: str = "gold-v1",
    n: int = 24,
    n_boot: int = 200,
    scores: bool = False,
) -> dict:
    """``<root>/<task>/compare/<a>_vs_<b>/<judge>/results.json`` from judged pairs; ``p_win`` per distribution;
    ``scores``: a score judge's scores too, A ahead by 0.1 more with each seed."""
    rng, records = random.Random(f"{a}/{b}/{judge}"), []
    for seed in seeds:
        for split, dist in SPLITS:
            for i in range(n):
                u = rng.random()
                outcome = "a" if u < p_win[dist] else "tie" if u < p_win[dist] + 0.2 else "b"
                orders = [_order("ab", outcome), _order("ba", outcome if rng.random() > 0.1 else "tie")]
                item = {
                    "item": f"{split}/p{i}/seed{seed}",
                    "split": split,
                    "id": f"p{i}",
                    "seed": seed,
                    "prompt": f"Question {i} of {split}?",
                    "group": GROUPS[i % 2],
                    "distribution": dist,
                    "response_a": f"a{i}",
                    "response_b": f"b{i}",
                    "identical": False,
                    "length_a": 5 + i % 3,
                    "length_b": 5,
                    "rm_score_a": 0.3 + 0.01 * i,
                    "rm_score_b": 0.25 + 0.01 * i,
                }
                if scores:
                    item |= {"score_a": 1.0 + 0.1 * seed + 0.01 * i, "score_b": 1.0 + 0.02 * (i % 5)}
                outs = [o["outcome"] for o in orders]
                combined = outs[0] if len(set(outs)) == 1 else "tie"
                records.append(
                    {
                        **item,
                        "orders": orders,
                        "policy": "conservative",
                        "outcome": combined,
                        "win": float(combined == "a"),
                        "tie": float(combined == "tie"),
                        "lose": float(combined == "b"),
                        "attempts": 2,
                        "calls": 2,
                        "cached": False,
                        "cost": 0.0,
                    }
                )
    out_dir = Path(root) / task / "compare" / f"{a}_vs_{b}" / judge
    results = aggregate(records, a, b, n_boot, 0)
    results.update(
        task=task,
        judge={"id": judge, "class": "ScoreJudge"},
        policy="conservative",
        unmatched={"only_a": 0, "only_b": 0},
        out_dir=str(out_dir),
        seeds=sorted(seeds),
        runs_a=[str(RunStore(root).run(task, a, s).path) for s in seeds],
        runs_b=[str(RunStore(root).run(task, b, s).path) for s in seeds],
    )
    atomic_write_text(out_dir / "judgments.jsonl", "".join(dumps(r, sort_keys=True) + "\n" for r in records))
    atomic_write_json(out_dir / "results.json", results)
    return results


def make_store(root: Path, seeds=(0, 1, 2), steps: int = 40) -> Path:
    """A run store with every baseline, GIL and two ablations (no gil-oracle), and comparisons with some left out:
    gil vs dpo is missing, gil vs ppo-ptx is stored the other way round (ppo-ptx_vs_gil)."""
    root = Path(root)
    plan = {
        "sft": (0, 0, 0),
        "ppo": (0, 0.55, 8.0),
        "ppo-kl": (0, 0.45, 3.0),
        "ppo-ptx": (0, 0.42, 2.8),
        "dpo": (0, 0, 0),
        "gil": (2, 0.5, 2.5),
        "gil-fixed-kl": (2, 0.47, 3.2),
        "gil-no-inv": (2, 0.46, 2.6),
    }  # groups, score lift, KL scale
    for method, (groups, lift, kl_scale) in plan.items():
        for seed in seeds:
            if method in ("sft", "dpo"):
                rows = (
                    []
                    if method == "sft"
                    else [{"step": t, "epoch": 0, "loss/dpo": 0.69 - 0.01 * t, "time/step": 1.0} for t in range(1, 11)]
                )
            else:
                rows = curve(
                    steps,
                    seed + 10 * len(method),
                    "length" if method == "ppo" and seed == 0 else None,
                    groups=groups,
                    lift=lift,
                    kl_scale=kl_scale,
                )
            run = write_run(root, TASK, method, seed, rows, {"id": 0.3 + 0.05 * groups, "ood": 0.2 + 0.08 * groups})
            if method in (
                "gil",
                "ppo",
            ):  # judge curves (gilbench judge-curve): PPO's win rate falls as its score climbs
                fall = 0.25 if method == "ppo" else 0.0
                points = [
                    {
                        "step": t,
                        "win": 0.5 + 0.1 * t / steps - fall * (t / steps) ** 2,
                        "tie": 0.1,
                        "rm_score": lift * t / steps,
                        "judge": "gold-test",
                        "first_step": t - steps // 4 + 1,
                        "judge_score": 0.9 + 0.4 * t / steps - (fall + 0.1) * 2 * (t / steps) ** 2,
                        "reference_judge_score": 0.9,
                        "judge_score_groups": {"computers": 1.0 + 0.1 * t / steps, "personal": 0.7},
                    }
                    for t in range(steps // 4, steps + 1, steps // 4)
                ]
                atomic_write_text(run / "judge_curve.jsonl", "".join(dumps(p, sort_keys=True) + "\n" for p in points))
    for b, p in (("sft", 0.6), ("ppo", 0.5), ("ppo-kl", 0.4)):
        write_compare(root, TASK, "gil", b, {"id": p, "ood": p + 0.08}, seeds)
    write_compare(root, TASK, "ppo-ptx", "gil", {"id": 0.3, "ood": 0.25}, seeds)
    for m, p in (("gil-fixed-kl", 0.35), ("gil-no-inv", 0.3)):
        write_compare(root, TASK, m, "ppo-kl", {"id": p, "ood": p}, seeds)
    return root


if __name__ == "__main__":
    import sys

    from gilbench.report.plots import make_plots

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gilbench-report-demo")
    make_store(out / "runs")
    for path in make_plots(out / "runs", TASK, out_dir=out / "plots"):
        print(path)
