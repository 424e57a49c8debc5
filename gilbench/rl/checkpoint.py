"""Resumable checkpoints of an RL run: models (the critic if the method has one), optimizers, KL controller, reward statistics, RNG states.

Only the newest checkpoint is kept; it is written to a temporary folder and renamed into place,
so a run killed while saving still has its previous checkpoint."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from gilbench.errors import GilbenchError
from gilbench.files import atomic_dir, is_done, mark_done

STATE_KEYS = ("step", "policy", "critic", "policy_opt", "critic_opt", "kl_ctl", "reward_stats", "method", "rng")


def _dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def discard(run_dir: Path) -> None:
    """Remove a finished run's checkpoints: its policy is saved, and models + optimizer states are ~20x its size."""
    if _dir(run_dir).exists():
        shutil.rmtree(_dir(run_dir))


def latest_step(run_dir: Path) -> int:
    steps = [int(p.name.split("_")[1]) for p in _dir(run_dir).glob("step_*") if is_done(p)]
    return max(steps, default=0)


def save(trainer, run_dir: Path, step: int) -> Path:
    acc = trainer.acc
    acc.wait_for_everyone()
    target = _dir(run_dir) / f"step_{step}"
    if acc.is_main_process:
        with atomic_dir(target) as tmp:
            torch.save(
                {
                    "step": step,
                    "policy": acc.unwrap_model(trainer.policy).state_dict(),
                    "critic": acc.unwrap_model(trainer.critic).state_dict() if trainer.critic is not None else None,
                    "policy_opt": trainer.policy_opt.state_dict(),
                    "critic_opt": trainer.critic_opt.state_dict() if trainer.critic is not None else None,
                    "kl_ctl": trainer.kl_ctl.state_dict(),
                    "reward_stats": trainer.reward_stats.state_dict(),
                    "method": trainer.method_state(),
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "numpy": np.random.get_state(),
                        "python": random.getstate(),
                    },
                },
                tmp / "trainer.pt",
            )
            mark_done(tmp)
        for old in _dir(run_dir).glob("step_*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return target


def restore(trainer, run_dir: Path) -> int:
    """Load the newest complete checkpoint into ``trainer``; returns its step (0 if none)."""
    step = latest_step(run_dir)
    if not step:
        return 0
    folder = _dir(run_dir) / f"step_{step}"
    try:
        state = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=False)
        missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else ["all"]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
    except Exception as e:  # noqa: BLE001  (unpickling a cut or overwritten file fails in many ways; all mean: damaged)
        raise GilbenchError(
            f"the checkpoint {folder} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:80]}); delete that folder "
            f"and rerun the same command to restart the run from step 0"
        ) from None
    acc = trainer.acc
    acc.unwrap_model(trainer.policy).load_state_dict(state["policy"])
    trainer.policy_opt.load_state_dict(state["policy_opt"])
    if trainer.critic is not None:  # a critic-free method saved None
        acc.unwrap_model(trainer.critic).load_state_dict(state["critic"])
        trainer.critic_opt.load_state_dict(state["critic_opt"])
    trainer.kl_ctl.load_state_dict(state["kl_ctl"])
    trainer.reward_stats.load_state_dict(state["reward_stats"])
    trainer.load_method_state(state["method"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return step
