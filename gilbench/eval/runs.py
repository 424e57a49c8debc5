"""Reading finished runs for evaluation: run folders, their generations, pairing two methods, their reward model."""

from __future__ import annotations

import json
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.files import is_done
from gilbench.store import RunDir, RunStore


def seeds_on_disk(output_dir: str | Path, task: str, method: str) -> list[int]:
    """Seeds of the method's runs with generations (a finished run, or a `gilbench generate` baseline folder)."""
    return [r.seed for r in RunStore(output_dir).runs_with_generations(task, method)]


def resolve_runs(output_dir: str | Path, task: str, method: str, seeds: list[int] | None) -> list[Path]:
    """Run folders ``<output_dir>/<task>/<method>/seed<k>`` that hold generations, or a GilbenchError saying what to run."""
    if seeds is None:
        seeds = seeds_on_disk(output_dir, task, method)
        if not seeds:
            raise GilbenchError(
                f"no runs with generations of method '{method}' on task '{task}' under {output_dir} "
                f"(looked for {Path(output_dir) / task / method}/seed*/generations); run "
                f"`{run_command(method, task)}` first, or pass --output-dir"
            )
    dirs = []
    for seed in seeds:
        run = RunStore(output_dir).run(task, method, seed)
        if not run.generation_files():
            raise GilbenchError(
                f"{run.path} has no generations/*.jsonl; run `{run_command(method, task)} --seed {seed}` first"
            )
        dirs.append(run.path)
    return dirs


def load_generations(run_dirs: list[Path]) -> dict[tuple[str, str, int], dict]:
    """Rows keyed by (split, prompt id, seed)."""
    rows: dict[tuple[str, str, int], dict] = {}
    for d in run_dirs:
        for path in RunDir(d).generation_files():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (row["split"], str(row["id"]), int(row["seed"]))
                    row["prompt"], row["response"]
                except (ValueError, KeyError, TypeError) as e:
                    raise GilbenchError(f"{path}:{n}: not a generation row ({type(e).__name__}: {e})") from None
                if key in rows:
                    raise GilbenchError(f"{path}:{n}: prompt {key[1]} of split {key[0]}, seed {key[2]} appears twice")
                rows[key] = row
    return rows


def pair_generations(rows_a: dict, rows_b: dict) -> tuple[list[dict], dict]:
    """Items judged: one per (split, prompt id, seed) both methods answered; plus counts of the unmatched."""
    common = sorted(set(rows_a) & set(rows_b))
    items = []
    for split, pid, seed in common:
        a, b = rows_a[(split, pid, seed)], rows_b[(split, pid, seed)]
        if a["prompt"] != b["prompt"]:
            raise GilbenchError(
                f"prompt {pid} of split {split} differs between the two runs; were they made with the same task "
                "version, --limit and split_seed?"
            )
        items.append(
            {
                "item": f"{split}/{pid}/seed{seed}",
                "split": split,
                "id": pid,
                "seed": seed,
                "prompt": a["prompt"],
                "group": a.get("group") if a.get("group") is not None else "(none)",
                "distribution": a.get("distribution") or ("ood" if split.startswith("ood") else "id"),
                "response_a": a["response"],
                "response_b": b["response"],
                "identical": a["response"].strip() == b["response"].strip(),
                "length_a": a.get("length", len(a["response"])),
                "length_b": b.get("length", len(b["response"])),
                "rm_score_a": a.get("rm_score"),
                "rm_score_b": b.get("rm_score"),
            }
        )
    unmatched = {"only_a": len(set(rows_a) - set(rows_b)), "only_b": len(set(rows_b) - set(rows_a))}
    return items, unmatched


def load_run_config(run: Path):
    """The RunConfig a run folder was made with (its config.yaml), type-checked like any config file."""
    from gilbench.config import RunConfig, update_dataclass

    run_dir = RunDir(run)
    if not run_dir.config_file.exists():
        raise GilbenchError(f"{run_dir.config_file} is missing: {run} is not a gilbench run folder")
    cfg = RunConfig()
    update_dataclass(cfg, run_dir.read_config())
    return cfg


def reward_model_dir(run: Path, output_dir: str | Path) -> tuple[Path, int]:
    """The reward model a run used, and its max_length: ``rm:auto``.

    A run's summary.json names it (``reward_model['rm/path']``); otherwise the pipeline's stage key is recomputed from the
    run's config.yaml (``gilbench.stages.cache.rm_key``), under the given ``output_dir``.
    """
    import dataclasses

    from gilbench.stages.cache import rm_stage_dir

    try:
        cfg = load_run_config(run)
    except GilbenchError as e:
        raise GilbenchError(
            f"rm:auto: {e}; pass the reward model folder explicitly, e.g. rm:{output_dir}/cache/rm/<key>"
        ) from None
    summary = RunDir(run).summary_file
    named = json.loads(summary.read_text()).get("reward_model", {}).get("rm/path") if summary.exists() else None
    path = Path(named) if named else rm_stage_dir(dataclasses.replace(cfg, output_dir=str(output_dir)))
    if not is_done(path):
        raise GilbenchError(
            f"rm:auto: the reward model of {run} should be in {path}, which is missing or unfinished; "
            f"pass one explicitly as rm:PATH (reward models live under {Path(output_dir) / 'cache' / 'rm'})"
        )
    return path, cfg.rm.max_length


def run_command(name: str, task: str) -> str:
    """The `gilbench run` command that makes runs of ``name``: a method, or ``<method>@<variant>``."""
    method, _, variant = name.partition("@")
    return f"gilbench run --method {method} --task {task}" + (f" --set variant={variant}" if variant else "")
