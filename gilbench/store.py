"""The run store: run directories, what "finished" means, config records, environment records (atomic writes: gilbench/files.py).

Layout under ``output_dir`` (default ``runs/`` in the current folder; the committed results are in results/runs)::

    cache/sft/<key>/          SFT policy, shared by every method on the same task, model and seed
    cache/rm/<key>/           reward model + its held-out accuracy
    <task>/<method>/seed<k>/  config.yaml, env.json, metrics.jsonl, checkpoints/, generations/, summary.json
    <task>/compare/<a>_vs_<b>/<judge>/  results.json of `gilbench compare`

``RunStore`` and ``RunDir`` own this layout and what "finished" means; everything else reads runs through them.
A stage directory counts as complete only once its ``DONE`` marker exists, so a killed stage is redone, never half-used;
a run is finished once its summary.json, written last, exists.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from gilbench.errors import GilbenchError

DEFAULT_OUTPUT_DIR = "runs"  # user runs; the committed results live in results/runs and are written only when asked for
ROLLOUTS = "rollouts.jsonl"  # a run's samples: one row per response, with its step and score (see gilbench.rl.trainer)

# Fields that do not change what a run computes: where things are, which device, what is logged.
NOT_RESULT_FIELDS = {
    "output_dir",
    "data_dir",
    "device",
    "tensorboard",
    "report_to",
    "rl.checkpoint_every",
    "rl.keep_checkpoint",
    "rl.log_rollouts_every",
}
PTX_REFERENCE = "ptx_reference.jsonl"  # ppo-ptx: the start policy's samples, made once per run and reused on resume
RUN_STATE = (
    "policy",
    "checkpoints",
    "metrics.jsonl",
    "generations",
    "summary.json",
    "method_summary.json",
    ROLLOUTS,
    PTX_REFERENCE,
)
STORE_DIRS = {"cache"}  # top-level folders of the run store that are not tasks
JUDGE_CURVE = "judge_curve.jsonl"  # optional per-run file: {"step": N, "win": w, ...} per judged checkpoint


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Result-changing fields whose value differs, as 'field: old -> new' (fields only one side knows are skipped)."""
    a, b = _flatten(old), _flatten(new)
    return [
        f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b)) if k not in NOT_RESULT_FIELDS and a[k] != b[k]
    ]


def config_spread(configs: list[dict]) -> dict[str, dict[str, int]]:
    """Result-changing fields on which several runs' configs disagree, the seed aside: field -> {value: runs}.
    Fields that only some configs know (added to the code later, at their defaults) are skipped."""
    flat = [_flatten(c) for c in configs]
    shared = set.intersection(*(set(f) for f in flat)) if flat else set()
    spread = {}
    for key in sorted(shared - NOT_RESULT_FIELDS - {"seed"}):
        values: dict[str, int] = {}
        for f in flat:
            values[repr(f[key])] = values.get(repr(f[key]), 0) + 1
        if len(values) > 1:
            spread[key] = values
    return spread


class RunDir:
    """One run folder ``<root>/<task>/<method>/seed<k>``: its files, and whether it started and finished."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file, self.summary_file = self.path / "config.yaml", self.path / "summary.json"
        self.metrics_file, self.rollouts_file = self.path / "metrics.jsonl", self.path / ROLLOUTS
        self.policy_dir, self.generations_dir = self.path / "policy", self.path / "generations"
        self.judge_curve_file = self.path / JUDGE_CURVE

    @property
    def seed(self) -> int:
        return int(self.path.name[4:])

    @property
    def finished(self) -> bool:
        """The pipeline writes summary.json last, after the policy and every split's generations: a finished run."""
        return self.summary_file.exists()

    @property
    def started(self) -> bool:
        return any((self.path / name).exists() for name in RUN_STATE)

    @property
    def has_results(self) -> bool:
        """Per-step metrics or a summary: what reports show (curves of a run still in flight included)."""
        return self.metrics_file.exists() or self.finished

    def generation_files(self) -> list[Path]:
        return sorted(self.generations_dir.glob("*.jsonl"))

    def config(self) -> dict | None:
        """The config.yaml this run was made with; None if there is none or it is damaged."""
        try:
            return self.read_config() if self.config_file.exists() else None
        except GilbenchError:
            return None

    def read_config(self) -> dict:
        """The config.yaml this run was made with, or a GilbenchError saying it is damaged and how to redo the run."""
        from gilbench.config import yaml_load

        try:
            cfg = yaml_load(self.config_file.read_text(encoding="utf-8"))
            if not isinstance(cfg, dict):
                raise ValueError("not a mapping")
        except (yaml.YAMLError, ValueError, OSError) as e:
            raise GilbenchError(
                f"{self.config_file} is damaged ({type(e).__name__}), so this run's config is unknown; "
                f"rerun with --overwrite to start the run again"
            ) from None
        return cfg

    def config_differences(self, resolved: dict) -> list[str]:
        """How ``resolved`` differs from the config of the work already here (empty: same, or nothing here yet)."""
        if not self.config_file.exists() or not self.started:
            return []
        return config_differences(self.read_config(), resolved)

    def claim(self, resolved: dict, overwrite: bool = False) -> None:
        """Make this folder the run of config ``resolved``: refuse one holding another config's work, unless ``overwrite``."""
        if overwrite:
            if self.path.exists():
                shutil.rmtree(self.path)
            return
        diff = self.config_differences(resolved)
        if diff:
            raise GilbenchError(
                different_config(self.path, diff, "rerun with --overwrite to start it again under the new config")
            )


