"""``gilbench judge-curve RUN...``: a judge's view of the policy while it trained (see gilbench/eval/judge_curve.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gilbench.cli.flags import add_include, add_judge_options, check_numbers, judge_options
from gilbench.cli.run import main_run
from gilbench.errors import GilbenchError
from gilbench.eval import judge_curve as jc
from gilbench.store import DEFAULT_OUTPUT_DIR, ROLLOUTS


def add_judge_curve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "judge-curve",
        help="judge an RL run's samples along training against its starting policy",
        description=jc.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs",
        nargs="+",
        help="run folders (<output-dir>/<task>/<method>/seed<k>); folders without rollouts.jsonl are skipped",
    )
    p.add_argument(
        "--judge", required=True, help="gold | rm:auto | openai:MODEL | hf:MODEL | any registered judge NAME[:ARG]"
    )
    p.add_argument(
        "--window", type=int, default=None, help="logged steps pooled into one point (default: about 8 points a run)"
    )
    p.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help=f"run store root, for the SFT and reference caches (default {DEFAULT_OUTPUT_DIR})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="judge again runs whose stored curve is up to date (default: skip them)",
    )
    add_judge_options(p)
    add_include(p, " (judges too)")
    p.set_defaults(func=cmd_judge_curve)
    return p


def cmd_judge_curve(args: argparse.Namespace) -> int:
    from gilbench.eval.judges import JudgeContext, build_judge
    from gilbench.eval.runs import load_run_config
    from gilbench.pipeline import quiet_transformers

    check_numbers(args)
    quiet_transformers()
    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise GilbenchError(f"not a run folder: {', '.join(missing)}")
    with_rollouts = [r for r in runs if (r / ROLLOUTS).exists()]
    for r in sorted(set(runs) - set(with_rollouts)):
        print(f"[gilbench] skipped {r}: no {ROLLOUTS} (not an RL run, or made before samples were logged)")
    if not with_rollouts:
        jc.read_rollouts(runs[0])  # raises the full explanation
    options = judge_options(args)
    for run in with_rollouts:
        ctx = JudgeContext(
            task=load_run_config(run).task, output_dir=Path(args.output_dir), run_dirs_a=[run], options=options
        )
        judge = build_judge(args.judge, ctx)
        if not args.overwrite and jc.curve_is_current(run, judge.id, args.window, args.policy):
            print(
                f"[gilbench] skipped {run}: its {jc.JUDGE_CURVE} is up to date for {judge.id} (--overwrite judges it again)"
            )
            continue
        curve = jc.judge_curve(
            run,
            judge,
            output_dir=args.output_dir,
            window=args.window,
            policy=args.policy,
            concurrency=args.concurrency,
        )
        wins = " ".join(
            f"{p['step']}:{100 * p['win']:.0f}%" if p["win"] is not None else f"{p['step']}:-" for p in curve
        )
        print(f"[gilbench] {run}: win rate against the starting policy by step {wins} -> {run / jc.JUDGE_CURVE}")
    return 0


def main_judge_curve(argv: list[str]) -> int:
    """`gilbench judge-curve ...` in this process (argv starts with "judge-curve"); exit status as the CLI's."""
    from gilbench.cli.flags import run_command

    parser = argparse.ArgumentParser(prog="gilbench")
    add_judge_curve_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return run_command(args, args.func)


def run_then_judge(argv: list[str], judge_curve: list[str]) -> int:
    """`gilbench run`, then (if it succeeded and one is asked for) its judge curve, in this process (sweep's runs)."""
    rc = main_run(argv)
    return main_judge_curve(judge_curve) if rc == 0 and judge_curve else rc
