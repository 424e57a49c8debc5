#!/usr/bin/env python
"""PPO step-time benchmark of gilbench's loop, with TRL's PPOTrainer as a peer in the same invocation.

    python benchmarks/bench_ppo.py                       # tiny config vs TRL (needs .peer-venv, see below)
    python benchmarks/bench_ppo.py --model smollm2-135m  # the real small model (no peer)

`tiny` here is the peer's exact configuration (../shared/bench/README.md): GPT-2 with 2 layers, 2 heads,
width 128, a 4096-token byte-level BPE trained on the peer's synthetic corpus, 64 prompts x 32 sampled
tokens at temperature 1 with no EOS stop, k1 KL 0.05, 4 PPO epochs, each one minibatch of 64 run as
8 micro-batches of 8, AdamW lr 5e-5, value coefficient 0.1, fp32, 2 threads. The peer runs in its own
virtual environment (TRL 0.24 pins transformers 4.57):

    python3 -m venv .peer-venv && .peer-venv/bin/pip install torch==2.13.0 && \
    .peer-venv/bin/pip install torch==2.13.0 trl==0.24.0 transformers==4.57.1 accelerate==1.11.0 datasets==4.3.0 tokenizers==0.22.1

Prints, per model: seconds per step split into rollout and update, generated tokens/s, episodes/s and
peak RSS; then TRL's figures and the ratio. The first step is excluded from the means (warm-up).
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
PEER_DIR = ROOT.parent / "shared" / "bench"


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
    cfg = GPT2Config(vocab_size=len(tok), n_layer=2, n_head=2, n_embd=128, n_positions=256,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).save_pretrained(folder / "policy")
    tok.save_pretrained(folder / "policy")
    cfg.num_labels = 1
    torch.manual_seed(seed + 2)
    GPT2ForSequenceClassification(cfg).save_pretrained(folder / "reward")
    tok.save_pretrained(folder / "reward")
    return [tok.decode(p) for p in prompt_ids]


def run_gilbench(model: str, steps: int, method: str, threads: int) -> dict:
    import time

    import torch

    torch.set_num_threads(threads)
    from accelerate import Accelerator

    from gilbench import registry
    from gilbench.config import RunConfig, build_method_config
    from gilbench.data.types import Prompt, TaskData
    from gilbench.method import RunContext
    from gilbench.models.presets import load_causal_lm, load_sequence_classifier
    from gilbench.models.reward import RewardScorer

    tmp = Path(tempfile.mkdtemp(prefix="gilbench_bench_"))
    cfg = RunConfig(method=method, device="cpu", output_dir=str(tmp))
    rl = cfg.rl
    rl.steps, rl.rollout_batch_size, rl.minibatch_size, rl.micro_batch_size, rl.ppo_epochs = steps, 64, 64, 8, 4
    rl.max_new_tokens, rl.temperature, rl.top_p, rl.stop_at_eos = 32, 1.0, 1.0, False
    rl.kl_coef, rl.lr, rl.critic_lr, rl.vf_coef, rl.forward_batch_size, rl.checkpoint_every = 0.05, 5e-5, 5e-5, 0.1, 64, 0
    if model == "tiny":
        texts = peer_model_and_prompts(tmp, 512, 16)
        sft_path, reward_path, fmt = tmp / "policy", str(tmp / "reward"), "plain"
        rl.max_prompt_length = 32
    else:
        policy, tok = load_causal_lm(model)
        sft_path, reward_path, fmt = tmp / "policy", "minilm" if model == "smollm2-135m" else model, "chat"
        policy.save_pretrained(sft_path)
        tok.save_pretrained(sft_path)
        texts = [f"Tell me something interesting about topic number {i}." for i in range(512)]
        rl.rollout_batch_size = rl.minibatch_size = 16
        rl.micro_batch_size = 8
    task = TaskData(name="bench", rl_prompts=[Prompt(id=str(i), text=t) for i, t in enumerate(texts)], sft=[], pairs_train=[], pairs_val=[],
                    prompt_format=fmt)
    rm_model, rm_tok = load_sequence_classifier(reward_path)
    method_cls = registry.methods.get(method)
    ctx = RunContext(cfg=cfg, method_cfg=build_method_config(method_cls.Config, {}, method), task=task, run_dir=tmp / "run",
                     accelerator=Accelerator(cpu=True), sft_path=sft_path, reward=RewardScorer(rm_model.eval(), rm_tok, 128, 64), log=lambda s: None)
    trainer = method_cls()
    t0 = time.perf_counter()
    trainer.train(ctx)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] if len(rows) > 1 else rows
    step = statistics.mean(r["time/step"] for r in steady)
    tokens = statistics.mean(r["completions/mean_length"] * rl.rollout_batch_size for r in steady)
    return {
        "runner": "gilbench", "model": model, "method": method, "steps": steps, "seconds": round(seconds, 2),
        "step_s": round(step, 3), "rollout_s": round(statistics.mean(r["time/rollout"] for r in steady), 3),
        "update_s": round(statistics.mean(r["time/update"] for r in steady), 3),
        "tokens_per_s": round(tokens / step, 1), "episodes_per_s": round(rl.rollout_batch_size / step, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_peer(python: str, steps: int) -> dict:
    out = subprocess.run([python, str(PEER_DIR / "trl_ppo_peer.py"), "--rollout-batches", str(steps)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"TRL peer failed:\n{out.stderr[-3000:]}")
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    steady = peer["per_batch_seconds"][1:] or peer["per_batch_seconds"]
    peer["step_s"] = round(statistics.mean(steady), 3)
    peer["gen_share"] = round(peer["generation_seconds"] / peer["seconds"], 3)
    return peer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny (the peer's configuration) or a preset such as smollm2-135m")
    p.add_argument("--method", default="ppo-kl")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer-python", default=str(ROOT / ".peer-venv" / "bin" / "python"), help="python of the TRL venv ('' to skip)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # each runner in its own process, so peak RSS is its own
        print(json.dumps(run_gilbench(args.model, args.steps, args.method, args.threads)))
        return
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--steps", str(args.steps), "--method", args.method, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(ours))
    if args.model == "tiny" and args.peer_python and Path(args.peer_python).exists():
        peer = run_peer(args.peer_python, args.steps)
        print(json.dumps({k: peer[k] for k in ("peer", "trl_version", "seconds", "step_s", "episodes_per_s", "tokens_per_s", "peak_rss_mb", "gen_share")}))
        print(f"gilbench / TRL steady step-time speed-up: {peer['step_s'] / ours['step_s']:.2f}x "
              f"(tokens/s {ours['tokens_per_s']:.0f} vs {peer['steady_episodes_per_s'] * 32:.0f}); peak RSS {ours['peak_rss_mb']:.0f} vs {peer['peak_rss_mb']:.0f} MB")
    elif args.model == "tiny":
        print(f"(TRL peer skipped: no {args.peer_python}; see the docstring to create it)")


if __name__ == "__main__":
    main()
