"""The reward model's training step with and without ``rm.micro_batch_size``, interleaved in one process.

    python benchmarks/bench_rm_step.py --task chitchat-ood --micro 0,2,4,8 --batches 16 --rounds 2

Takes the first ``--batches`` batches of ``rm.batch_size`` pairs in the order training shuffles them (seed 0) and, for
each batch in turn, times the RM stage's forward and backward (``fit.backward_batch``) at every setting (no optimizer
step, so every setting meets the same weights; the order of the settings rotates from batch to batch, so drift in
the machine's speed spreads over all).
Prints one JSON line per setting: median and mean seconds per batch, the tokens forwarded (real + padding) as a share
of the whole-batch forward, and the ratio to the first setting.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from gilbench import registry
from gilbench.config import RewardModelConfig, RunConfig
from gilbench.data.tasks import as_task_spec
from gilbench.models.presets import load_sequence_classifier
from gilbench.models.reward import RewardScorer, encode_for_reward, set_reward_pooling
from gilbench.pipeline import make_accelerator
from gilbench.stages.fit import backward_batch
from gilbench.stages.reward import bradley_terry_loss, by_length, pair_texts


def tokens(scorer: RewardScorer, parts) -> int:
    """Tokens forwarded, padding included, for a batch cut into ``parts``."""
    total = 0
    for part, _ in parts:
        total += encode_for_reward(scorer.tokenizer, *pair_texts(part), scorer.max_length, "cpu")["input_ids"].numel()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="chitchat-ood")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument(
        "--micro", default="0,4", help="rm.micro_batch_size settings, comma-separated (the first is the base)"
    )
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the batches")
    ap.add_argument("--max-length", type=int, default=RewardModelConfig.max_length)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mixed-precision", default="auto", help="auto (bf16 where native) | fp32 | bf16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = [int(m) for m in args.micro.split(",")]
    batch_size = RewardModelConfig.batch_size
    task = as_task_spec(registry.tasks.get(args.task), args.task).load(seed=0, data_dir=args.data_dir)
    order = list(range(len(task.pairs_train)))
    random.Random(0).shuffle(order)  # fit's first epoch
    batches = [[task.pairs_train[i] for i in order[k * batch_size : (k + 1) * batch_size]] for k in range(args.batches)]
    torch.manual_seed(0)
    model, tokenizer = load_sequence_classifier(args.backbone)
    set_reward_pooling(model, "auto")
    accelerator = make_accelerator(RunConfig(device="cpu", mixed_precision=args.mixed_precision))
    model = accelerator.prepare(model)
    model.train()
    scorer = RewardScorer(model, tokenizer, args.max_length)
    loss = lambda m, part: bradley_terry_loss(scorer, m, part)  # noqa: E731  (what the RM stage minimises)
    seconds: dict[int, list[float]] = {m: [] for m in settings}
    forwarded = {m: sum(tokens(scorer, by_length(b, m)) for b in batches) for m in settings}
    step = 0
    for _ in range(args.rounds):
        for batch in batches:
            rotated = settings[step % len(settings) :] + settings[: step % len(settings)]
            step += 1
            for m in rotated:
                t0 = time.perf_counter()
                backward_batch(model, batch, loss, accelerator, lambda b, m=m: by_length(b, m))
                seconds[m].append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
    base = statistics.median(seconds[settings[0]])
    for m in settings:
        median = statistics.median(seconds[m])
        print(
            json.dumps(
                {
                    "task": args.task,
                    "micro_batch_size": m,
                    "batches": args.batches,
                    "rounds": args.rounds,
                    "mixed_precision": accelerator.mixed_precision,
                    "median_s": round(median, 3),
                    "mean_s": round(statistics.mean(seconds[m]), 3),
                    "tokens_vs_whole": round(forwarded[m] / forwarded[settings[0]], 3),
                    "speedup": round(base / median, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