def different_config(path, diff: list[str], fix: str) -> str:
    """The one-line refusal of a run folder holding another config's work; ``fix`` says how to redo it."""
    message = (
        f"{path} holds a run made with a different config ({'; '.join(diff)}); {fix}, or pass another --output-dir"
    )
    if any(d.startswith("mixed_precision:") for d in diff):  # auto resolves per machine: the usual cause
        message += (
            " (mixed_precision auto is bf16 only where the hardware computes it natively: continue the run on a "
            "machine like the one that started it, or pin --set mixed_precision for every run of a study)"
        )
    return message


class RunStore:
    """The layout under ``output_dir``: run folders by task, method and seed, stage caches, stored comparisons."""

    def __init__(self, root: str | Path = DEFAULT_OUTPUT_DIR):
        self.root = Path(root)

    def run(self, task: str, method: str, seed: int) -> RunDir:
        return RunDir(self.root / task / method / f"seed{seed}")

    def stage_dir(self, stage: str, key: str) -> Path:
        return self.root / "cache" / stage / key

    def compare_dir(self, task: str, a: str, b: str) -> Path:
        return self.root / task / "compare" / f"{a}_vs_{b}"

    def runs(self, task: str, method: str) -> list[RunDir]:
        """Run folders of one method with results (metrics or a summary), ordered by seed."""
        return sorted((r for r in self._seed_dirs(task, method) if r.has_results), key=lambda r: r.seed)

    def finished_runs(self, task: str, method: str) -> list[RunDir]:
        return [r for r in self.runs(task, method) if r.finished]

    def runs_with_generations(self, task: str, method: str) -> list[RunDir]:
        """What ``compare`` can judge: finished runs, and folders `gilbench generate` filled for a baseline model."""
        return sorted((r for r in self._seed_dirs(task, method) if r.generations_dir.is_dir()), key=lambda r: r.seed)

    def _seed_dirs(self, task: str, method: str) -> list[RunDir]:
        return [RunDir(d) for d in (self.root / task / method).glob("seed*") if d.is_dir() and d.name[4:].isdigit()]

    def runs_of_seed(self, task: str, seed: int) -> list[RunDir]:
        """The run of every method on ``task`` with ``seed``."""
        return [RunDir(d) for d in sorted((self.root / task).glob(f"*/seed{seed}")) if d.is_dir()]

    def methods(self, task: str) -> list[str]:
        folder = self.root / task
        if not folder.is_dir():
            return []
        return sorted(
            d.name for d in folder.iterdir() if d.is_dir() and d.name != "compare" and self.runs(task, d.name)
        )

    def tasks(self) -> list[str]:
        """Tasks with at least one run folder or stored comparison."""
        if not self.root.is_dir():
            return []
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name not in STORE_DIRS)
        return [d.name for d in folders if any(d.glob("*/seed*")) or (d / "compare").is_dir()]


def check_writable_dir(path: str | Path, flag: str) -> Path:
    """Create ``path`` if needed and make sure files can be written there, before anything is computed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GilbenchError(f"{flag} {path} is a file, not a folder; pass a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-")
        probe.close()
    except OSError as e:
        raise GilbenchError(
            f"{flag} {path}: cannot write there ({e.strerror}); pass a folder you can write to"
        ) from None
    return path


def git_hash() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5
        )
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
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine_record(),
        "git": git_hash(),
    }


def machine_record() -> dict:
    """What a run's wall times and ``mixed_precision: auto`` depend on: the CPU, its cores, native bf16, the GPU, and
    the memory allocator (gilbench/allocator.py)."""
    import torch

    from gilbench.allocator import allocator_setting
    from gilbench.models.precision import cpu_has_native_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator": allocator_setting(),
    }
