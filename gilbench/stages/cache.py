"""The cached stages: the SFT policy and the reward model, shared by every method on the same task, model and seed.

Each is keyed by a hash of only the config fields that change its output (``sft_key``, ``rm_key``) and lives in
``RunStore.stage_dir`` (``<output_dir>/cache/<stage>/<key>``), written atomically and marked DONE; a cached folder
is checked to load before it is used. The training loops themselves are in sft.py and reward.py beside this file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from gilbench.config import RunConfig, stable_hash
from gilbench.errors import GilbenchError
from gilbench.files import atomic_dir, atomic_write_json, is_done, mark_done, read_json
from gilbench.models.precision import resolve_mixed_precision
from gilbench.models.reward import RewardScorer, set_reward_pooling
from gilbench.stages.reward import train_reward_model
from gilbench.stages.sft import train_sft
from gilbench.store import RunStore


def reward_backbone(cfg: RunConfig) -> str:
    if cfg.model.reward != "auto":
        return cfg.model.reward
    return "minilm" if cfg.model.policy == "smollm2-135m" else cfg.model.policy


def data_key(cfg: RunConfig) -> dict:
    """What the cached stages (SFT, reward model) depend on besides their own config: the data, and the
    precision they trained in when it is not float32 (so float32 keys are those of earlier versions)."""
    key = {
        "task": cfg.task,
        "limit": cfg.limit,
        "data_dir": os.path.abspath(cfg.data_dir) if cfg.data_dir else "",
        "split_seed": cfg.split_seed,
    }
    precision = resolve_mixed_precision(cfg.mixed_precision, cfg.device)
    return key | ({"mixed_precision": precision} if precision != "no" else {})


def sft_key(cfg: RunConfig) -> str:
    return stable_hash(data_key(cfg), cfg.model.policy, cfg.sft, cfg.seed)


def rm_key(cfg: RunConfig) -> str:
    rm = dataclasses.asdict(cfg.rm)
    if rm["pooling"] == "auto":  # how every reward model scored before the option existed: keep their keys
        del rm["pooling"]
    if not rm["micro_batch_size"]:  # likewise: one forward a batch, as before the option existed
        del rm["micro_batch_size"]
    return stable_hash(data_key(cfg), reward_backbone(cfg), rm, cfg.seed)


def rm_stage_dir(cfg: RunConfig) -> Path:
    """Where the reward model of runs with this task, data, backbone, reward-model config and seed is cached."""
    return RunStore(cfg.output_dir).stage_dir("rm", rm_key(cfg))


def check_stage_dir(path: Path, what: str) -> Path:
    """A cached model folder marked DONE must still load: catch a cut or overwritten weights/config file early."""
    from safetensors import safe_open

    fix = f"delete {path} and rerun the same command to rebuild the {what}"
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise ValueError("no *.safetensors file")
        for file in weights:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    f.get_tensor(name)
    except Exception as e:  # noqa: BLE001  (safetensors, json and OS errors all mean the same: the files are damaged)
        raise GilbenchError(
            f"{what} in {path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:80]}); {fix}"
        ) from None
    return path


def sft_stage_dir(cfg: RunConfig) -> Path:
    """Where the starting policy of runs with this task, data, model, SFT config and seed is cached."""
    return RunStore(cfg.output_dir).stage_dir("sft", sft_key(cfg))


def sft_stage(cfg: RunConfig, task, accelerator, log) -> tuple[Path, dict]:
    from gilbench.models.presets import load_causal_lm

    path = sft_stage_dir(cfg)
    if is_done(path):
        log(f"[gilbench] SFT model cached: {path}")
        return check_stage_dir(path, "SFT policy"), read_json(
            path / "stats.json", f"delete {path} and rerun the same command"
        )
    model, tokenizer = load_causal_lm(cfg.model.policy)
    stats: dict = {"sft/enabled": cfg.sft.enabled}
    if cfg.sft.enabled:
        examples = task.sft[: cfg.sft.max_examples or None]
        log(f"[gilbench] SFT on {len(examples)} examples")
        torch.manual_seed(cfg.seed)
        stats.update(train_sft(model, tokenizer, examples, cfg.sft, task.prompt_format, accelerator, cfg.seed))
        model = accelerator.unwrap_model(model)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "stats.json", stats)
        mark_done(tmp)
    return path, stats


def reward_stage(cfg: RunConfig, task, accelerator, log) -> tuple[RewardScorer, dict]:
    from gilbench.models.presets import load_sequence_classifier

    backbone = reward_backbone(cfg)
    path = rm_stage_dir(cfg)
    if is_done(path):
        log(f"[gilbench] reward model cached: {path}")
        check_stage_dir(path, "reward model")
        model, tokenizer = load_sequence_classifier(str(path))
        stats = read_json(path / "stats.json", f"delete {path} and rerun the same command")
        return RewardScorer(model.to(accelerator.device).eval(), tokenizer, cfg.rm.max_length), stats | {
            "rm/path": str(path)
        }
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_sequence_classifier(backbone)
    pooling = set_reward_pooling(model, cfg.rm.pooling)  # saved in its config.json: a reloaded copy scores the same way
    scorer = RewardScorer(model.to(accelerator.device), tokenizer, cfg.rm.max_length)
    pairs = task.pairs_train[: cfg.rm.max_pairs or None]
    log(f"[gilbench] reward model ({backbone}) on {len(pairs)} pairs, {len(task.pairs_val)} held out")
    stats = train_reward_model(scorer, pairs, task.pairs_val, cfg.rm, accelerator, cfg.seed)
    stats["rm/backbone"], stats["rm/pooling"] = backbone, pooling
    log(
        f"[gilbench] reward model held-out pairwise accuracy {stats['rm/val_accuracy']:.3f} (before training {stats['rm/val_accuracy_before']:.3f})"
    )
    with atomic_dir(path) as tmp:
        scorer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "stats.json", stats)
        mark_done(tmp)
    return scorer, stats | {"rm/path": str(path)}
