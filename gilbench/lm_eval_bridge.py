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

import json
import os
from pathlib import Path
from typing import Any

from gilbench.errors import GilbenchError, require
from gilbench.files import DONE, atomic_write_json

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
        raise GilbenchError(
            f"--run {run_dir}: {folder} is incomplete (no {DONE} marker); rerun `gilbench run` to finish it"
        )
    if not (folder / "config.json").exists():
        raise GilbenchError(
            f"--run {run_dir}: {folder} has no config.json, so it is not a save_pretrained model folder"
        )
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
            raise GilbenchError(f'--model_args {text!r}: give a JSON object, e.g. \'{{"dtype": "bfloat16"}}\'')
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


def run_lm_eval(
    run_dir: str | os.PathLike,
    tasks: list[str],
    limit: int | float | None = None,
    include_path: str | os.PathLike | None = None,
    batch_size: int | str = 8,
    device: str | None = None,
    num_fewshot: int | None = None,
    dtype: str = "float32",
    apply_chat_template: bool = False,
    model_args: dict | None = None,
    seed: int = 0,
    output_path: str | os.PathLike | None = None,
    log_samples: bool = False,
) -> dict:
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
        raise GilbenchError(
            f"unknown lm-eval task(s) {unknown}{' (' + hint + ')' if hint else ''}; list them with `lm-eval ls tasks`, "
            "or add your own task YAMLs with --include-path DIR"
        )
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from lm_eval.loggers import EvaluationTracker

    output_path = Path(output_path).expanduser() if output_path else Path(run_dir).expanduser() / "lm_eval"
    tracker = EvaluationTracker(output_path=str(output_path))
    try:
        raw = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": str(folder), "dtype": dtype, **(model_args or {})},
            tasks=tasks,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            device=device,
            limit=limit,
            task_manager=manager,
            log_samples=log_samples,
            apply_chat_template=apply_chat_template,
            evaluation_tracker=tracker,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except GilbenchError:
        raise
    except Exception as e:
        offline = any(
            os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
            for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        )
        hint = (
            " lm-eval's built-in tasks read their datasets from the hub"
            + (" and HF_HUB_OFFLINE is set" if offline else "")
            + "; offline, point a task YAML at local files (dataset_path: json, dataset_kwargs.data_files) and pass --include-path DIR."
        )
        raise GilbenchError(
            f"lm-eval failed on {tasks} for {folder}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}.{hint}"
        ) from e
    if raw is None:  # simple_evaluate returns None on non-zero ranks of a distributed run
        return {}
    samples = raw.pop("samples", None)
    tracker.save_results_aggregated(results=raw, samples=samples)  # lm-eval's own files, in its own layout
    for task in raw.get("configs", {}) if log_samples else ():
        tracker.save_results_samples(task_name=task, samples=samples[task])
    result = _jsonable(
        {
            **raw,
            "gilbench": {
                "run_dir": str(Path(run_dir).expanduser()),
                "model": str(folder),
                "tasks": tasks,
                "limit": limit,
                "num_fewshot": num_fewshot,
                "include_path": str(include_path) if include_path else None,
                "device": device,
                "dtype": dtype,
                "seed": seed,
                "output_path": str(output_path),
                "log_samples": log_samples,
            },
        }
    )
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
            rows.append(
                [
                    task,
                    metric if filt in ("none", "") else f"{metric} ({filt})",
                    f"{value:.4f}",
                    f"{stderr:.4f}" if isinstance(stderr, (int, float)) else "",
                    n if n is not None else "",
                ]
            )
    return tabulate(rows, headers=["task", "metric", "value", "stderr", "n"])
