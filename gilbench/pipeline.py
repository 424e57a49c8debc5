"""One run: task -> SFT (cached) -> reward model (cached) -> the method -> generate on eval splits -> summary.

Stages are keyed by a hash of the config fields that change them, so a second method on the same task,
model and seed reuses the SFT policy and the reward model. Every stage writes atomically and marks
itself DONE; a killed run redoes only what was not finished (RL resumes from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from gilbench import registry, tracking
from gilbench.config import RunConfig, build_method_config, stable_hash, validate_config, yaml_load
from gilbench.data.tasks import as_task_spec
from gilbench.errors import GilbenchError
from gilbench.method import RunContext
from gilbench.models.precision import resolve_mixed_precision
from gilbench.models.reward import RewardScorer
from gilbench.rl import checkpoint
from gilbench.stages.generate import generate_split, summarise_scores
from gilbench.stages.reward import train_reward_model
from gilbench.stages.sft import train_sft
from gilbench.store import (
    MetricsLog,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    clean_stale_temps,
    environment_record,
    is_done,
    mark_done,
    read_json,
    run_dir,
    stage_dir,
)


def make_accelerator(cfg: RunConfig):
    from accelerate import Accelerator

    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise GilbenchError(f"--device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise GilbenchError(f"--device {cfg.device}: no CUDA device is visible on this machine; use --device cpu")
    if cfg.device.startswith("cuda:"):
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", cfg.device.split(":", 1)[1])
    precision = resolve_mixed_precision(cfg.mixed_precision, cfg.device)
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision):  # an earlier run in this process used another
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cfg.device == "cpu", mixed_precision=precision)


def reward_backbone(cfg: RunConfig) -> str:
    if cfg.model.reward != "auto":
        return cfg.model.reward
    return "minilm" if cfg.model.policy == "smollm2-135m" else cfg.model.policy


def data_key(cfg: RunConfig) -> dict:
    """What the cached stages (SFT, reward model) depend on besides their own config: the data, and the
    precision they trained in when it is not float32 (so float32 keys are those of earlier versions)."""
    key = {"task": cfg.task, "limit": cfg.limit, "data_dir": os.path.abspath(cfg.data_dir) if cfg.data_dir else "", "split_seed": cfg.split_seed}
    precision = resolve_mixed_precision(cfg.mixed_precision, cfg.device)
    return key | ({"mixed_precision": precision} if precision != "no" else {})


def quiet_transformers() -> None:
    """Our own tqdm bars show progress; transformers' per-load bars and notices would bury them."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# Fields that do not change what a run computes: where things are, which device, what is logged.
NOT_RESULT_FIELDS = {"output_dir", "data_dir", "device", "tensorboard", "report_to", "rl.checkpoint_every", "rl.keep_checkpoint", "rl.log_rollouts_every"}
RUN_STATE = ("policy", "checkpoints", "metrics.jsonl", "generations", "summary.json", "method_summary.json", "rollouts.jsonl")


def resolved_config(cfg: RunConfig, method_cfg=None) -> dict:
    """The config as recorded in a run folder's config.yaml: every field, the method's own config included."""
    return asdict(cfg) | {"method_args": asdict(method_cfg) if method_cfg is not None else {}}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Result-changing fields whose value differs, as 'field: old -> new' (fields only one side knows are skipped)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b)) if k not in NOT_RESULT_FIELDS and a[k] != b[k]]


