"""Score a trained policy on lm-evaluation-harness tasks: the "alignment tax" side of a run.

    gilbench eval --lm-eval hellaswag,arc_easy --run results/runs/hh/gil/seed0 [--limit 100] [--include-path DIR]

The policy a run saved (``RUN_DIR/policy``, a save_pretrained folder) is loaded by lm-eval's own HF model
class (``simple_evaluate(model="hf", model_args="pretrained=<folder>,dtype=...")``); the results are written
atomically to ``RUN_DIR/lm_eval.json`` (one file per run; a later call replaces it) and returned.

lm-eval is optional (``pip install "gilbench[lm-eval]"``). Its built-in tasks download their datasets from
the hub (or read the datasets cache); offline, write a task YAML of your own over local files, e.g.
``dataset_path: json`` with ``dataset_kwargs: {data_files: {test: /path/data.jsonl}}``, and pass its folder
with ``--include-path``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from gilbench.errors import GilbenchError, require
from gilbench.store import DONE, atomic_write_json

RESULT_FILE = "lm_eval.json"


def policy_folder(run_dir: str | os.PathLike) -> Path:
    """``RUN_DIR/policy`` (or RUN_DIR itself when it is a model folder), checked to be complete."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise GilbenchError(f"--run {run_dir}: no such run folder")
    folder = run_dir / "policy" if (run_dir / "policy").is_dir() or not (run_dir / "config.json").exists() else run_dir
    if not folder.is_dir():
        raise GilbenchError(f"--run {run_dir}: no trained policy in {folder}; finish the run first (gilbench run ...)")
    if folder.name == "policy" and not (folder / DONE).exists():
        raise GilbenchError(f"--run {run_dir}: {folder} is incomplete (no {DONE} marker); rerun `gilbench run` to finish it")
    if not (folder / "config.json").exists():
        raise GilbenchError(f"--run {run_dir}: {folder} has no config.json, so it is not a save_pretrained model folder")
    return folder


def _model_args(folder: Path, dtype: str, extra: dict | None) -> str:
    args = {"pretrained": str(folder), "dtype": dtype, **(extra or {})}
    for key, value in args.items():
        if "," in str(value) or "=" in str(value):
            raise GilbenchError(f"lm-eval model_args cannot hold ',' or '=' in {key}={value!r} (e.g. a folder name); rename or move the folder")
    return ",".join(f"{k}={v}" for k, v in args.items())


def _jsonable(obj: Any) -> Any:
    """lm-eval's result dict holds numpy numbers and a few objects: keep numbers, stringify the rest."""
    def default(o: Any) -> Any:
        return o.item() if hasattr(o, "item") else str(o)

    return json.loads(json.dumps(obj, default=default))


