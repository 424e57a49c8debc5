"""The run store: run directories, atomic writes, per-step metrics, and the stage cache.

Layout under ``output_dir`` (default results/runs)::

    cache/sft/<key>/          SFT policy, shared by every method on the same task, model and seed
    cache/rm/<key>/           reward model + its held-out accuracy
    <task>/<method>/seed<k>/  config.yaml, env.json, metrics.jsonl, checkpoints/, generations/, summary.json

A directory counts as complete only once its ``DONE`` marker exists, so a killed stage is redone, never half-used.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

DONE = "DONE"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every reader can parse the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(_finite(obj), default=_json_default, **kwargs)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_done(path: str | Path) -> bool:
    return (Path(path) / DONE).exists()


def mark_done(path: str | Path) -> None:
    atomic_write_text(Path(path) / DONE, "")


def _step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except json.JSONDecodeError:  # the torn last line of a run killed while appending
        return float("inf")


ROLLOUTS = "rollouts.jsonl"  # a run's samples: one row per response, with its step and score (see gilbench.rl.trainer)


class MetricsLog:
    """Append-only JSONL of per-step metrics; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and _step(line) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, row: dict) -> None:
        self.extend([row])

    def extend(self, rows: list[dict]) -> None:
        with self.path.open("a") as f:
            f.write("".join(dumps(row, sort_keys=True) + "\n" for row in rows))
            f.flush()

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def run_dir(output_dir: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(output_dir) / task / method / f"seed{seed}"


def stage_dir(output_dir: str | Path, stage: str, key: str) -> Path:
    return Path(output_dir) / "cache" / stage / key


def git_hash() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_record() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("gilbench", "torch", "transformers", "accelerate", "datasets", "peft", "numpy", "tokenizers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "python": platform.python_version(), "platform": platform.platform(), "git": git_hash()}
