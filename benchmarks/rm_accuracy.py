"""Held-out pairwise accuracy of a reward model fitted by the pipeline's RM stage code, for one setting.

    python benchmarks/rm_accuracy.py --task hh --data-dir /work/shared/data lr=1e-4 epochs=1 max_length=128 max_pairs=0

key=value sets rm.* fields (lr, epochs, batch_size, max_length, max_pairs, pooling); --backbone picks the model (minilm).
Appends one JSON line (setting, accuracy before / after, train accuracy, losses, seconds) to --results, so a
sweep is a loop over settings. Nothing from the data is written.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace

import torch

from gilbench import registry
from gilbench.config import RewardModelConfig, RunConfig
from gilbench.data.tasks import as_task_spec
from gilbench.models.presets import load_sequence_classifier
from gilbench.models.reward import RewardScorer, set_reward_pooling
from gilbench.pipeline import make_accelerator
from gilbench.stages.reward import train_reward_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="hh")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--subsets", help="hh subsets, comma-separated (default: the task's, harmless-base,helpful-base)")
    ap.add_argument(
        "--mixed-precision", default="auto", help="auto (the pipeline's default: bf16 where native) | fp32 | bf16"
    )
    ap.add_argument("--results", default="rm_accuracy.jsonl")
    ap.add_argument("settings", nargs="*", help="rm field=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    types = {f.name: f.type for f in fields(RewardModelConfig)}
    cfg = RewardModelConfig()
    for item in args.settings:
        key, _, value = item.partition("=")
        if key not in types:
            ap.error(f"unknown rm field {key!r}; fields: {sorted(types)}")
        cast = {"float": float, "int": int}.get(getattr(types[key], "__name__", types[key]), str)
        cfg = replace(cfg, **{key: cast(value)})
    spec = as_task_spec(registry.tasks.get(args.task), args.task)
    if args.subsets:
        spec = replace(spec, options={**spec.options, "subsets": args.subsets.split(",")})  # not the registered one
    task = spec.load(seed=args.seed, data_dir=args.data_dir)
    torch.manual_seed(args.seed)
    model, tokenizer = load_sequence_classifier(args.backbone)
    cfg = replace(cfg, pooling=set_reward_pooling(model, cfg.pooling))
    scorer = RewardScorer(model, tokenizer, cfg.max_length)
    accelerator = make_accelerator(RunConfig(device="cpu", mixed_precision=args.mixed_precision))
    start = time.time()
    stats = train_reward_model(
        scorer, task.pairs_train[: cfg.max_pairs or None], task.pairs_val, cfg, accelerator, args.seed
    )
    row = {
        "task": args.task,
        "backbone": args.backbone,
        "seed": args.seed,
        "subsets": spec.options.get("subsets"),
        "rm": vars(cfg),
        "mixed_precision": accelerator.mixed_precision,
        "seconds": round(time.time() - start),
        **stats,
    }
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