def run_lm_eval(run_dir: str | os.PathLike, tasks: list[str], limit: int | float | None = None, include_path: str | os.PathLike | None = None,
                batch_size: int | str = 8, device: str | None = None, num_fewshot: int | None = None, dtype: str = "float32",
                apply_chat_template: bool = False, model_args: dict | None = None, seed: int = 0) -> dict:
    """Evaluate ``run_dir``'s policy on lm-eval ``tasks``; write ``run_dir/lm_eval.json`` and return its content.

    ``limit``: examples per task (a float < 1: that share of each task). ``include_path``: a folder of extra
    lm-eval task YAMLs. ``device``: default cuda when visible, else cpu. ``model_args``: more HFLM arguments.
    """
    lm_eval = require("lm_eval", "the lm-eval bridge", package="lm-eval", extra="lm-eval")
    tasks = [t.strip() for t in tasks if t and t.strip()]
    if not tasks:
        raise GilbenchError("--lm-eval needs at least one task name (comma-separated), e.g. --lm-eval hellaswag,arc_easy")
    folder = policy_folder(run_dir)
    if include_path is not None and not Path(include_path).expanduser().is_dir():
        raise GilbenchError(f"--include-path {include_path}: no such folder of lm-eval task YAMLs")
    from lm_eval.tasks import TaskManager

    manager = None
    if include_path:  # indexing lm-eval's ~15k built-in tasks takes seconds: skip it when the include path has them all
        manager = TaskManager(include_path=str(Path(include_path).expanduser()), include_defaults=False)
        if not set(tasks) <= set(manager.all_tasks):
            manager = None
    if manager is None:
        manager = TaskManager(include_path=str(Path(include_path).expanduser()) if include_path else None)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        import difflib

        hints = {t: difflib.get_close_matches(t, sorted(known), n=3) for t in unknown}
        hint = "; ".join(f"{t}: did you mean {', '.join(c)}?" for t, c in hints.items() if c)
        raise GilbenchError(f"unknown lm-eval task(s) {unknown}{' (' + hint + ')' if hint else ''}; list them with `lm-eval ls tasks`, "
                            "or add your own task YAMLs with --include-path DIR")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        raw = lm_eval.simple_evaluate(
            model="hf", model_args=_model_args(folder, dtype, model_args), tasks=tasks, num_fewshot=num_fewshot, batch_size=batch_size,
            device=device, limit=limit, task_manager=manager, log_samples=False, apply_chat_template=apply_chat_template,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    except GilbenchError:
        raise
    except Exception as e:
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        hint = (" lm-eval's built-in tasks read their datasets from the hub" + (" and HF_HUB_OFFLINE is set" if offline else "") +
                "; offline, point a task YAML at local files (dataset_path: json, dataset_kwargs.data_files) and pass --include-path DIR.")
        raise GilbenchError(f"lm-eval failed on {tasks} for {folder}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}.{hint}") from e
    if raw is None:  # simple_evaluate returns None on non-zero ranks of a distributed run
        return {}
    result = _jsonable({
        "run_dir": str(Path(run_dir).expanduser()), "model": str(folder), "tasks": tasks, "limit": limit, "num_fewshot": num_fewshot,
        "include_path": str(include_path) if include_path else None, "device": device, "dtype": dtype,
        "results": raw.get("results", {}), "groups": raw.get("groups", {}), "n_samples": raw.get("n-samples", {}), "n_shot": raw.get("n-shot", {}),
        "versions": raw.get("versions", {}), "higher_is_better": raw.get("higher_is_better", {}),
        "lm_eval_version": raw.get("lm_eval_version"), "date": raw.get("date"),
    })
    atomic_write_json(Path(run_dir).expanduser() / RESULT_FILE, result)
    return result


def format_results(result: dict) -> str:
    """A table of every task's metrics (value ± stderr)."""
    from tabulate import tabulate

    rows = []
    for task, metrics in result.get("results", {}).items():
        n = (result.get("n_samples", {}).get(task) or {}).get("effective")
        for key, value in metrics.items():
            if key in ("alias", "name", "sample_len") or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append([task, metric if filt in ("none", "") else f"{metric} ({filt})", f"{value:.4f}",
                         f"{stderr:.4f}" if isinstance(stderr, (int, float)) else "", n if n is not None else ""])
    return tabulate(rows, headers=["task", "metric", "value", "stderr", "n"])


def _parse_limit(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit expects a number of examples (or a fraction < 1), got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--limit must be > 0, got {text!r}")
    return value if value < 1 else int(value)


def _parse_batch_size(text: str) -> int | str:
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-size expects an integer or 'auto', got {text!r}") from None


def cmd_lm_eval(args: argparse.Namespace) -> int:
    result = run_lm_eval(args.run, args.lm_eval.split(","), limit=args.limit, include_path=args.include_path, batch_size=args.batch_size,
                         device=args.device, num_fewshot=args.num_fewshot, dtype=args.dtype, apply_chat_template=args.apply_chat_template)
    print(format_results(result))
    print(f"written to {Path(args.run).expanduser() / RESULT_FILE}")
    return 0


def add_lm_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``gilbench eval --lm-eval TASKS --run RUN_DIR ...`` to the CLI's subparsers; returns that parser."""
    p = subparsers.add_parser("eval", help="score a trained run's policy on lm-evaluation-harness tasks (needs gilbench[lm-eval])",
                              description="Score RUN_DIR/policy with lm-eval's HF model class; writes RUN_DIR/lm_eval.json.")
    p.add_argument("--lm-eval", required=True, metavar="TASKS", help="comma-separated lm-eval task names, e.g. hellaswag,arc_easy")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder holding policy/ (e.g. results/runs/hh/gil/seed0)")
    p.add_argument("--limit", type=_parse_limit, default=None, help="examples per task (a fraction < 1: that share of each task)")
    p.add_argument("--include-path", default=None, metavar="DIR", help="folder of extra lm-eval task YAMLs (e.g. over local files)")
    p.add_argument("--batch-size", type=_parse_batch_size, default=8, help="lm-eval batch size (or 'auto')")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if visible, else cpu)")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples per prompt (default: each task's own)")
    p.add_argument("--dtype", default="float32", help="weights dtype for lm-eval: float32 | bfloat16 | float16 | auto")
    p.add_argument("--apply-chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--include", action="append", default=[], metavar="PATH", help="gilbench plugin .py file or folder to import first")
    p.set_defaults(func=cmd_lm_eval)
    return p
