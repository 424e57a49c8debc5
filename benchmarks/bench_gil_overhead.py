#!/usr/bin/env python
"""Wall-clock overhead of GIL over PPO w/ KL: the same config, the same seed, N steps each.

    python benchmarks/bench_gil_overhead.py                              # tiny model, seconds
    python benchmarks/bench_gil_overhead.py --model smollm2-135m --steps 6  # minutes on a CPU

Each repeat runs ppo-kl and gil (order alternating between repeats, so slow drift of a shared machine
does not favour one) through gilbench.pipeline.run and reads time/step from metrics.jsonl. The first
step is excluded (warm-up). Responses have a fixed length (rl.stop_at_eos=false), so both methods
process the same number of tokens whatever their policies learn. Goal: gil / ppo-kl <= 1.05.
Absolute times on a shared machine drift; compare the ratio, and look at its spread over repeats.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gilbench import register_task
from gilbench.config import RunConfig
from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData
from gilbench.pipeline import run
from gilbench.resolve import config_for_method


@register_task("bench-synthetic")
def synthetic_task(seed: int = 0, limit: int | None = None, data_dir: str | None = None) -> TaskData:
    """Made in code, offline: 64 short questions in two groups, friendly vs curt replies (timing only)."""
    things = {
        "pets": ["cats", "dogs", "fish", "birds", "rabbits", "horses", "parrots", "hamsters"],
        "food": ["bread", "pasta", "soup", "rice", "cake", "tea", "cheese", "apples"],
    }
    prompts, sft, pairs = [], [], []
    for group, names in things.items():
        for thing in names:
            for j, q in enumerate(
                [
                    f"What do you think about {thing}?",
                    f"Tell me about {thing}.",
                    f"Do you like {thing}?",
                    f"Why do people like {thing}?",
                ]
            ):
                prompts.append(Prompt(id=f"{group}-{thing}-{j}", text=q, group=group))
                good = f"I really like {thing}, they are great and I could talk about them all day!"
                sft.append(SFTExample(prompt=q, response=good))
                pairs.append(PreferencePair(prompt=q, chosen=good, rejected="no.", group=group))
    n = limit or len(prompts)
    held_out = [Prompt(id="id-0", text="What about mice?", group="pets")]
    return TaskData(
        name="bench-synthetic",
        rl_prompts=prompts[:n],
        sft=sft[:n],
        pairs_train=pairs[4:n],
        pairs_val=pairs[:4],
        eval_splits=[EvalSplit("id:test", "id", held_out)],
    )


def config(method: str, args, output_dir: Path) -> RunConfig:
    cfg = config_for_method(
        method, task=args.task, seed=0, limit=args.limit, device=args.device, output_dir=str(output_dir)
    )
    cfg.model.policy = args.model
    cfg.sft.max_examples, cfg.rm.max_pairs = 32, 32  # the models' quality does not matter for timing
    cfg.generate.max_prompts, cfg.generate.max_new_tokens = 1, 8
    rl = cfg.rl
    rl.steps, rl.rollout_batch_size, rl.minibatch_size, rl.micro_batch_size = (
        args.steps,
        args.batch,
        args.batch,
        args.micro_batch,
    )
    rl.max_new_tokens, rl.stop_at_eos, rl.ppo_epochs, rl.checkpoint_every = args.new_tokens, False, 2, 0
    return cfg


def mean_times(cfg: RunConfig) -> dict[str, float]:
    """Mean seconds per step of the step, its rollout, its PPO update and the rest (hooks, GAE, metrics)."""
    path = Path(cfg.output_dir) / cfg.task / cfg.method / f"seed{cfg.seed}" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][1:]  # step 1 pays one-off costs
    mean = {k: statistics.mean(r[f"time/{k}"] for r in rows) for k in ("step", "rollout", "update")}
    return mean | {"other": mean["step"] - mean["rollout"] - mean["update"]}


def time_gil_hooks() -> list[float]:
    """Wrap GIL's own contract methods (prepare, loss) with a clock: the seconds each run spends in them, a measure of the overhead
    that, unlike the step-time ratio, does not drown in the noise of a shared machine."""
    from gilbench.methods.gil import GIL

    spent = [0.0]
    for name in ("prepare", "loss"):
        original = getattr(GIL, name)

        def timed(self, *a, _original=original, **kw):
            t0 = time.perf_counter()
            try:
                return _original(self, *a, **kw)
            finally:
                spent[0] += time.perf_counter() - t0

        setattr(GIL, name, timed)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny | smollm2-135m | a path")
    parser.add_argument(
        "--task", default="bench-synthetic", help="a registered task (default: one made in code, offline)"
    )
    parser.add_argument("--limit", type=int, default=64, help="cap on prompts / pairs / examples")
    parser.add_argument("--steps", type=int, default=11, help="PPO iterations per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=5, help="ppo-kl / gil pairs")
    parser.add_argument("--batch", type=int, default=16, help="rollout batch = minibatch")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    parser.add_argument("--output-dir", default="", help="run store (default: a temporary folder, removed after)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    store = Path(args.output_dir or tempfile.mkdtemp(prefix="bench-gil-"))
    times: dict[str, list[float]] = {"ppo-kl": [], "gil": []}
    phases: dict[str, list[dict]] = {"ppo-kl": [], "gil": []}
    hook_seconds, hook_share = time_gil_hooks(), []
    try:
        for repeat in range(args.repeats):
            order = ["ppo-kl", "gil"] if repeat % 2 == 0 else ["gil", "ppo-kl"]
            for method in order:
                cfg = config(method, args, store)
                shutil.rmtree(Path(cfg.output_dir) / cfg.task / method, ignore_errors=True)  # keep the SFT/RM cache
                spent = hook_seconds[0]
                run(cfg, log=lambda *_: None)
                phases[method].append(mean_times(cfg))
                times[method].append(phases[method][-1]["step"])
                if method == "gil":  # hook time per step (all steps) / the gil run's mean step time
                    hook_share.append((hook_seconds[0] - spent) / args.steps / times[method][-1])
                print(f"repeat {repeat + 1}: {method:<6} {times[method][-1]:.3f} s/step", flush=True)
    finally:
        if not args.output_dir:
            shutil.rmtree(store, ignore_errors=True)
    for method, rows in phases.items():
        print(
            f"{method:<7} "
            + ", ".join(f"{k} {statistics.mean(r[k] for r in rows):.3f} s" for k in ("rollout", "update", "other"))
        )
    ratios = [g / p for g, p in zip(times["gil"], times["ppo-kl"])]
    print(
        f"\nmodel {args.model}, {args.steps - 1} timed steps x {args.repeats} repeats, batch {args.batch}, "
        f"{args.new_tokens} new tokens, torch threads {torch.get_num_threads()}"
    )
    for method, values in times.items():
        print(
            f"{method:<7} mean step {statistics.mean(values):.3f} s (repeats {', '.join(f'{v:.3f}' for v in values)})"
        )
    print(
        f"gil / ppo-kl: {statistics.mean(ratios):.3f} (per repeat {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"min {min(ratios):.3f}, max {max(ratios):.3f}); goal <= 1.05"
    )
    print(
        f"time in GIL's prepare and loss: {100 * statistics.mean(hook_share):.1f} % of a gil step "
        f"(per repeat {', '.join(f'{100 * h:.1f}' for h in hook_share)} %; the backward of the penalty is not included)"
    )


if __name__ == "__main__":
    main()
