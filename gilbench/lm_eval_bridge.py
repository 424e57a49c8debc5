"""Score a trained policy on lm-evaluation-harness tasks: the "alignment tax" side of a run.

    gilbench eval --tasks hellaswag,arc_easy --run results/runs/hh/gil/seed0 [--limit 100] [--include_path DIR]
              [--output_path DIR] [--log_samples] [--seed 0] [--num_fewshot K] [--batch_size 8] [--model_args '{"dtype": "bfloat16"}']

The flags are lm-eval's own (``--tasks``, ``--output_path``, ``--log_samples``, ``--seed``, ``--num_fewshot``,
``--batch_size``, ``--model_args``, ``--include_path``; the dashed spellings work too). The policy a run saved
(``RUN_DIR/policy``, a save_pretrained folder) is loaded by lm-eval's own HF model class, its arguments passed as a
dict (``{"pretrained": <folder>, "dtype": ...}``, so folder names with ``,`` or ``=`` are fine). Results are written
by lm-eval's own ``EvaluationTracker`` in its layout, ``OUTPUT_PATH/<model name>/results_<date>.json`` (and
``samples_<task>_<date>.jsonl`` with ``--log_samples``; OUTPUT_PATH defaults to ``RUN_DIR/lm_eval``), and the same
result dict (lm-eval's keys: ``results``, ``groups``, ``configs``, ``versions``, ``n-shot``, ``higher_is_better``,
``n-samples``, ``config`` ...; plus ``gilbench``: the run, the model folder, the call's settings) atomically to
``RUN_DIR/lm_eval.json`` (a later call replaces it).

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


def parse_model_args(text: str | None) -> dict:
    """``--model_args``: a JSON object, or lm-eval's ``key=value,key=value`` (values typed like --set)."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise GilbenchError(f"--model_args {text!r}: not a JSON object ({e})") from None
        if not isinstance(value, dict):
            raise GilbenchError(f"--model_args {text!r}: give a JSON object, e.g. '{{\"dtype\": \"bfloat16\"}}'")
        return value
    from gilbench.config import parse_cli_value

    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise GilbenchError(f"--model_args expects KEY=VALUE,... or a JSON object, got {part!r}")
        out[key.strip()] = parse_cli_value(value.strip())
    return out


def _jsonable(obj: Any) -> Any:
    """lm-eval's result dict holds numpy numbers and a few objects: keep numbers, stringify the rest."""
    def default(o: Any) -> Any:
        return o.item() if hasattr(o, "item") else str(o)

    return json.loads(json.dumps(obj, default=default))


def run_lm_eval(run_dir: str | os.PathLike, tasks: list[str], limit: int | float | None = None, include_path: str | os.PathLike | None = None,
                batch_size: int | str = 8, device: str | None = None, num_fewshot: int | None = None, dtype: str = "float32",
                apply_chat_template: bool = False, model_args: dict | None = None, seed: int = 0,
                output_path: str | os.PathLike | None = None, log_samples: bool = False) -> dict:
    """Evaluate ``run_dir``'s policy on lm-eval ``tasks``; write lm-eval's result files under ``output_path`` (default
    ``run_dir/lm_eval``) and ``run_dir/lm_eval.json``, and return the result dict.

    ``limit``: examples per task (a float < 1: that share of each task). ``include_path``: a folder of extra
    lm-eval task YAMLs. ``device``: default cuda when visible, else cpu. ``model_args``: more HFLM arguments.
    ``log_samples``: also write every scored sample (lm-eval's samples files).
    """
    lm_eval = require("lm_eval", "the lm-eval bridge", package="lm-eval", extra="lm-eval")
    tasks = [t.strip() for t in tasks if t and t.strip()]
    if not tasks:
        raise GilbenchError("--tasks needs at least one task name (comma-separated), e.g. --tasks hellaswag,arc_easy")
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
        from gilbench.registry import close_matches

        hints = {t: close_matches(t, known) for t in unknown}
        hint = "; ".join(f"{t}: did you mean {', '.join(c)}?" for t, c in hints.items() if c)
        raise GilbenchError(f"unknown lm-eval task(s) {unknown}{' (' + hint + ')' if hint else ''}; list them with `lm-eval ls tasks`, "
                            "or add your own task YAMLs with --include-path DIR")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from lm_eval.loggers import EvaluationTracker

    output_path = Path(output_path).expanduser() if output_path else Path(run_dir).expanduser() / "lm_eval"
    tracker = EvaluationTracker(output_path=str(output_path))
    try:
        raw = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(folder), "dtype": dtype, **(model_args or {})}, tasks=tasks, num_fewshot=num_fewshot,
            batch_size=batch_size, device=device, limit=limit, task_manager=manager, log_samples=log_samples,
            apply_chat_template=apply_chat_template, evaluation_tracker=tracker,
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
    samples = raw.pop("samples", None)
    tracker.save_results_aggregated(results=raw, samples=samples)  # lm-eval's own files, in its own layout
    for task in raw.get("configs", {}) if log_samples else ():
        tracker.save_results_samples(task_name=task, samples=samples[task])
    result = _jsonable({**raw, "gilbench": {
        "run_dir": str(Path(run_dir).expanduser()), "model": str(folder), "tasks": tasks, "limit": limit, "num_fewshot": num_fewshot,
        "include_path": str(include_path) if include_path else None, "device": device, "dtype": dtype, "seed": seed,
        "output_path": str(output_path), "log_samples": log_samples}})
    atomic_write_json(Path(run_dir).expanduser() / RESULT_FILE, result)
    return result