def recorded_config_differences(out: Path, resolved: dict) -> list[str]:
    """How ``resolved`` differs from the config of the work already in ``out`` (empty: same, or nothing there yet)."""
    previous = out / "config.yaml"
    if not previous.exists() or not any((out / name).exists() for name in RUN_STATE):
        return []
    try:
        old = yaml_load(previous.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a mapping")
    except (yaml.YAMLError, ValueError, OSError) as e:
        raise GilbenchError(f"{previous} is damaged ({type(e).__name__}), so this run's config is unknown; "
                            f"rerun with --overwrite to start the run again") from None
    return config_differences(old, resolved)


def claim_run_dir(out: Path, resolved: dict, overwrite: bool = False) -> None:
    """Make ``out`` this config's run folder: refuse one holding work of a different config, unless ``overwrite``."""
    if overwrite:
        if out.exists():
            shutil.rmtree(out)
        return
    diff = recorded_config_differences(out, resolved)
    if diff:
        raise GilbenchError(f"{out} holds a run made with a different config ({'; '.join(diff)}); "
                            f"rerun with --overwrite to start it again under the new config, or pass another --output-dir")


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
        raise GilbenchError(f"{what} in {path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:80]}); {fix}") from None
    return path


def check_models_reachable(cfg: RunConfig) -> None:
    """A hub id with the hub unreachable: say so in seconds, not after the hub client's minute of retries."""
    from gilbench.data.hub import hub_unreachable

    for name in {cfg.model.policy, reward_backbone(cfg)}:
        if name in registry.models.names() or Path(name).expanduser().exists():
            continue
        why = hub_unreachable()
        if why:
            raise GilbenchError(f"model {name!r} is neither a preset nor a local folder, and the hub cannot be reached: {why}; "
                                f"or pass a preset (gilbench ls models) or a local folder")


def run(cfg: RunConfig, log=print, overwrite: bool = False) -> dict:
    """Run one method on one task with one seed; returns the summary written to summary.json."""
    t_start = time.time()
    quiet_transformers()
    # The run records the precision it ran in, not "auto" (which depends on the machine).
    cfg = dataclasses.replace(cfg, mixed_precision=resolve_mixed_precision(cfg.mixed_precision, cfg.device))
    method_cls = registry.methods.get(cfg.method)
    method_cfg = build_method_config(method_cls.Config, cfg.method_args, cfg.method)
    validate_config(cfg, method_cfg)
    check_models_reachable(cfg)
    spec = as_task_spec(registry.tasks.get(cfg.task), cfg.task)
    out = run_dir(cfg.output_dir, cfg.task, cfg.method, cfg.seed)
    resolved = resolved_config(cfg, method_cfg)
    claim_run_dir(out, resolved, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "checkpoints", out / "generations"):
        clean_stale_temps(folder, owned=True)
    for stage in ("sft", "rm"):
        clean_stale_temps(stage_dir(cfg.output_dir, stage, "x").parent)
    atomic_write_yaml(out / "config.yaml", resolved)
    atomic_write_json(out / "env.json", environment_record())

    accelerator = make_accelerator(cfg)
    tracking.configure(cfg, out, accelerator)
    log(f"[gilbench] {cfg.method} on {cfg.task}, seed {cfg.seed}, model {cfg.model.policy}, device {accelerator.device} -> {out}")
    task = spec.load(seed=cfg.split_seed, limit=cfg.limit or None, data_dir=cfg.data_dir or None)
    atomic_write_json(out / "task.json", {"name": task.name, "notes": task.notes, "rl_prompts": len(task.rl_prompts), "sft": len(task.sft),
                                          "pairs_train": len(task.pairs_train), "pairs_val": len(task.pairs_val),
                                          "eval_splits": {s.name: len(s.prompts) for s in task.eval_splits}})

    sft_path, sft_stats = sft_stage(cfg, task, accelerator, log)
    reward, rm_stats = reward_stage(cfg, task, accelerator, log) if method_cls.needs_reward_model or task.eval_splits else (None, {})
    ctx = RunContext(cfg=cfg, method_cfg=method_cfg, task=task, run_dir=out, accelerator=accelerator, sft_path=sft_path, reward=reward, log=log)

    policy_dir = out / "policy"
    trained = None
    if is_done(policy_dir):
        check_stage_dir(policy_dir, "trained policy")
    if not is_done(policy_dir):
        policy, tokenizer = method_cls().train(ctx)
        with atomic_dir(policy_dir) as tmp:
            policy = getattr(policy, "merge_and_unload", lambda: policy)()
            policy.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            mark_done(tmp)
        atomic_write_json(out / "method_summary.json", ctx.summary)
        trained = (policy, tokenizer)  # evaluate it as is instead of reloading what was just saved
        if not cfg.rl.keep_checkpoint:
            checkpoint.discard(out)
    else:
        log(f"[gilbench] policy already trained in {policy_dir}; evaluating it")

    evals = generate_stage(cfg, task, policy_dir, reward, accelerator, out, log, trained)
    summary = build_summary(cfg, out, sft_stats, rm_stats, evals, time.time() - t_start)
    atomic_write_json(out / "summary.json", summary)
    return summary


def sft_stage_dir(cfg: RunConfig) -> Path:
    """Where the starting policy of runs with this task, data, model, SFT config and seed is cached."""
    return stage_dir(cfg.output_dir, "sft", stable_hash(data_key(cfg), cfg.model.policy, cfg.sft, cfg.seed))


def sft_stage(cfg: RunConfig, task, accelerator, log) -> tuple[Path, dict]:
    from gilbench.models.presets import load_causal_lm

    path = sft_stage_dir(cfg)
    if is_done(path):
        log(f"[gilbench] SFT model cached: {path}")
        return check_stage_dir(path, "SFT policy"), read_json(path / "stats.json", f"delete {path} and rerun the same command")
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
    key = stable_hash(data_key(cfg), backbone, cfg.rm, cfg.seed)
    path = stage_dir(cfg.output_dir, "rm", key)
    if is_done(path):
        log(f"[gilbench] reward model cached: {path}")
        check_stage_dir(path, "reward model")
        model, tokenizer = load_sequence_classifier(str(path))
        stats = read_json(path / "stats.json", f"delete {path} and rerun the same command")
        return RewardScorer(model.to(accelerator.device).eval(), tokenizer, cfg.rm.max_length), stats | {"rm/path": str(path)}
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_sequence_classifier(backbone)
    scorer = RewardScorer(model.to(accelerator.device), tokenizer, cfg.rm.max_length)
    pairs = task.pairs_train[: cfg.rm.max_pairs or None]
    log(f"[gilbench] reward model ({backbone}) on {len(pairs)} pairs, {len(task.pairs_val)} held out")
    stats = train_reward_model(scorer, pairs, task.pairs_val, cfg.rm, accelerator, cfg.seed)
    stats["rm/backbone"] = backbone
    log(f"[gilbench] reward model held-out pairwise accuracy {stats['rm/val_accuracy']:.3f} (before training {stats['rm/val_accuracy_before']:.3f})")
    with atomic_dir(path) as tmp:
        scorer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "stats.json", stats)
        mark_done(tmp)
    return scorer, stats | {"rm/path": str(path)}


