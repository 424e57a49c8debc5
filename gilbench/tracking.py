"""Experiment trackers for every training stage (``report_to``), through accelerate's tracker classes.

``report_to`` is ``none`` or a comma list of ``tensorboard``, ``wandb``, ``mlflow``, ``trackio``. Each training stage
(``sft``, ``rm``, ``rl``, ``dpo``) of a run becomes one tracker run named ``<task>/<method>/seed<k>/<stage>``, written
only by the main process, under ``RUN_DIR/tracking/``:

* tensorboard: event files in ``RUN_DIR/tracking/tensorboard/<stage>/``;
* wandb: offline mode (``WANDB_MODE=offline`` unless already set), files in ``RUN_DIR/tracking/wandb/``;
* mlflow: a local file store at ``RUN_DIR/tracking/mlruns`` (unless ``MLFLOW_TRACKING_URI`` is set; newer mlflow
  versions want ``MLFLOW_ALLOW_FILE_STORE=true`` for it, which is set unless already given);
* trackio: its local store (``TRACKIO_DIR`` or trackio's default), project ``gilbench-<task>``.

The SFT and reward-model stages are cached across methods, so only the run that trained them logs them.
The pipeline calls ``configure(cfg, run_dir, accelerator)`` once; stages call ``open_stage(name)`` and get an object
with ``log(values, step)`` and ``close()`` (a no-op without trackers).

Why not ``Accelerator(log_with=...)`` / ``end_training()``: one Accelerator serves all stages of a run, and
``end_training`` also destroys the process group, so it cannot close one stage's trackers mid-run. The tracker
classes are accelerate's own (``accelerate.tracking``), started and finished per stage.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from gilbench.errors import GilbenchError, require

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
_active: dict = {}


def parse_report_to(value: str, tensorboard_flag: bool = False) -> list[str]:
    """The tracker names in ``value`` (``none`` -> []), refusing unknown ones; the old ``tensorboard: true`` adds tensorboard."""
    names = [] if value.strip() in ("", "none") else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or "none" in names:
        raise GilbenchError(
            f"report_to: unknown tracker(s) {unknown or ['none']} in {value!r}; use none or a comma list of {', '.join(TRACKERS)}"
        )
    if tensorboard_flag and "tensorboard" not in names:
        names.append("tensorboard")
    return names


def check_installed(names: list[str]) -> None:
    """Refuse, before any training, a tracker whose package is missing."""
    for name in names:
        require(name, f"report_to={name}", extra=name)  # each tracker has an extra of its own name


def configure(cfg, run_dir: str | Path, accelerator) -> None:
    """Set the trackers of this run's stages (called once by the pipeline before any stage trains)."""
    names = parse_report_to(cfg.report_to, cfg.tensorboard)
    check_installed(names)
    _active.clear()
    _active.update(
        names=names,
        run_dir=Path(run_dir),
        main=accelerator.is_main_process,
        run_name=f"{cfg.task}/{cfg.method}/seed{cfg.seed}",
        task=cfg.task,
        config=_flat(asdict(cfg)),
    )


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def _make(name: str, stage: str, run_dir: Path, run_name: str, task: str):
    from accelerate import tracking

    base = run_dir / "tracking"
    if name == "tensorboard":
        return tracking.TensorBoardTracker(stage, str(base / "tensorboard"))
    if name == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        (base / "wandb").mkdir(parents=True, exist_ok=True)
        return tracking.WandBTracker(f"gilbench-{task}", name=f"{run_name}/{stage}", dir=str(base / "wandb"))
    if name == "mlflow":
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow >= 3.x asks file-store users to opt in
            mlflow.set_tracking_uri((base / "mlruns").resolve().as_uri())
        return tracking.MLflowTracker(experiment_name=f"gilbench-{task}", run_name=f"{run_name}/{stage}")
    return tracking.TrackioTracker(f"gilbench-{task}", name=f"{run_name}/{stage}")


class StageTracker:
    """The trackers of one stage; ``log`` drops values that are not numbers (trackers chart scalars)."""

    def __init__(self, stage: str):
        self.trackers = []
        if not _active.get("names") or not _active["main"]:
            return
        for name in _active["names"]:
            tracker = _make(name, stage, _active["run_dir"], _active["run_name"], _active["task"])
            tracker.start()
            if (
                name != "tensorboard"
            ):  # TensorBoard's hparams plugin writes a timestamped folder per call: keep its dir clean
                tracker.store_init_configuration(_active["config"])
            self.trackers.append(tracker)

    def log(self, values: dict, step: int) -> None:
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers:
            tracker.log(scalars, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def open_stage(stage: str) -> StageTracker:
    return StageTracker(stage)