def format_results(result: dict) -> str:
    """A table of every task's metrics (value ± stderr)."""
    from tabulate import tabulate

    rows = []
    for task, metrics in result.get("results", {}).items():
        n = (result.get("n-samples", {}).get(task) or {}).get("effective")
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
    result = run_lm_eval(args.run, args.tasks.split(","), limit=args.limit, include_path=args.include_path, batch_size=args.batch_size,
                         device=args.device, num_fewshot=args.num_fewshot, dtype=args.dtype, apply_chat_template=args.apply_chat_template,
                         model_args=parse_model_args(args.model_args), seed=args.seed, output_path=args.output_path, log_samples=args.log_samples)
    print(format_results(result))
    print(f"written to {result['gilbench']['output_path']} (lm-eval's layout) and {Path(args.run).expanduser() / RESULT_FILE}")
    return 0


def add_lm_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``gilbench eval --tasks TASKS --run RUN_DIR ...`` (lm-eval's flag names) to the CLI's subparsers; returns that parser."""
    p = subparsers.add_parser("eval", help="score a trained run's policy on lm-evaluation-harness tasks (needs gilbench[lm-eval])",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", "--lm-eval", dest="tasks", required=True, metavar="TASKS", help="comma-separated lm-eval task names, e.g. hellaswag,arc_easy")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder holding policy/ (e.g. results/runs/hh/gil/seed0)")
    p.add_argument("--output_path", "--output-path", dest="output_path", default=None, metavar="DIR",
                   help="where lm-eval's result files go (default RUN_DIR/lm_eval)")
    p.add_argument("--log_samples", "--log-samples", dest="log_samples", action="store_true", help="also write every scored sample")
    p.add_argument("--seed", type=int, default=0, help="seed of lm-eval's random, numpy, torch and few-shot sampling (default 0)")
    p.add_argument("--limit", type=_parse_limit, default=None, help="examples per task (a fraction < 1: that share of each task)")
    p.add_argument("--include_path", "--include-path", dest="include_path", default=None, metavar="DIR",
                   help="folder of extra lm-eval task YAMLs (e.g. over local files)")
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=_parse_batch_size, default=8, help="lm-eval batch size (or 'auto')")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if visible, else cpu)")
    p.add_argument("--num_fewshot", "--num-fewshot", dest="num_fewshot", type=int, default=None, help="few-shot examples per prompt (default: each task's own)")
    p.add_argument("--model_args", "--model-args", dest="model_args", default=None,
                   help="more HF model arguments: a JSON object or KEY=VALUE,... (pretrained is the run's policy)")
    p.add_argument("--dtype", default="float32", help="weights dtype for lm-eval: float32 | bfloat16 | float16 | auto")
    p.add_argument("--apply_chat_template", "--apply-chat-template", dest="apply_chat_template", action="store_true",
                   help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--include", action="append", default=[], metavar="PATH", help="gilbench plugin .py file or folder to import first")
    p.set_defaults(func=cmd_lm_eval)
    return p
