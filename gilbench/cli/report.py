"""``gilbench table`` and ``gilbench plot``: tables and PNG plots regenerated from the run store.

gilbench table --spec main --format latex --out results/tables/main.tex
gilbench table --spec tables/my_table.yaml --format md --output-dir results/runs
gilbench plot --task chitchat-ood --methods gil,ppo-kl --out-dir results/plots
gilbench plot --task qa-chat --methods ppo-kl,gil@b0.3 --name qa-chat-grid --out-dir results/plots
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gilbench.cli.flags import OUTPUT_DIR_HELP, split_names
from gilbench.errors import GilbenchError
from gilbench.registry import unknown_name_message
from gilbench.report import html
from gilbench.report.tables import render_table
from gilbench.store import DEFAULT_OUTPUT_DIR


def require_store(output_dir: str) -> None:
    if not Path(output_dir).is_dir():
        raise GilbenchError(
            f"--output-dir {output_dir}: no such run store; pass the folder your runs went to "
            f"(the committed results are in results/runs)"
        )


def _names(text: str | None) -> list[str] | None:
    return split_names(text) if text else None


def add_table_parser(subparsers) -> argparse.ArgumentParser:
    from gilbench.report.spec import available_specs

    p = subparsers.add_parser(
        "table",
        help="build a table (md / LaTeX / CSV) from stored results with a table spec",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--spec", required=True, help=f"a spec name ({', '.join(available_specs()) or 'tables/*.yaml'}) or a .yaml file"
    )
    p.add_argument("--format", choices=["md", "latex", "csv"], default="md", help="output format (default md)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=OUTPUT_DIR_HELP)
    p.add_argument("--out", help="write to this file instead of standard output")
    p.add_argument("--tasks", help="override the spec's tasks: T1,T2")
    p.add_argument("--judge", help="override the spec's judge id")
    p.set_defaults(func=cmd_table)
    return p


def cmd_table(args: argparse.Namespace) -> int:
    from gilbench.files import atomic_write_text

    require_store(args.output_dir)
    text = render_table(args.spec, args.format, args.output_dir, _names(args.tasks), args.judge)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"[gilbench] table {args.spec} ({args.format}) written to {args.out}")
    else:
        print(text, end="")
    return 0


def add_plot_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plot",
        help="PNG plots of a task's runs: curves, group dynamics, reward-KL frontier, win rates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, help="task whose runs to plot")
    p.add_argument("--methods", help="methods to plot: M1,M2 (default: every method with runs)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=OUTPUT_DIR_HELP)
    p.add_argument("--out-dir", default="results/plots", help="folder for the PNG files (default results/plots)")
    p.add_argument("--judge", help="judge id of the win-rate plot (default: the most common stored one)")
    p.add_argument(
        "--name", help="file-name stem of the plots, NAME_curves.png ... (default: the task; give one with --methods)"
    )
    p.set_defaults(func=cmd_plot)
    return p


def cmd_plot(args: argparse.Namespace) -> int:
    from gilbench.errors import require
    from gilbench.report import store

    require_store(args.output_dir)
    require("matplotlib", "gilbench plot", extra="plots")
    from gilbench.report.plots import make_plots

    if args.task not in store.task_names(args.output_dir):
        raise GilbenchError(
            f"no runs or comparisons of task '{args.task}' under {args.output_dir}; "
            f"tasks there: {', '.join(store.task_names(args.output_dir)) or '(none)'}"
        )
    if args.name is not None and (not args.name or args.name != Path(args.name).name or args.name.startswith(".")):
        raise GilbenchError(
            f"--name {args.name!r}: give a file-name stem such as qa-chat-grid (no folders; --out-dir says where)"
        )
    methods = _names(args.methods)
    known = store.method_names(args.output_dir, args.task)
    for m in methods or []:
        if m not in known:
            raise GilbenchError(f"--methods: {unknown_name_message(f'method of task {args.task}', m, known)}")
    written = make_plots(args.output_dir, args.task, methods, args.out_dir, args.judge, name=args.name)
    for path in written:
        print(f"[gilbench] wrote {path}")
    if not written:
        raise GilbenchError(f"nothing to plot for task {args.task}: no per-step metrics or comparisons found")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = html.write_report(args.output_dir, args.task, args.out)
    print(f"[gilbench] report written to {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="one static HTML page of a task: tables, plots, every judged pair side by side",
        description=html.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, help="task to report on")
    p.add_argument("--output-dir", default="results/runs", help="run store root (default results/runs)")
    p.add_argument("--out", default=None, help="the HTML file (default results/report/TASK.html)")
    p.set_defaults(func=cmd_report)
    return p
