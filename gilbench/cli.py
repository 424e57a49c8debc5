"""The ``gilbench`` command line.

    gilbench run --method gil --task chitchat-ood --seed 0,1,2
    gilbench ls methods|tasks|models [-v]
    gilbench validate tasks/hh.yaml | --config run.yaml | --task NAME
    gilbench sweep --methods ppo-kl,gil --tasks chitchat-ood --seeds 0-2
    gilbench compare gil ppo-kl --task chitchat-ood --judge gold
    gilbench table --spec main --format latex
    gilbench plot --task chitchat-ood
    gilbench eval --lm-eval hellaswag --run results/runs/chitchat/gil/seed0
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys

from gilbench import registry
from gilbench.config import (RunConfig, build_method_config, config_for_method, load_yaml_config, nest, parse_cli_value, resolve_set_key,
                             update_dataclass, validate_config)
from gilbench.errors import GilbenchError


SEED_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text: str, flag: str = "--seed") -> list[int]:
    """Strict: ``0``, ``0,1,2`` or ``0-4`` (non-negative, ascending ranges, no empty parts, no repeats)."""
    seeds: list[int] = []
    usage = f"{flag} expects non-negative integers like 0, 0,1,2 or 0-4"
    for part in text.split(","):
        match = SEED_PART.match(part.strip())
        if not match:
            raise GilbenchError(f"{usage}; got {text!r}")
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if hi < lo:
            raise GilbenchError(f"{usage}; the range {part.strip()!r} in {text!r} runs backwards (write {hi}-{lo})")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise GilbenchError(f"{usage}; {text!r} names a seed twice")
    return seeds


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", help="registered method (gilbench ls methods)")
    p.add_argument("--task", help="registered task (gilbench ls tasks)")
    p.add_argument("--model", help="policy model: a preset (tiny, smollm2-135m), hub id or local path")
    p.add_argument("--seed", default=None, help="seed or list: 0 | 0,1,2 | 0-4 (each seed is one run)")
    p.add_argument("--output-dir", help="run store root (default runs/ in the current folder; the committed results are in results/runs)")
    p.add_argument("--overwrite", action="store_true", help="delete a run folder made with a different config and start it again")
    p.add_argument("--limit", type=int, help="cap prompts, pairs and examples per split (quick runs)")
    p.add_argument("--config", help="YAML file of config fields (see README)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="typed override, e.g. rl.steps=4 or ptx_coef=0.5")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--data-dir", help="local copies of hub datasets in their public layout")
    p.add_argument("--include", action="append", default=[], metavar="PATH", help="plugin .py file or folder to import first")


def build_configs(args: argparse.Namespace) -> list[RunConfig]:
    file_cfg = load_yaml_config(args.config) if args.config else {}
    method = args.method or file_cfg.get("method") or RunConfig.method
    method_cls = registry.methods.get(method)
    cfg = config_for_method(method, task=args.task or file_cfg.get("task") or RunConfig.task)
    update_dataclass(cfg, file_cfg)
    flags = {"limit": args.limit, "device": args.device, "data_dir": args.data_dir, "output_dir": args.output_dir}
    update_dataclass(cfg, {k: v for k, v in flags.items() if v is not None})
    if args.model is not None:
        cfg.model.policy = args.model
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise GilbenchError(f"--set expects KEY=VALUE, got {item!r}")
        update_dataclass(cfg, nest(resolve_set_key(key.strip(), cfg, method_cls.Config), parse_cli_value(value.strip())))
    seeds = parse_seeds(args.seed) if args.seed is not None else [cfg.seed]
    configs = [dataclasses.replace(cfg, seed=s) for s in seeds]
    method_cfg = build_method_config(method_cls.Config, cfg.method_args, cfg.method)
    for c in configs:
        validate_config(c, method_cfg)
    return configs


def cmd_run(args: argparse.Namespace) -> int:
    from gilbench.pipeline import format_summary, run

    from gilbench.store import check_writable_dir

    configs = build_configs(args)
    check_writable_dir(configs[0].output_dir, "--output-dir")
    for cfg in configs:
        summary = run(cfg, overwrite=args.overwrite)
        print(format_summary(summary))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.what == "methods":
        rows = []
        for name, cls in registry.methods.all().items():
            rows.append([name, cls.describe()])
            if args.verbose and cls.Config is not None:
                for f in dataclasses.fields(cls.Config):
                    rows.append(["", f"  {f.name} = {f.default!r}"])
            if args.verbose and cls.defaults:
                rows.append(["", f"  defaults: {cls.defaults}"])
        print(tabulate(rows, headers=["method", "description"]))
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

    quiet_transformers()
    if args.limit is not None and args.limit < 0:
        raise GilbenchError(f"--limit {args.limit}: must be 0 (no cap) or a positive number of prompts")
    if args.config:
        ns = argparse.Namespace(config=args.config, method=None, task=None, model=None, seed=None, output_dir=None, limit=None,
                                overrides=[], device=None, data_dir=args.data_dir, include=[], overwrite=False)
        cfg = build_configs(ns)[0]
        print(f"{args.config}: OK (method {cfg.method}, task {cfg.task}, model {cfg.model.policy})")
    targets = [parse_task_file(p) for p in args.files] + [as_task_spec(registry.tasks.get(t), t) for t in args.task]
    for spec in targets:
        data = spec.load(seed=0, limit=args.limit, data_dir=args.data_dir)
        splits = ", ".join(f"{s.name}={len(s.prompts)}" for s in data.eval_splits)
        print(f"{spec.name}: OK ({len(data.rl_prompts)} RL prompts, {len(data.sft)} SFT examples, "
              f"{len(data.pairs_train)}+{len(data.pairs_val)} preference pairs; eval {splits})")
    if not targets and not args.config:
        raise GilbenchError("validate: give a task file, --task NAME or --config FILE")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gilbench", description="Benchmark RLHF methods in and out of distribution.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train and evaluate a method on a task")
    add_run_arguments(p_run)
    p_run.set_defaults(func=cmd_run)
    p_ls = sub.add_parser("ls", help="list registered methods, tasks, models or judges")
    p_ls.add_argument("what", choices=["methods", "tasks", "models", "judges"])
    p_ls.add_argument("-v", "--verbose", action="store_true", help="show each method's config fields")
    p_ls.add_argument("--include", action="append", default=[], metavar="PATH")
    p_ls.set_defaults(func=cmd_ls)
    p_val = sub.add_parser("validate", help="check task files, registered tasks or a run config")
    p_val.add_argument("files", nargs="*", help="task YAML files")
    p_val.add_argument("--task", action="append", default=[], help="a registered task name")
    p_val.add_argument("--config", help="a run config YAML")
    p_val.add_argument("--limit", type=int, default=None)
    p_val.add_argument("--data-dir", default=None)
    p_val.add_argument("--include", action="append", default=[], metavar="PATH")
    p_val.set_defaults(func=cmd_validate)
    from gilbench.eval.cli_compare import add_compare_parser
    from gilbench.eval.judge_curve import add_judge_curve_parser
    from gilbench.lm_eval_bridge import add_lm_eval_parser
    from gilbench.report import add_plot_parser, add_table_parser
    from gilbench.sweep import add_sweep_parser

    add_sweep_parser(sub)
    add_compare_parser(sub)
    add_judge_curve_parser(sub)
    add_table_parser(sub)
    add_plot_parser(sub)
    add_lm_eval_parser(sub)
    from gilbench.eval.export import add_export_parser
    from gilbench.eval.generate import add_generate_parser
    from gilbench.report.html import add_report_parser

    add_generate_parser(sub)
    add_export_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = make_parser().parse_args(argv)
    try:
        for path in getattr(args, "include", []):
            registry.include(path)
        return args.func(args)
    except GilbenchError as e:
        print(f"gilbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gilbench: interrupted; completed stages and the last checkpoint are kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