def generate_stage(cfg: RunConfig, task, policy_dir: Path, reward: RewardScorer | None, accelerator, out: Path, log, trained=None) -> dict:
    from gilbench.models.presets import load_causal_lm

    results = {}
    policy, tokenizer = trained or (None, None)
    for split in task.eval_splits:
        path = out / "generations" / f"{split.name.replace(':', '_')}.jsonl"
        prompts = split.prompts[: cfg.generate.max_prompts or None]
        if path.exists():
            rows = read_generations(path, len(prompts))
        else:
            if policy is None:
                policy, tokenizer = load_causal_lm(str(policy_dir))
                policy.to(accelerator.device)
            rows = generate_split(policy, tokenizer, prompts, cfg.generate, task.prompt_format, accelerator.device, cfg.rl.max_prompt_length, cfg.seed)
            if reward is not None:
                scores = reward.score([r["prompt"] for r in rows], [r["response"] for r in rows]).tolist()
                for row, score in zip(rows, scores):
                    row["rm_score"] = score
            for row in rows:
                row.update(split=split.name, distribution=split.distribution, method=cfg.method, seed=cfg.seed)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        stats = summarise_scores([r["rm_score"] for r in rows if "rm_score" in r])
        stats["distribution"] = split.distribution
        stats["mean_length"] = sum(r["length"] for r in rows) / max(1, len(rows))
        results[split.name] = stats
        log(f"[gilbench] {split.name:<24} ({split.distribution}) reward-model score {stats['mean']:+.3f} ± {stats['stderr']:.3f} (n={stats['n']})")
    return results


