"""Does GIL's group head find a task's known groups, or each batch's reward split? An offline probe.

    python benchmarks/probe_gil_groups.py [--train-run results/runs/qa-chat/ppo/seed0] [--steps 1-30]
        [--test-run results/runs/qa-chat/ppo/seed1] [--out OUT.json]

Replays a finished run's logged rollouts (prompt, response, proxy score, known group; `rl.log_rollouts_every`
1) through the starting policy's trunk, which is what GIL's critic is at step 0 (`model.critic: policy`, a copy
of the policy), and trains the group head online the way GIL does: one head and one AdamW carried from batch
to batch, `group_steps` steps per batch on z-scored proxy scores, everything else at GILConfig's defaults. For
each `group_input` (response: the paper's p(g|tau); prompt: the last prompt token) it reports, per batch after
the head's steps (as GIL logs `group/nmi`) and on another run's batches the head never trained on:
  - NMI and purity of argmax p with the known groups (chat / trivia on qa-chat);
  - NMI of argmax p with the batch's reward split (score above the batch median): high = the head split by reward;
  - the known groups' gap in proxy score and in the head's groups (a head that splits by reward has the larger).
The policy's trunk stays fixed here, unlike a GIL run's critic, so this is the group head at the start of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gilbench.data.format import format_prompt
from gilbench.methods.gil import GILConfig, GroupHead, normalized_mutual_info, purity, train_group_head
from gilbench.models.heads import ValueModel
from gilbench.models.presets import load_causal_lm
from gilbench.models.shared_prefix import full_inputs
from gilbench.rl.rollout import response_values, tokenize_prompts

ROOT = Path(__file__).resolve().parent.parent


def load_batches(run: Path, first: int, last: int) -> list[list[dict]]:
    by_step = defaultdict(list)
    for line in (run / "rollouts.jsonl").read_text().splitlines():
        row = json.loads(line)
        if first <= row["step"] <= last:
            by_step[row["step"]].append(row)
    if not by_step:
        raise SystemExit(f"{run}/rollouts.jsonl has no rollouts in steps {first}-{last}")
    return [by_step[s] for s in sorted(by_step)]


@torch.no_grad()
def hidden_states(critic, tokenizer, batch: list[dict], max_prompt_length: int) -> dict[str, torch.Tensor]:
    """The critic's hidden state at the last response token and at the last prompt token, one forward."""
    texts = [format_prompt(tokenizer, row["prompt"], "chat") for row in batch]
    query, query_mask = tokenize_prompts(tokenizer, texts, max_prompt_length, "cpu")
    tokenizer.padding_side = "right"
    enc = tokenizer([row["response"] for row in batch], padding=True, add_special_tokens=False, return_tensors="pt")
    ids, mask, pos = full_inputs(query, query_mask, enc["input_ids"], enc["attention_mask"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values, hidden = critic(ids, mask, pos)
    return {
        at: response_values(values, hidden, query.shape[1], enc["attention_mask"], at)[1].float()
        for at in ("response", "prompt")
    }


def batch_stats(p: torch.Tensor, batch: list[dict]) -> dict[str, float]:
    pred = p.argmax(dim=1).numpy()
    labels = [row["group"] for row in batch]
    scores = np.array([row["score"] for row in batch])
    above = scores > np.median(scores)
    by_head = [scores[pred == g].mean() for g in np.unique(pred)]
    by_known = [scores[np.array(labels) == g].mean() for g in sorted(set(labels))]
    return {
        "nmi_known": normalized_mutual_info(pred, labels),
        "purity_known": purity(pred, labels),
        "nmi_reward_split": normalized_mutual_info(pred, above),
        "gap_head": float(max(by_head) - min(by_head)) if len(by_head) > 1 else 0.0,
        "gap_known": float(max(by_known) - min(by_known)),
    }


def summarise(rows: list[dict]) -> dict[str, str]:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = f"{statistics.mean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0:.3f}"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-run", default=str(ROOT / "results/runs/qa-chat/ppo/seed0"))
    p.add_argument("--test-run", default=str(ROOT / "results/runs/qa-chat/ppo/seed1"))
    p.add_argument("--steps", default="1-30", help="the runs' steps to replay (FIRST-LAST)")
    p.add_argument("--policy", default="smollm2-135m")
    p.add_argument("--max-prompt-length", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the figures here as JSON")
    args = p.parse_args()
    first, last = (int(x) for x in args.steps.split("-"))
    torch.manual_seed(args.seed)
    policy, tokenizer = load_causal_lm(args.policy)
    critic = ValueModel.from_causal_lm(policy).eval()
    del policy  # the critic holds its own copy of the trunk
    train = load_batches(Path(args.train_run), first, last)
    test = load_batches(Path(args.test_run), first, last)
    hidden_train = [hidden_states(critic, tokenizer, b, args.max_prompt_length) for b in train]
    hidden_test = [hidden_states(critic, tokenizer, b, args.max_prompt_length) for b in test]
    cfg = GILConfig()
    result = {"train_run": args.train_run, "test_run": args.test_run, "steps": args.steps, "batches": len(train)}
    for at in ("response", "prompt"):
        head = GroupHead(critic.hidden_size, cfg.n_groups, seed=args.seed, center=cfg.center_hidden)
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.group_lr)
        seen = []
        for batch, hidden in zip(train, hidden_train):
            scores = torch.tensor([row["score"] for row in batch])
            train_group_head(head, optimizer, hidden[at], scores, cfg)
            with torch.no_grad():
                seen.append(batch_stats(head(hidden[at]), batch))
        with torch.no_grad():
            unseen = [batch_stats(head(hidden[at]), batch) for batch, hidden in zip(test, hidden_test)]
        result[at] = {"trained_batches": summarise(seen), "held_out_batches": summarise(unseen)}
        print(json.dumps({"group_input": at} | result[at]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
