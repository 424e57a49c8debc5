"""Reading stored results for reports: run folders, their per-step metrics and summaries, compare results.

Everything here only reads what ``gilbench run`` and ``gilbench compare`` wrote (see gilbench/pipeline.py and
gilbench/eval/compare.py); iteration orders are sorted so that tables built from it are reproducible byte for byte.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gilbench.eval.base import slug
from gilbench.files import MetricsLog, read_json
from gilbench.store import RunDir, RunStore


def task_names(output_dir: str | Path) -> list[str]:
    """Tasks with at least one run folder (``<task>/<method>/seed<k>``) or stored comparison."""
    return RunStore(output_dir).tasks()


def method_names(output_dir: str | Path, task: str) -> list[str]:
    return RunStore(output_dir).methods(task)


def seed_dirs(output_dir: str | Path, task: str, method: str) -> list[Path]:
    """Run folders of one method, ordered by seed, that hold metrics or a summary."""
    return [r.path for r in RunStore(output_dir).runs(task, method)]


def finished_seed_dirs(output_dir: str | Path, task: str, method: str) -> list[Path]:
    """Run folders of one method whose run finished: tables leave runs still in flight out."""
    return [r.path for r in RunStore(output_dir).finished_runs(task, method)]


def read_metrics(run: Path) -> list[dict]:
    return MetricsLog(RunDir(run).metrics_file).rows()


def read_summary(run: Path) -> dict | None:
    path = RunDir(run).summary_file
    return read_json(path) if path.exists() else None


def read_judge_curve(run: Path) -> list[dict] | None:
    """Per-checkpoint judge win rates of a run, if someone stored them; None otherwise (the usual case)."""
    path = RunDir(run).judge_curve_file
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((r for r in rows if r.get("win") is not None), key=lambda r: r["step"])


def series(rows: list[dict], name: str) -> tuple[list[int], list[float]]:
    """Steps and finite values of one metric (JSON null, i.e. a stored NaN, is left out)."""
    steps, values = [], []
    for r in rows:
        v = r.get(name)
        if isinstance(v, (int, float)) and math.isfinite(v):
            steps.append(int(r["step"]))
            values.append(float(v))
    return steps, values


# --------------------------------------------------------------------------------------------- comparisons
def compare_dir(output_dir: str | Path, task: str, a: str, b: str) -> Path:
    return RunStore(output_dir).compare_dir(task, a, b)


def judge_id(text: str | None) -> str | None:
    """The folder name of a judge: ids as stored (gold-v1, rm-...), or the --judge spelling openai:MODEL / hf:MODEL."""
    kind, sep, model = (text or "").partition(":")
    return f"{kind}-{slug(model)}" if sep and kind in ("openai", "hf") else text


def judges_for(output_dir: str | Path, task: str, a: str, b: str) -> list[str]:
    """Judge ids with stored results for the pair, in either orientation."""
    found = set()
    for x, y in ((a, b), (b, a)):
        d = compare_dir(output_dir, task, x, y)
        if d.is_dir():
            found |= {j.name for j in d.iterdir() if (j / "results.json").exists()}
    return sorted(found)


def load_compare(output_dir: str | Path, task: str, a: str, b: str, judge: str) -> dict | None:
    """Results of A vs B under ``judge``; read from B_vs_A with win and lose swapped when only that one exists."""
    path = compare_dir(output_dir, task, a, b) / judge / "results.json"
    if path.exists():
        return read_json(path) | {"flipped": False}
    path = compare_dir(output_dir, task, b, a) / judge / "results.json"
    return flip(read_json(path)) if path.exists() else None


def _swap_counts(st: dict | None) -> dict:
    st = st or {}
    return {**st, "wins": st.get("losses"), "losses": st.get("wins")}


def _flip_entry(e: dict) -> dict:
    out = dict(e)
    for x, y in (("win", "lose"), ("win_ci", "lose_ci"), ("win_seeds", "lose_seeds")):
        out[x], out[y] = e.get(y), e.get(x)
    out["sign_test"] = _swap_counts(e.get("sign_test"))
    if "prompt_sign_test" in e:
        out["prompt_sign_test"] = _swap_counts(e["prompt_sign_test"])
    d = e.get("score_difference")
    if d:
        lo, hi = d["diff_ci"]
        out["score_difference"] = d | {
            "a": d["b"],
            "b": d["a"],
            "diff": -d["diff"],
            "diff_ci": [-hi, -lo],
            "prompt_sign_test": _swap_counts(d["prompt_sign_test"]),
        }
        seeds = d.get("across_seeds")
        if seeds:
            out["score_difference"]["across_seeds"] = seeds | {
                "per_seed": {k: -v for k, v in seeds["per_seed"].items()},
                "mean": -seeds["mean"],
                "ci": [-seeds["ci"][1], -seeds["ci"][0]] if seeds["ci"] else None,
            }
    if e.get("worst_group_score"):
        out["worst_group_score"] = {"a": e["worst_group_score"]["b"], "b": e["worst_group_score"]["a"]}
    return out


def flip(r: dict) -> dict:
    """B_vs_A results seen from A: win and lose (and their CIs, the sign test counts) swap; the gap CI is lost."""
    rm = r.get("reward_model_score") or {}
    swap = lambda v: {"a": v["b"], "b": v["a"]}  # noqa: E731
    return {
        **r,
        "a": r["b"],
        "b": r["a"],
        "flipped": True,
        "gap_id_minus_ood": None,
        "splits": [
            _flip_entry(s) | {"groups": {g: _flip_entry(v) for g, v in s.get("groups", {}).items()}}
            for s in r["splits"]
        ],
        "distributions": {d: _flip_entry(v) for d, v in r["distributions"].items()},
        "reward_model_score": {k: {n: swap(v) for n, v in rm.get(k, {}).items()} for k in ("splits", "distributions")},
    }


def select(results: dict, selector: str) -> dict | None:
    """A split of a comparison by name (``id:test``) or a whole distribution (``id`` / ``ood``)."""
    if selector in results.get("distributions", {}):
        return results["distributions"][selector]
    return next((s for s in results.get("splits", []) if s["split"] == selector), None)


def select_rm(results: dict, selector: str) -> dict | None:
    rm = results.get("reward_model_score") or {}
    return rm.get("distributions", {}).get(selector) or rm.get("splits", {}).get(selector)


def summary_score(summary: dict, selector: str) -> float | None:
    """Mean reward-model score of a run on a split, or on a distribution (n-weighted over its splits)."""
    evals = summary.get("eval") or {}
    if selector in evals:
        return evals[selector].get("mean")
    parts = [
        e for e in evals.values() if e.get("distribution") == selector and e.get("mean") is not None and e.get("n")
    ]
    if not parts:
        return None
    return sum(e["mean"] * e["n"] for e in parts) / sum(e["n"] for e in parts)