def read_generations(path: Path, expected: int) -> list[dict]:
    """A split's stored generations: every line whole, one per prompt; else say how to regenerate them."""
    fix = f"delete {path} and rerun the same command to generate that split again"
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "response" not in row:
                    raise ValueError("not a generation row")
            except ValueError as e:
                raise GilbenchError(f"{path} line {n} is damaged ({str(e)[:60]}); {fix}") from None
            rows.append(row)
    if len(rows) != expected:
        raise GilbenchError(f"{path} has {len(rows)} rows for {expected} prompts; {fix}")
    return rows


def build_summary(cfg: RunConfig, out: Path, sft_stats: dict, rm_stats: dict, evals: dict, seconds: float) -> dict:
    rows = MetricsLog(out / "metrics.jsonl").rows()
    curve: dict = {}
    if rows:
        k = max(1, min(10, len(rows) // 2))  # first and last windows never overlap

        def window(name: str, part: list[dict]):
            values = [r[name] for r in part if r.get(name) is not None]
            return sum(values) / len(values) if values else None

        for name in ("objective/score", "objective/kl", "completions/mean_length"):
            if any(r.get(name) is not None for r in rows):  # DPO, for one, samples nothing during training
                curve[name] = {"first": window(name, rows[:k]), "last": window(name, rows[-k:]), "window": k}
        kls = [r["objective/kl"] for r in rows if r.get("objective/kl") is not None]
        curve["max_kl"] = max(kls) if kls else None
        curve["steps"] = rows[-1]["step"]
        curve["mean_step_seconds"] = window("time/step", rows)
    return {
        "method": cfg.method, "task": cfg.task, "seed": cfg.seed, "model": cfg.model.policy, "run_dir": str(out),
        "sft": sft_stats, "reward_model": rm_stats, "training": curve, "eval": evals, "seconds": seconds,
    }


def format_summary(summary: dict) -> str:
    lines = [f"== {summary['method']} on {summary['task']} (seed {summary['seed']}, {summary['model']}) in {summary['seconds']:.0f} s =="]
    rm = summary["reward_model"]
    if rm:
        lines.append(f"reward model ({rm.get('rm/backbone')}): held-out pairwise accuracy {rm['rm/val_accuracy']:.3f} on {rm['rm/val_pairs']} pairs")
    tr = summary["training"]
    if "objective/score" in tr:
        s, k = tr["objective/score"], tr["objective/kl"]
        lines.append(f"training: reward-model score {s['first']:+.3f} (first {s['window']} steps) -> {s['last']:+.3f} (last {s['window']})")
        lines.append(f"          KL to reference   {k['first']:.3f} -> {k['last']:.3f} (max {tr['max_kl']:.3f}); {tr['mean_step_seconds']:.1f} s/step")
    elif tr:
        lines.append(f"training: {tr['steps']} steps, {tr['mean_step_seconds'] or 0:.1f} s/step")
    for name, ev in summary["eval"].items():
        lines.append(f"eval {name:<22} [{ev['distribution']}] score {ev['mean']:+.3f} ± {ev['stderr']:.3f} (n={ev['n']}), mean length {ev['mean_length']:.1f}")
    lines.append(f"written to {summary['run_dir']}")
    return "\n".join(lines)
