"""``gilbench eval``: a trained run's policy on lm-evaluation-harness tasks (the bridge: gilbench/lm_eval_bridge.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gilbench import lm_eval_bridge as bridge
from gilbench.cli.flags import add_include


def parse_limit(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--limit expects a number of examples (or a fraction < 1), got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--limit must be > 0, got {text!r}")
    return value if value < 1 else int(value)


def parse_batch_size(text: str) -> int | str:
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-size expects an integer or 'auto', got {text!r}") from None


def cmd_lm_eval(args: argparse.Namespace) -> int:
    result = bridge.run_lm_eval(
        args.run,
        args.tasks.split(","),
        limit=args.limit,
        include_path=args.include_path,
        batch_size=args.batch_size,
        device=args.device,
        num_fewshot=args.num_fewshot,
        dtype=args.dtype,
        apply_chat_template=args.apply_chat_template,
        model_args=bridge.parse_model_args(args.model_args),
        seed=args.seed,
        output_path=args.output_path,
        log_samples=args.log_samples,
    )
    print(bridge.format_results(result))
    print(
        f"written to {result['gilbench']['output_path']} (lm-eval's layout) and {Path(args.run).expanduser() / bridge.RESULT_FILE}"
    )
    return 0


def add_lm_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``gilbench eval --tasks TASKS --run RUN_DIR ...`` (lm-eval's flag names) to the CLI's subparsers; returns that parser."""
    p = subparsers.add_parser(
        "eval",
        help="score a trained run's policy on lm-evaluation-harness tasks (needs gilbench[lm-eval])",
        description=bridge.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--tasks",
        "--lm-eval",
        dest="tasks",
        required=True,
        metavar="TASKS",
        help="comma-separated lm-eval task names, e.g. hellaswag,arc_easy",
    )
    p.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="a run folder holding policy/ (e.g. results/runs/hh/gil/seed0)"
    )
    p.add_argument(
        "--output_path",
        "--output-path",
        dest="output_path",
        default=None,
        metavar="DIR",
        help="where lm-eval's result files go (default RUN_DIR/lm_eval)",
    )
    p.add_argument(
        "--log_samples", "--log-samples", dest="log_samples", action="store_true", help="also write every scored sample"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of lm-eval's random, numpy, torch and few-shot sampling (default 0)"
    )
    p.add_argument(
        "--limit", type=parse_limit, default=None, help="examples per task (a fraction < 1: that share of each task)"
    )
    p.add_argument(
        "--include_path",
        "--include-path",
        dest="include_path",
        default=None,
        metavar="DIR",
        help="folder of extra lm-eval task YAMLs (e.g. over local files)",
    )
    p.add_argument(
        "--batch_size",
        "--batch-size",
        dest="batch_size",
        type=parse_batch_size,
        default=8,
        help="lm-eval batch size (or 'auto')",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if visible, else cpu)")
    p.add_argument(
        "--num_fewshot",
        "--num-fewshot",
        dest="num_fewshot",
        type=int,
        default=None,
        help="few-shot examples per prompt (default: each task's own)",
    )
    p.add_argument(
        "--model_args",
        "--model-args",
        dest="model_args",
        default=None,
        help="more HF model arguments: a JSON object or KEY=VALUE,... (pretrained is the run's policy)",
    )
    p.add_argument("--dtype", default="float32", help="weights dtype for lm-eval: float32 | bfloat16 | float16 | auto")
    p.add_argument(
        "--apply_chat_template",
        "--apply-chat-template",
        dest="apply_chat_template",
        action="store_true",
        help="wrap prompts in the tokenizer's chat template",
    )
    add_include(p)
    p.set_defaults(func=cmd_lm_eval)
    return p
