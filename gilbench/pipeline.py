"""One run: task -> SFT (cached) -> reward model (cached) -> the method -> generate on eval splits -> summary.

Stages are keyed by a hash of the config fields that change them, so a second method on the same task,
model and seed reuses the SFT policy and the reward model. Every stage writes atomically and marks
itself DONE; a killed run redoes only what was not finished (RL resumes from its checkpoint).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from gilbench import registry, tracking
from gilbench.allocator import keep_freed_memory
from gilbench.config import RunConfig
from gilbench.errors import GilbenchError
from gilbench.files import (
    MetricsLog,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    clean_stale_temps,
    is_done,
    mark_done,
    read_json,
)
from gilbench.method import RunContext
from gilbench.models.precision import bf16_emulated, resolve_mixed_precision
from gilbench.models.reward import RewardScorer
from gilbench.resolve import ResolvedRun, resolve_config
from gilbench.rl import checkpoint
from gilbench.stages.cache import check_stage_dir, reward_backbone, reward_stage, sft_stage
from gilbench.stages.generate import generate_split, summarise_scores
from gilbench.store import RunStore, environment_record


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


def quiet_transformers() -> None:
    """Our own tqdm bars show progress; transformers' per-load bars and notices would bury them."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def check_models_reachable(cfg: RunConfig) -> None:
    """A hub id with the hub unreachable: say so in seconds, not after the hub client's minute of retries."""
    from gilbench.data.hub import hub_unreachable

    for name in {cfg.model.policy, reward_backbone(cfg)}:
        if name in registry.models.names() or Path(name).expanduser().exists():
            continue
        why = hub_unreachable()
        if why:
            raise GilbenchError(
                f"model {name!r} is neither a preset nor a local folder, and the hub cannot be reached: {why}; "
                f"or pass a preset (gilbench ls models) or a local folder"
            )


def run(resolved: ResolvedRun | RunConfig, log=print, overwrite: bool = False) -> dict:
    """Run one method on one task with one seed; returns the summary written to summary.json.

    ``resolved`` comes from ``gilbench.resolve.resolve_run``; a RunConfig built in code is taken as given (checked)."""
    t_start = time.time()
    keep_freed_memory()
    quiet_transformers()
    if isinstance(resolved, RunConfig):
        resolved = resolve_config(resolved)
    cfg, method_cls, method_cfg, spec = resolved.cfg, resolved.method_cls, resolved.method_cfg, resolved.task
    check_models_reachable(cfg)
    store = RunStore(cfg.output_dir)
    run_dir = store.run(cfg.task, cfg.run_name(), cfg.seed)
    out = run_dir.path
    record = resolved.record()
    run_dir.claim(record, overwrite)
    # A finished run is checked (its files are read as a resume would) but not rewritten: env.json names the
    # code that made it and summary.json its wall time.
    finished = run_dir.finished
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "checkpoints", out / "generations"):
        clean_stale_temps(folder, owned=True)
    for stage in ("sft", "rm"):
        clean_stale_temps(store.stage_dir(stage, "x").parent)
    if not finished:
        atomic_write_yaml(run_dir.config_file, record)
        atomic_write_json(out / "env.json", environment_record())

    accelerator = make_accelerator(cfg)
    tracking.configure(cfg, out, accelerator)
    log(
        f"[gilbench] {cfg.run_name()} on {cfg.task}, seed {cfg.seed}, model {cfg.model.policy}, device {accelerator.device} "
        f"({'fp32' if accelerator.mixed_precision == 'no' else accelerator.mixed_precision}) -> {out}"
    )
    if bf16_emulated(accelerator.device.type, accelerator.mixed_precision):
        log(
            "[gilbench] warning: mixed_precision=bf16 on a CPU without AVX512-BF16 or AMX: bfloat16 matmuls are "
            "emulated here, 100-500x slower than float32; mixed_precision=auto picks float32 on this machine"
        )
    task = spec.load(seed=cfg.split_seed, limit=cfg.limit or None, data_dir=cfg.data_dir or None)
    sizes = task.sizes()
    sizes["eval_splits"] = sizes.pop("eval")  # task.json's name for it
    if not finished:
        atomic_write_json(out / "task.json", {"name": task.name, "notes": task.notes, **sizes})

    sft_path, sft_stats = sft_stage(cfg, task, accelerator, log)
    reward, rm_stats = (
        reward_stage(cfg, task, accelerator, log) if method_cls.needs_reward_model or task.eval_splits else (None, {})
    )
    ctx = RunContext(
        cfg=cfg,
        method_cfg=method_cfg,
        task=task,
        run_dir=out,
        accelerator=accelerator,
        sft_path=sft_path,
        reward=reward,
        log=log,
    )

    policy_dir = run_dir.policy_dir
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
        # evaluate it as is instead of reloading what was just saved (SFT and DPO hand theirs back on the CPU)
        trained = (policy.to(accelerator.device), tokenizer)
        if not cfg.rl.keep_checkpoint:
            checkpoint.discard(out)
    else:
        log(f"[gilbench] policy already trained in {policy_dir}; evaluating it")

    evals = generate_stage(cfg, task, policy_dir, reward, accelerator, out, log, trained)
    summary = build_summary(cfg, out, sft_stats, rm_stats, evals, time.time() - t_start)
    if finished:
        log(f"[gilbench] {out} was already finished; its files are intact and unchanged (--overwrite runs it again)")
        return read_json(run_dir.summary_file)
    atomic_write_json(run_dir.summary_file, summary)  # last: it marks the run finished
    return summary


