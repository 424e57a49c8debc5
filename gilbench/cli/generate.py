"""``gilbench generate`` (sample a policy on any prompt file) and ``gilbench export`` (AlpacaEval / Arena-Hard files)."""

from __future__ import annotations

import argparse

from gilbench.cli.flags import add_include
from gilbench.eval import export as export_module
from gilbench.eval import generate as generate_module


def cmd_generate(args: argparse.Namespace) -> int:
    path = generate_module.generate(
        args.run,
        args.prompts,
        name=args.name,
        model=args.model,
        like=args.like,
        seed=args.seed,
        device=args.device,
        limit=args.limit,
    )
    print(generate_module.summarise_file(path))
    return 0


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="sample a run's policy (or a baseline model) on any prompt file; compare then judges it",
        description=generate_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        required=True,
        metavar="RUN_DIR",
        help="a finished run folder (or, with --model, the folder to write a baseline into)",
    )
    p.add_argument("--prompts", required=True, metavar="FILE", help="prompts: .jsonl, .csv or AlpacaEval .json")
    p.add_argument("--name", default=None, help="generations/NAME.jsonl (default: the prompt file's stem)")
    p.add_argument(
        "--model", default=None, help="sample this preset / local model folder instead of RUN_DIR's policy (a baseline)"
    )
    p.add_argument(
        "--like",
        default=None,
        metavar="RUN_DIR",
        help="with --model: take generation settings, prompt format and reward model from this run",
    )
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the run's seed; 0 for a baseline)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_include(p)
    p.set_defaults(func=cmd_generate)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    target = export_module.export(args.run, args.name, args.format, args.out_dir, args.generator)
    print(f"wrote {target} ({args.format})")
    return 0


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write a run's generations as AlpacaEval model_outputs.json or Arena-Hard answers",
        description=export_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder with generations/")
    p.add_argument(
        "--name",
        required=True,
        help="which generations: a prompt file's NAME (gilbench generate) or an eval split, e.g. id:test",
    )
    p.add_argument("--format", required=True, choices=export_module.FORMATS)
    p.add_argument("--out-dir", default=None, help="default RUN_DIR/exports/NAME")
    p.add_argument("--generator", default=None, help="model name written into the export (default <method>-seed<k>)")
    p.set_defaults(func=cmd_export)
    return p
