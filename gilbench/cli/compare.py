"""``gilbench compare A B --task T --judge J``: judge method A against method B and print the table.

    gilbench compare gil ppo-kl --task chitchat-ood --judge openai:gpt-4o-mini --price-per-1k 0.00015,0.0006 --dry-run
    gilbench compare gil ppo-kl --task chitchat-ood --judge openai:llama3 --base-url http://127.0.0.1:8000/v1 --api-key-env VLLM_KEY
    gilbench compare gil ppo-kl --task chitchat-ood --judge hf:smollm2-135m
    gilbench compare gil ppo-kl --task chitchat-ood --judge rm:auto --tie-margin 0.1

A and B are method names; their runs are ``<output-dir>/<task>/<method>/seed<k>`` (default: every seed both have).
``rm:auto`` is the reward model run A was trained against (recomputed from its config.yaml, as the pipeline keys it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gilbench.cli.flags import (
    OUTPUT_DIR_HELP,
    add_include,
    add_judge_options,
    check_numbers,
    judge_options,
    parse_seeds,
)
from gilbench.errors import GilbenchError
from gilbench.store import DEFAULT_OUTPUT_DIR


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="judge method A against method B: win/tie/lose with CIs, in and out of distribution",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", help="method A (the one whose win rate is reported)")
    p.add_argument("b", help="method B, the opponent")
    p.add_argument("--task", required=True, help="registered task the runs were made on")
    p.add_argument(
        "--judge", required=True, help="openai:MODEL | hf:MODEL | rm:PATH|auto | any registered judge NAME[:ARG]"
    )
    p.add_argument(
        "--seed", default=None, help="seeds to pair: 0 | 0,1,2 | 0-4 (default: every seed both methods have)"
    )
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=OUTPUT_DIR_HELP)
    p.add_argument(
        "--dry-run", action="store_true", help="print the number of judge calls and their estimated cost; call nothing"
    )
    p.add_argument("--max-cost", type=float, default=None, help="stop before spending more than this many dollars")
    p.add_argument("--limit", type=int, default=None, help="judge only the first N prompts (by id) of each split")
    p.add_argument(
        "--split",
        action="append",
        default=None,
        metavar="NAME",
        help="judge only this split, e.g. the NAME of `gilbench generate` prompts (repeatable; default every shared split)",
    )
    add_judge_options(p)
    s = p.add_argument_group("statistics")
    s.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    s.add_argument("--boot-seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_include(p, " (judges too)")
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    from gilbench.eval.compare import compare
    from gilbench.eval.judges import JudgeContext, build_judge
    from gilbench.eval.runs import resolve_runs, seeds_on_disk

    if args.a == args.b:
        raise GilbenchError("compare needs two different methods")
    check_numbers(args)
    options = judge_options(args)
    seeds = parse_seeds(args.seed) if args.seed is not None else None
    if seeds is None:
        on_disk = [seeds_on_disk(args.output_dir, args.task, m) for m in (args.a, args.b)]
        seeds = sorted(set(on_disk[0]) & set(on_disk[1])) or None  # None: resolve_runs explains what is missing
        if seeds is None and all(on_disk):
            raise GilbenchError(f"{args.a} has seeds {on_disk[0]} and {args.b} has seeds {on_disk[1]}: none in common")
    runs_a = resolve_runs(args.output_dir, args.task, args.a, seeds)
    runs_b = resolve_runs(args.output_dir, args.task, args.b, seeds)
    ctx = JudgeContext(task=args.task, output_dir=Path(args.output_dir), run_dirs_a=runs_a, options=options)
    judge = build_judge(args.judge, ctx)
    results = compare(
        runs_a,
        runs_b,
        judge,
        policy=args.policy,
        concurrency=args.concurrency,
        dry_run=args.dry_run,
        limit=args.limit,
        max_cost=args.max_cost,
        n_boot=args.n_boot,
        boot_seed=args.boot_seed,
        splits=args.split,
    )
    print(format_plan(results) if args.dry_run else format_results(results))
    return 0


# ------------------------------------------------------------------------------------------ printing
def format_plan(plan: dict) -> str:
    price_in, price_out = plan["price_per_1k"]
    cost = (
        f"estimated cost ${plan['cost']:.4f} at ${price_in:g} / ${price_out:g} per 1k input / output tokens "
        f"(at most ${plan['cost_upper']:.4f} if every answer reaches max_tokens; answers needing the reminder add calls)"
    )
    if price_in == price_out == 0:
        cost = "cost unknown: pass --price-per-1k INPUT[,OUTPUT] for an estimate"
    return (
        f"dry run, {plan['a']} vs {plan['b']}, judge {plan['judge']['id']}: {plan['pairs']} pairs ({plan['identical_pairs']} identical, "
        f"no call); {plan['calls']} judge calls to make, {plan['cached_calls']} answered by the cache\n"
        f"~{plan['tokens_in']} input + ~{plan['tokens_out']} output tokens (characters / 4; 80 output tokens a call); {cost}"
    )


def _pct(x, ci=None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _row(split: str, group: str, s: dict) -> list:
    h = s["health"]
    p = s["sign_test"]["p"]
    return [
        split,
        group,
        s["n"],
        _pct(s["win"], s["win_ci"]),
        _pct(s["tie"], s["tie_ci"]),
        _pct(s["lose"], s["lose_ci"]),
        _lc(s.get("length_controlled")),
        f"{p:.3g}",
        _pct(h["position_flip_rate"]),
        _pct(h["first_position_win_rate"]),
        _pct(h["longer_wins_rate"]),
        _pct(h["invalid_rate"]),
    ]


def _lc(lc: dict | None) -> str:
    if not lc:
        return "-"
    ci = lc["lc_win_ci"]
    return f"{100 * lc['raw_preference']:.1f} -> {100 * lc['lc_win']:.1f}" + (
        f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
    )


def format_results(r: dict) -> str:
    from tabulate import tabulate

    rows = []
    for s in r["splits"]:
        rows.append(_row(s["split"], "all", s))
        if len(s["groups"]) > 1:
            rows.extend(_row("", g, gs) for g, gs in s["groups"].items())
    pooled = len(r["splits"]) > len(r["distributions"])  # some distribution has several splits
    if pooled:
        rows.extend(_row(f"{d.upper()} (all)", "all", ds) for d, ds in r["distributions"].items())
    headers = [
        "split",
        "group",
        "N",
        f"{r['a']} wins %",
        "tie %",
        f"{r['b']} wins %",
        "pref % -> LC %",
        "p (sign)",
        "flip %",
        "1st-pos %",
        "longer %",
        "invalid %",
    ]
    j = r["judge"]
    lines = [
        f"== {r['a']} vs {r['b']} on {r.get('task', '?')}: judge {j['id']}, policy {r['policy']}, seeds {r['seeds']}, "
        f"{r['n_items']} pairs ({r['n_identical']} identical) ==",
        tabulate(rows, headers=headers, disable_numparse=True),
        f"95 % CIs: {r['bootstrap']['n_boot']} bootstrap resamples of prompts (seed {r['bootstrap']['seed']}); p: two-sided sign test "
        "on pairs won vs lost; pref: wins + half the ties, LC: the same at equal lengths (logistic regression on the "
        "length difference); health: position flips, first-shown wins, longer wins (decisive verdicts), unreadable verdicts.",
    ]
    for s in r["splits"]:
        if s["worst_group"]:
            w = s["worst_group"]
            lines.append(f"worst group in {s['split']}: {w['group']} ({r['a']} wins {_pct(w['win'])} %, N={w['n']})")
    for label, e in [(s["split"], s) for s in r["splits"]] + [
        (f"{d.upper()} (all)", e) for d, e in r["distributions"].items()
    ]:
        d = e.get("score_difference")
        if d:
            st = d["prompt_sign_test"]
            lines.append(
                f"judge score {label}: {r['a']} {d['a']:.3f}, {r['b']} {d['b']:.3f}, paired difference {d['diff']:+.3f} "
                f"[{d['diff_ci'][0]:+.3f}, {d['diff_ci'][1]:+.3f}] (N={d['n']}, {d['n_prompts']} prompts; "
                f"sign test over prompts {st['wins']}/{st['losses']}, p={st['p']:.3g})"
            )
            seeds = d.get("across_seeds")
            if seeds and seeds["ci"]:
                per_seed = ", ".join(f"{v:+.3f}" for v in seeds["per_seed"].values())
                lines.append(
                    f"  over {seeds['k']} training seeds ({per_seed}): {seeds['mean']:+.3f} "
                    f"[{seeds['ci'][0]:+.3f}, {seeds['ci'][1]:+.3f}] (t-interval: what retraining would give)"
                )
        w = e.get("worst_group_score")
        if w:
            lines.append(
                f"worst group by judge score {label}: {r['a']} {w['a']['group']} {w['a']['score']:.3f}, "
                f"{r['b']} {w['b']['group']} {w['b']['score']:.3f}"
            )
    gap = r["gap_id_minus_ood"]
    if gap:
        lines.append(
            f"ID - OOD gap of the {r['a']} win rate: {100 * gap['win']:+.1f} points [{100 * gap['ci'][0]:+.1f}, {100 * gap['ci'][1]:+.1f}]"
        )
    rm = r["reward_model_score"]
    views = list(rm["splits"].items()) + (
        [(f"{d.upper()} (all)", e) for d, e in rm["distributions"].items()] if pooled else []
    )
    rm_rows = [[label, _mean(e["a"]), _mean(e["b"])] for label, e in views if e["a"]["n"] or e["b"]["n"]]
    if rm_rows:
        lines += [
            "",
            "mean reward-model score (each run's own reward model, paired prompts) [95 % CI]:",
            tabulate(rm_rows, headers=["split", r["a"], r["b"]], disable_numparse=True),
        ]
    calls = r["calls"]
    lines.append(
        f"\njudge calls made {calls['made']}, answered from the cache {calls['cached']}, cost ${calls['cost']:.4f}; "
        f"written to {r['out_dir']}"
    )
    return "\n".join(lines)


def _mean(e: dict) -> str:
    return "-" if e["mean"] is None else f"{e['mean']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}] (n={e['n']})"