def generate_stage(
    cfg: RunConfig, task, policy_dir: Path, reward: RewardScorer | None, accelerator, out: Path, log, trained=None
) -> dict:
    from gilbench.models.presets import load_causal_lm
    from gilbench.rl.model_setup import set_attention

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
            # the attention the RL loop sampled with, whether the policy was just trained or reloaded on resume
            set_attention(policy, cfg.model.attention, accelerator.device, cfg.model.share_prompt_prefix)
            rows = generate_split(
                policy,
                tokenizer,
                prompts,
                cfg.generate,
                task.prompt_format,
                accelerator.device,
                cfg.rl.max_prompt_length,
                cfg.seed,
            )
            if reward is not None:
                scores = reward.score([r["prompt"] for r in rows], [r["response"] for r in rows]).tolist()
                for row, score in zip(rows, scores):
                    row["rm_score"] = score
            for row in rows:
                row.update(split=split.name, distribution=split.distribution, method=cfg.run_name(), seed=cfg.seed)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        stats = summarise_scores([r["rm_score"] for r in rows if "rm_score" in r])
        stats["distribution"] = split.distribution
        stats["mean_length"] = sum(r["length"] for r in rows) / max(1, len(rows))
        results[split.name] = stats
        log(
            f"[gilbench] {split.name:<24} ({split.distribution}) reward-model score {stats['mean']:+.3f} ± {stats['stderr']:.3f} (n={stats['n']})"
        )
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
        "method": cfg.method,
        "name": cfg.run_name(),
        "task": cfg.task,
        "seed": cfg.seed,
        "model": cfg.model.policy,
        "run_dir": str(out),
        "sft": sft_stats,
        "reward_model": rm_stats,
        "training": curve,
        "eval": evals,
        "seconds": seconds,
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"== {summary.get('name', summary['method'])} on {summary['task']} (seed {summary['seed']}, {summary['model']}) in {summary['seconds']:.0f} s =="
    ]
    rm = summary["reward_model"]
    if rm:
        lines.append(
            f"reward model ({rm.get('rm/backbone')}): held-out pairwise accuracy {rm['rm/val_accuracy']:.3f} on {rm['rm/val_pairs']} pairs"
        )
    tr = summary["training"]
    if "objective/score" in tr:
        s, k = tr["objective/score"], tr["objective/kl"]
        lines.append(
            f"training: reward-model score {s['first']:+.3f} (first {s['window']} steps) -> {s['last']:+.3f} (last {s['window']})"
        )
        lines.append(
            f"          KL to reference   {k['first']:.3f} -> {k['last']:.3f} (max {tr['max_kl']:.3f}); {tr['mean_step_seconds']:.1f} s/step"
        )
    elif tr:
        lines.append(f"training: {tr['steps']} steps, {tr['mean_step_seconds'] or 0:.1f} s/step")
    for name, ev in summary["eval"].items():
        lines.append(
            f"eval {name:<22} [{ev['distribution']}] score {ev['mean']:+.3f} ± {ev['stderr']:.3f} (n={ev['n']}), mean length {ev['mean_length']:.1f}"
        )
    lines.append(f"written to {summary['run_dir']}")
    return "\n".join(lines)
