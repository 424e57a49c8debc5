#!/usr/bin/env python
"""PPO step-time benchmark of gilbench's loop: `tiny` against TRL's PPOTrainer, and smollm2-135m at three configs.

    python benchmarks/bench_ppo.py                    # everything (~10 min on 2 cores): tiny x3 vs TRL, 3 smollm2 configs
    python benchmarks/bench_ppo.py --only tiny        # tiny vs TRL only (median of --repeats invocations)
    python benchmarks/bench_ppo.py --only main-job    # one smollm2 config (main-job, ppo-2x2 or batch-64)
    python benchmarks/bench_ppo.py --set mixed_precision=no --set model.lora=false   # any config override
    python benchmarks/bench_ppo.py --only main-job --device cuda --policy-shape DIR --reward tiny   # a GPU, no weights

Every result is one JSON line with a `config` field. Each measured run is a fresh child process, so its peak
RSS is its own; the first step is excluded from the means (warm-up).

`tiny` is the TRL peer's exact configuration (../shared/bench/README.md): GPT-2 with 2 layers, 2 heads,
width 128, a 4096-token byte-level BPE trained on the peer's synthetic corpus, 64 prompts x 32 sampled
tokens at temperature 1 with no EOS stop, k1 KL 0.05, 4 PPO epochs of one minibatch of 64, AdamW lr 5e-5,
value coefficient 0.1, 2 threads. Precision (`--tiny-precision`): both sides in fp32 (the peer README's
configuration) or both under bf16 autocast (TRL's own PPOConfig default); `auto` picks bf16 where the CPU has
native bf16, as gilbench's `mixed_precision: auto` does. The peer runs each minibatch as 8 micro-batches of 8
(a larger one is not faster there: 2.76 against 2.82 s/step); gilbench as `--tiny-micro` rows, default 64, one
micro-batch per minibatch: bf16 kernels want long rows (update 0.62 s at 64, 0.70 at 32, 1.18 at 8), for 170 MB
more peak RSS. The peer runs in its own virtual environment (TRL 0.24 pins transformers 4.57):

    python3 -m venv .peer-venv && .peer-venv/bin/pip install torch==2.13.0 && \
    .peer-venv/bin/pip install torch==2.13.0 trl==0.24.0 transformers==4.57.1 accelerate==1.11.0 datasets==4.3.0 tokenizers==0.22.1

smollm2-135m configs use the task defaults of tasks/chitchat-ood.yaml (precision, LoRA, critic, micro-batches)
and the method `--method` (gil, the main job's), with fixed-length samples (no EOS stop) so every step
does the same work, and a MiniLM reward model:
  main-job  16 prompts x 24 new tokens, 1 PPO epoch of 1 minibatch (the main job's step)
  ppo-2x2   the same with 2 epochs x 2 minibatches
  batch-64  64 prompts x 32 new tokens, 2 epochs x 2 minibatches; also prints the projected wall time of
            a 150-step run at this size
Each line gives s/step split into rollout and update, generated tokens/s, peak RSS, and the step's matmul
FLOPs (a model of the work, see step_flops) as a fraction of this machine's matmul peak, measured at start (a
2048^2 matmul on the same threads) in the fastest precision the CPU computes natively (`peak_dtype`: bfloat16
with AVX512-BF16 or AMX, else float32).

On a GPU (`--device cuda`) the peak is a bf16 8192^2 matmul on that GPU and each line adds the GPU's peak
allocated memory. `--policy-shape DIR` takes a folder with only the policy's config.json and tokenizer files and
builds the policy from the config with random weights: with fixed-length samples a step's work does not depend
on the weights, so a machine without the model's weights (a lent GPU with no hub) still times its step.
`--reward` swaps the MiniLM reward model for another preset or folder (`tiny` where MiniLM is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT.parent / "shared" / "bench"
if not PEER_DIR.exists():  # a worktree: the shared folder sits next to the repositories
    PEER_DIR = Path("/work/shared/bench")

# (prompts, new tokens, PPO epochs, minibatches per epoch)
SMOLLM2_CONFIGS = {"main-job": (16, 24, 1, 1), "ppo-2x2": (16, 24, 2, 2), "batch-64": (64, 32, 2, 2)}
PROJECTED_STEPS = 150


# ----------------------------------------------------------------------------------- machine and FLOPs
def tiny_precision(args) -> str:
    """fp32 or bf16, the precision both sides of the tiny comparison run."""
    if args.tiny_precision == "auto":
        return "bf16" if native_peak_dtype() == "bfloat16" else "fp32"
    return args.tiny_precision


def native_peak_dtype() -> str:
    """The fastest matmul precision this CPU computes natively: bfloat16 with AVX512-BF16/AMX, else float32 (an
    emulated bfloat16 peak, 0.3-1.3 GFLOP/s on a Zen 3 EPYC, would make any step look like 100x the peak)."""
    from gilbench.models.precision import cpu_has_native_bf16

    return "bfloat16" if cpu_has_native_bf16() else "float32"


def matmul_peak_gflops(
    dtype_name: str = "bfloat16", size: int = 2048, seconds: float = 1.0, device: str = "cpu"
) -> float:
    """Median GFLOP/s of square matmuls on the current torch threads (or on the GPU ``device``)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)
    sync()
    samples, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 3:
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        samples.append(2 * size**3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(samples)


def linear_weights(module) -> int:
    """Multiply-accumulate weights per token of the matmuls in ``module`` (Linear and GPT-2's Conv1D)."""
    import torch

    return sum(
        m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
    )


def forward_flops(
    model_cfg, trunk_weights: int, head_weights: int, seqs: int, tokens: int, head_positions: int, shared: int = 0
) -> float:
    """2 x weights x tokens for the trunk, the vocabulary head on ``head_positions`` per sequence, attention 4 L T^2 d / 2;
    the first ``shared`` tokens of every sequence run once for all (gilbench.models.shared_prefix)."""
    layers, width = model_cfg.num_hidden_layers, model_cfg.hidden_size
    attention = 2 * layers * tokens * tokens * width  # QK^T and AV over a causal half of T x T, 4 L d each
    trunk_tokens = seqs * (tokens - shared) + shared
    return 2 * trunk_weights * trunk_tokens + seqs * (2 * head_weights * head_positions + attention)


def backward_factor(model) -> int:
    """Forward + backward = 3 x forward when the weights train, 2 x when they are frozen (LoRA: no weight grads)."""
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    return 3 if trained > sum(p.numel() for p in params) / 2 else 2


def step_flops(policy, critic, reward_flops: float, B: int, P: int, R: int, epochs: int, S: int = 0) -> float:
    """Matmul FLOPs of one PPO step: generation, rollout forwards (policy, reference, critic), reward model,
    and the update (forward + backward, for policy and critic; none for a critic on the policy's trunk); the
    forwards run the prompts' shared opening of ``S`` tokens once (once per micro-batch in fact: a few % more, left
    out). Elementwise work is left out."""
    cfg = policy.config
    head = cfg.vocab_size * cfg.hidden_size
    trunk = linear_weights(policy) - head
    T = P + R
    generation = forward_flops(cfg, trunk, head, B, T - 1, R)
    policy_fwd = forward_flops(cfg, trunk, head, B, T, R + 1, shared=S)
    shared = getattr(critic, "shares_policy_trunk", False)  # model.critic=shared: values come off the policy forward
    critic_fwd = 0 if shared else forward_flops(cfg, linear_weights(critic.trunk), 0, B, T, 0, shared=S)
    rollout = generation + 2 * policy_fwd + critic_fwd + reward_flops
    return rollout + epochs * (backward_factor(policy) * policy_fwd + backward_factor(critic) * critic_fwd)


# ----------------------------------------------------------------------------------- gilbench runs
def peer_model_and_prompts(folder: Path, n_prompts: int, prompt_len: int, seed: int = 0):
    """The peer's tokenizer, model shape and prompts, built by the peer script's own functions."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    sys.path.insert(0, str(PEER_DIR))
    sys.dont_write_bytecode = True
    import trl_ppo_peer as peer  # noqa: E402  (builds data only; TRL itself is imported in its main())

    rng = random.Random(seed)
    lines = peer.synthetic_corpus(rng)
    tok = peer.build_tokenizer(lines, 4096)
    prompt_ids = peer.build_prompts(tok, lines, rng, n_prompts, prompt_len)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_layer=2,
        n_head=2,
        n_embd=128,
        n_positions=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).save_pretrained(folder / "policy")
    tok.save_pretrained(folder / "policy")
    cfg.num_labels = 1
    torch.manual_seed(seed + 2)
    GPT2ForSequenceClassification(cfg).save_pretrained(folder / "reward")
    tok.save_pretrained(folder / "reward")
    return [tok.decode(p) for p in prompt_ids]


def random_policy(shape_dir: Path, folder: Path) -> Path:
    """A policy in ``folder`` built from ``shape_dir``'s config.json with random weights, its tokenizer copied."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_dir)).save_pretrained(folder)
    for f in shape_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy(f, folder / f.name)
    return folder


def bench_config(config: str, method: str, tiny_micro: int, overrides: list[str], device: str = "cpu"):
    """The RunConfig of one benchmark configuration, its sizes (B, R, epochs) and prompt format."""
    from gilbench import registry
    from gilbench.config import RunConfig, nest, parse_cli_value, update_dataclass
    from gilbench.resolve import config_for_method

    if config == "tiny":
        cfg = RunConfig(method=method, device=device, mixed_precision="no")
        B, R, epochs, minibatches = 64, 32, 4, 1
        cfg.rl.micro_batch_size, cfg.rl.max_prompt_length = tiny_micro, 32
        cfg.rl.lr = cfg.rl.critic_lr = 5e-5
        for dotted, value in getattr(registry.methods.get(method), "defaults", {}).items():
            update_dataclass(cfg, nest(dotted, value))
    else:
        cfg = config_for_method(method, task="chitchat-ood", device=device)  # auto precision resolves for it
        B, R, epochs, minibatches = SMOLLM2_CONFIGS[config]
        cfg.rl.micro_batch_size = min(cfg.rl.micro_batch_size, B // minibatches)
    rl = cfg.rl
    rl.rollout_batch_size, rl.minibatch_size, rl.ppo_epochs, rl.max_new_tokens = B, B // minibatches, epochs, R
    rl.forward_batch_size = max(rl.forward_batch_size, rl.minibatch_size) if config == "tiny" else rl.forward_batch_size
    rl.temperature, rl.top_p, rl.stop_at_eos, rl.kl_coef, rl.vf_coef = 1.0, 1.0, False, 0.05, 0.1
    rl.checkpoint_every, rl.log_rollouts_every = 0, 0
    for item in overrides:
        key, _, value = item.partition("=")
        update_dataclass(cfg, nest(key, parse_cli_value(value)))
    return cfg


def run_gilbench(args, config: str) -> dict:
    import torch

    steps, method, threads, tiny_micro, overrides = args.steps, args.method, args.threads, args.tiny_micro, args.set
    on_gpu = args.device.startswith("cuda")

    torch.set_num_threads(threads)
    from gilbench import registry
    from gilbench.allocator import allocator_setting
    from gilbench.config import build_method_config
    from gilbench.data.types import Prompt, TaskData
    from gilbench.method import RunContext
    from gilbench.models.presets import get_preset, load_sequence_classifier
    from gilbench.models.reward import RewardScorer
    from gilbench.pipeline import make_accelerator, quiet_transformers

    quiet_transformers()
    allocator = allocator_setting()
    peak_dtype = "bfloat16" if on_gpu else native_peak_dtype()
    peak = matmul_peak_gflops(peak_dtype, 8192 if on_gpu else 2048, device=args.device)
    tmp = Path(tempfile.mkdtemp(prefix="gilbench_bench_"))
    cfg = bench_config(config, method, tiny_micro, overrides, args.device)
    cfg.rl.steps, cfg.output_dir = steps, str(tmp)
    shape = None
    if config == "tiny":
        texts = peer_model_and_prompts(tmp, 512, 16)
        sft_path, reward_path, fmt = tmp / "policy", str(tmp / "reward"), "plain"
    else:
        # the cached safetensors, or a random policy of the same shape
        shape = args.policy_shape and random_policy(Path(args.policy_shape), tmp / "policy")
        sft_path, reward_path, fmt = shape or get_preset(cfg.model.policy).folder(), args.reward, "chat"
        # ~40 tokens each, sharing only the chat template's opening (24 tokens), as chitchat's and qa-chat's do
        openers = ("Tell me", "Say", "Write", "Give me")
        texts = [f"{openers[i % 4]} something interesting about topic number {i}." for i in range(512)]
    task = TaskData(
        name="bench",
        rl_prompts=[Prompt(id=str(i), text=t) for i, t in enumerate(texts)],
        sft=[],
        pairs_train=[],
        pairs_val=[],
        prompt_format=fmt,
    )
    rm_model, rm_tok = load_sequence_classifier(reward_path)
    method_cls = registry.methods.get(method)
    accelerator = make_accelerator(cfg)
    ctx = RunContext(
        cfg=cfg,
        method_cfg=build_method_config(method_cls.Config, cfg.method_args, method),
        task=task,
        run_dir=tmp / "run",
        accelerator=accelerator,
        sft_path=sft_path,
        reward=RewardScorer(rm_model.eval(), rm_tok, 128, 64),
        log=lambda s: None,
    )
    trainer = method_cls()
    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer.train(ctx)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] if len(rows) > 1 else rows
    rl = cfg.rl
    step = statistics.median(r["time/step"] for r in steady)
    tokens = statistics.mean(r["completions/mean_length"] * rl.rollout_batch_size for r in steady)
    # FLOP model of the step (the trainer's own models, so LoRA and critic choices count as they run)
    policy = trainer.acc.unwrap_model(trainer.policy)
    critic = trainer.acc.unwrap_model(trainer.critic)
    prompt_tokens = trainer.last_prompt_tokens
    reward_weights = linear_weights(rm_model)
    flops = step_flops(
        policy,
        critic,
        2.0 * reward_weights * rl.rollout_batch_size * (prompt_tokens + rl.max_new_tokens),
        rl.rollout_batch_size,
        prompt_tokens,
        rl.max_new_tokens,
        rl.ppo_epochs,
        trainer.last_shared_prefix,
    )
    out = {
        "runner": "gilbench",
        "config": config,
        "model": "tiny (peer GPT-2)" if config == "tiny" else cfg.model.policy + (" (random weights)" if shape else ""),
        "reward_model": "tiny (peer GPT-2)" if config == "tiny" else reward_path,
        "device": trainer.acc.device.type,
        "method": method,
        "batch": f"{rl.rollout_batch_size}x{rl.max_new_tokens}",
        "epochs_x_minibatches": f"{rl.ppo_epochs}x{rl.rollout_batch_size // rl.minibatch_size}",
        "micro_batch": rl.micro_batch_size,
        "mixed_precision": trainer.acc.mixed_precision,
        "lora": cfg.model.lora,
        "critic": cfg.model.critic,
        "gradient_checkpointing": cfg.model.gradient_checkpointing,
        "shared_prefix": trainer.last_shared_prefix,
        "critic_lora": cfg.model.critic_lora,
        "steps": steps,
        "seconds": round(seconds, 2),
        "step_s": round(step, 3),
        "rollout_s": round(statistics.median(r["time/rollout"] for r in steady), 3),
        "update_s": round(statistics.median(r["time/update"] for r in steady), 3),
        "tokens_per_s": round(tokens / step, 1),
        "episodes_per_s": round(rl.rollout_batch_size / step, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_s_per_step": round(cpu_seconds / steps, 2),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "step_gflop": round(flops / 1e9, 1),
        "peak_dtype": peak_dtype,
        "peak_gflops": round(peak, 1),
        "fraction_of_peak": round(flops / 1e9 / step / peak, 3),
        "threads": threads,
        "allocator": allocator,
    }
    if on_gpu:
        out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name()
    if config == "batch-64":
        out[f"projected_{PROJECTED_STEPS}_steps_min"] = round(PROJECTED_STEPS * step / 60, 1)
    return out


def run_peer(python: str, steps: int, threads: int, precision: str) -> dict:
    cmd = [python, str(PEER_DIR / "trl_ppo_peer.py"), "--rollout-batches", str(steps), "--threads", str(threads)]
    cmd += ["--bf16"] if precision == "bf16" else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"TRL peer failed:\n{out.stderr[-3000:]}")
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    steady = peer["per_batch_seconds"][1:] or peer["per_batch_seconds"]
    peer["step_s"] = round(statistics.median(steady), 3)
    return peer


def child(args, config: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        config,
        "--steps",
        str(args.steps if config == "tiny" else args.smollm2_steps),
        "--method",
        args.method if config != "tiny" else args.tiny_method,
        "--threads",
        str(args.threads),
        "--tiny-micro",
        str(args.tiny_micro),
        "--device",
        args.device,
        "--reward",
        args.reward,
    ]
    cmd += ["--policy-shape", args.policy_shape] if args.policy_shape else []
    for item in args.set:
        cmd += ["--set", item]
    if config == "tiny":  # after --set, so it wins: both sides of the comparison run the same precision
        cmd += ["--set", f"mixed_precision={tiny_precision(args)}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--only", action="append", choices=["tiny", *SMOLLM2_CONFIGS], help="run only these configs (repeatable)"
    )
    p.add_argument("--method", default="gil", help="method of the smollm2 configs (default gil, the main job's)")
    p.add_argument("--tiny-method", default="ppo-kl", help="method of the tiny config (ppo-kl: TRL's algorithm)")
    p.add_argument("--steps", type=int, default=8, help="PPO steps of each tiny run (and TRL's rollout batches)")
    p.add_argument("--smollm2-steps", type=int, default=4, help="PPO steps of each smollm2 run (the first is warm-up)")
    p.add_argument("--repeats", type=int, default=3, help="tiny vs TRL invocations; the ratio is their median")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny-micro", type=int, default=64, help="gilbench's micro-batch on tiny (TRL's is 8)")
    p.add_argument(
        "--tiny-precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="precision of both sides on tiny: fp32 (the peer README's configuration), bf16 autocast (TRL's "
        "PPOConfig default), auto = bf16 where the CPU has native bf16",
    )
    p.add_argument(
        "--set", action="append", default=[], help="config override KEY=VALUE for the gilbench runs (repeatable)"
    )
    p.add_argument(
        "--peer-python", default=str(ROOT / ".peer-venv" / "bin" / "python"), help="python of the TRL venv ('' to skip)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the gilbench runs train")
    p.add_argument("--policy-shape", help="folder with a config.json and tokenizer: a random policy of that shape")
    p.add_argument("--reward", default="minilm", help="reward model of the smollm2 configs (preset or folder)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # each run in its own process, so peak RSS is its own
        print(json.dumps(run_gilbench(args, args.child)))
        return
    configs = args.only or ["tiny", *SMOLLM2_CONFIGS]
    print(json.dumps({"machine": machine(), "load_avg_at_start": os.getloadavg()}), flush=True)
    if "tiny" in configs:
        ratios = []
        have_peer = bool(args.peer_python) and Path(args.peer_python).exists()
        for i in range(args.repeats):
            ours = child(args, "tiny")
            print(json.dumps(ours | {"invocation": i + 1}), flush=True)
            if have_peer:
                peer = run_peer(args.peer_python, args.steps, args.threads, tiny_precision(args))
                line = {
                    k: peer[k]
                    for k in (
                        "peer",
                        "trl_version",
                        "seconds",
                        "step_s",
                        "episodes_per_s",
                        "tokens_per_s",
                        "peak_rss_mb",
                        "precision",
                    )
                }
                print(json.dumps({"runner": "trl", "config": "tiny", "invocation": i + 1} | line), flush=True)
                ratios.append(peer["step_s"] / ours["step_s"])
        if ratios:
            print(
                json.dumps(
                    {
                        "config": "tiny",
                        "speedup_vs_trl_median": round(statistics.median(ratios), 2),
                        "speedups": [round(r, 2) for r in ratios],
                    }
                ),
                flush=True,
            )
        elif not have_peer:
            print(f"(TRL peer skipped: no {args.peer_python}; see the docstring to create it)", file=sys.stderr)
    for config in [c for c in configs if c != "tiny"]:
        print(json.dumps(child(args, config)), flush=True)


def machine() -> str:
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        name = os.uname().machine
    return f"{name}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"


if __name__ == "__main__":
    main()
