"""``gilbench run``: one method on one task, for each seed given: flags -> ``resolve_run`` -> ``pipeline.run``."""

from __future__ import annotations

import argparse

from gilbench.cli.fields import config_fields_epilog
from gilbench.cli.flags import OUTPUT_DIR_HELP, add_include, parse_seeds, run_command
from gilbench.config import RunConfig
from gilbench.resolve import ResolvedRun, resolve_run


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help="registered method (gilbench ls methods)")
    p.add_argument("--task", help="registered task (gilbench ls tasks)")
    p.add_argument("--model", help="policy model: a preset (tiny, smollm2-135m), hub id or local path")
    p.add_argument("--seed", default=None, help="seed or list: 0 | 0,1,2 | 0-4 (each seed is one run)")
    p.add_argument("--output-dir", help=OUTPUT_DIR_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="delete a run folder made with a different config and start it again"
    )
    p.add_argument("--limit", type=int, help="cap prompts, pairs and examples per split (quick runs)")
    p.add_argument("--config", help="YAML file of config fields (see README)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="typed override, e.g. rl.steps=4 or ptx_coef=0.5 (fields: see below, or gilbench ls config)",
    )
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--data-dir", help="local copies of hub datasets in their public layout")
    add_include(p)


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="train and evaluate a method on a task",
        epilog=config_fields_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)
    return p


def flag_fields(args: argparse.Namespace) -> dict:
    """The config fields that ``gilbench run``'s own flags set (those given)."""
    flags = {"limit": args.limit, "device": args.device, "data_dir": args.data_dir, "output_dir": args.output_dir}
    fields = {k: v for k, v in flags.items() if v is not None}
    if args.model is not None:
        fields["model"] = {"policy": args.model}
    return fields


def resolve_args(args: argparse.Namespace) -> list[ResolvedRun]:
    """One resolved run per seed of ``--seed`` (default: the config's seed)."""
    resolved = resolve_run(args.method, args.task, args.overrides, config_file=args.config, fields=flag_fields(args))
    seeds = parse_seeds(args.seed) if args.seed is not None else [resolved.cfg.seed]
    return [resolved.with_seed(s) for s in seeds]


def build_configs(args: argparse.Namespace) -> list[RunConfig]:
    return [r.cfg for r in resolve_args(args)]


def cmd_run(args: argparse.Namespace) -> int:
    from gilbench.pipeline import format_summary, run
    from gilbench.store import check_writable_dir

    runs = resolve_args(args)
    check_writable_dir(runs[0].cfg.output_dir, "--output-dir")
    for resolved in runs:
        print(format_summary(run(resolved, overwrite=args.overwrite)))
    return 0


def main_run(argv: list[str]) -> int:
    """``gilbench run ARGV`` in this process (what sweep's in-process and Slurm runs call)."""
    parser = argparse.ArgumentParser(prog="gilbench run")
    add_run_arguments(parser)
    return run_command(parser.parse_args(argv), cmd_run)
