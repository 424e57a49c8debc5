"""The ``gilbench`` command line: one subcommand per module of this package (or of the package it drives).

gilbench run --method gil --task chitchat-ood --seed 0,1,2
gilbench ls methods|tasks|models|judges|config [-v]
gilbench validate tasks/hh.yaml | --config run.yaml | --task NAME
gilbench sweep --methods ppo-kl,gil --tasks chitchat-ood --seeds 0-2
gilbench compare gil ppo-kl --task chitchat-ood --judge gold
gilbench table --spec main --format latex
gilbench plot --task chitchat-ood
gilbench eval --lm-eval hellaswag --run results/runs/chitchat/gil/seed0
"""

from __future__ import annotations

import argparse
import os

from gilbench import registry
from gilbench.allocator import keep_freed_memory
from gilbench.cli.compare import add_compare_parser
from gilbench.cli.fields import field_docs, field_rows
from gilbench.cli.flags import add_include, run_command
from gilbench.cli.generate import add_export_parser, add_generate_parser
from gilbench.cli.judge_curve import add_judge_curve_parser
from gilbench.cli.lm_eval import add_lm_eval_parser
from gilbench.cli.report import add_plot_parser, add_report_parser, add_table_parser
from gilbench.cli.run import add_run_parser
from gilbench.cli.sweep import add_sweep_parser
from gilbench.config import RunConfig
from gilbench.errors import GilbenchError


def cmd_ls(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.what == "methods":
        rows = []
        for name, cls in registry.methods.all().items():
            rows.append([name, cls.describe()])
            if args.verbose and cls.Config is not None:
                docs = field_docs(cls.Config)
                for f in cls.Config.__dataclass_fields__.values():
                    doc = f"  # {docs[f.name]}" if f.name in docs else ""
                    rows.append(["", f"  {f.name} = {f.default!r}{doc}"])
            if args.verbose and cls.defaults:
                rows.append(["", f"  defaults: {cls.defaults}"])
        print(tabulate(rows, headers=["method", "description"]))
    elif args.what == "config":
        print(tabulate(field_rows(RunConfig), headers=["field (--set NAME=VALUE)", "default", "meaning"]))
    elif args.what == "tasks":
        from gilbench.data.tasks import as_task_spec

        rows = []
        for name, obj in registry.tasks.all().items():
            spec = as_task_spec(obj, name)
            splits = ", ".join(f"{s['name']} [{s['distribution']}]" for s in spec.eval_splits)
            rows.append([name, spec.description, splits, ", ".join(spec.groups)])
        print(tabulate(rows, headers=["task", "description", "eval splits", "groups"], maxcolwidths=[None, 50, 40, 30]))
    elif args.what == "models":
        from gilbench.models.presets import list_presets

        print(tabulate(list_presets(), headers=["preset", "description"]))
        print("\nAny hub id or local folder also works through transformers' from_pretrained.")
    elif args.what == "judges":
        names = registry.judges.names()
        print("\n".join(names) if names else "(no judges registered yet)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from gilbench.data.tasks import as_task_spec, parse_task_file
    from gilbench.pipeline import quiet_transformers
    from gilbench.resolve import resolve_run

    quiet_transformers()
    if args.limit is not None and args.limit < 0:
        raise GilbenchError(f"--limit {args.limit}: must be 0 (no cap) or a positive number of prompts")
    if args.config:
        cfg = resolve_run(config_file=args.config, fields={"data_dir": args.data_dir} if args.data_dir else {}).cfg
        print(f"{args.config}: OK (method {cfg.method}, task {cfg.task}, model {cfg.model.policy})")
    targets = [parse_task_file(p) for p in args.files] + [as_task_spec(registry.tasks.get(t), t) for t in args.task]
    for spec in targets:
        data = spec.load(seed=0, limit=args.limit, data_dir=args.data_dir)
        splits = ", ".join(f"{s.name}={len(s.prompts)}" for s in data.eval_splits)
        print(
            f"{spec.name}: OK ({len(data.rl_prompts)} RL prompts, {len(data.sft)} SFT examples, "
            f"{len(data.pairs_train)}+{len(data.pairs_val)} preference pairs; eval {splits})"
        )
    if not targets and not args.config:
        raise GilbenchError("validate: give a task file, --task NAME or --config FILE")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gilbench", description="Benchmark RLHF methods in and out of distribution.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    p_ls = sub.add_parser("ls", help="list registered methods, tasks, models or judges, or the run-config fields")
    p_ls.add_argument("what", choices=["methods", "tasks", "models", "judges", "config"])
    p_ls.add_argument("-v", "--verbose", action="store_true", help="show each method's config fields and their meaning")
    add_include(p_ls)
    p_ls.set_defaults(func=cmd_ls)
    p_val = sub.add_parser("validate", help="check task files, registered tasks or a run config")
    p_val.add_argument("files", nargs="*", help="task YAML files")
    p_val.add_argument("--task", action="append", default=[], help="a registered task name")
    p_val.add_argument("--config", help="a run config YAML")
    p_val.add_argument("--limit", type=int, default=None)
    p_val.add_argument("--data-dir", default=None)
    add_include(p_val)
    p_val.set_defaults(func=cmd_validate)
    for add in (
        add_sweep_parser,
        add_compare_parser,
        add_judge_curve_parser,
        add_table_parser,
        add_plot_parser,
        add_lm_eval_parser,
        add_generate_parser,
        add_export_parser,
        add_report_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    keep_freed_memory()  # before the first large tensor
    args = make_parser().parse_args(argv)
    return run_command(args, args.func)


if __name__ == "__main__":
    raise SystemExit(main())
