"""Probe the qa-chat task before any RL: is the proxy biased the documented way, and do the groups differ?

    python benchmarks/probe_qa_chat.py --out /tmp/qa-probe [--pairs 512 --lr 5e-5 --epochs 2 --samples 64]

1. Fits the MiniLM reward model (the pipeline's RM stage code) on the task's training pairs.
2. Held-out accuracy against the gold labels, and on the chat pairs whose replies differ in "!": agreement with
   the gold label and with the biased labeller's label.
3. Samples the starting policy (SmolLM2-135M-Instruct, temperature 1) on ``--samples`` prompts per group
   (cached in OUT/samples.jsonl), and reports gold and proxy mean / SD per group and the chat - trivia gap in
   pooled gold SDs.
4. The shortcut: every sample with its sentence ends turned into "!" (and "!" appended when it has none), scored
   by the proxy and the gold: mean change per group.
Writes OUT/probe.json. Nothing here reads /work/shared; the samples quote PyPI data, so keep OUT out of git.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator

from gilbench.data.qachat import load_qa_chat
from gilbench.data.qachat_gold import judge_gold_function
from gilbench.models.presets import load_causal_lm, load_sequence_classifier
from gilbench.models.reward import RewardScorer
from gilbench.stages.generate import generate_split
from gilbench.stages.reward import pairwise_accuracy, train_reward_model


def exclaimed(text: str) -> str:
    """The shortcut feature added to a reply: sentence-final "." become "!", and a final "!" if there is none."""
    out = re.sub(r"\.(\s|$)", r"!\1", text.strip())
    return out if "!" in out else out + "!"


def stats(values: list[float]) -> dict:
    return {"n": len(values), "mean": round(statistics.fmean(values), 4), "sd": round(statistics.stdev(values), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--bias-rate", type=float, default=0.5)
    ap.add_argument("--samples", type=int, default=64, help="start-policy samples per group")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args)}

    task = load_qa_chat(seed=args.seed, bias_rate=args.bias_rate)
    report["counts"] = task.notes["counts"]
    torch.manual_seed(args.seed)
    model, tokenizer = load_sequence_classifier("minilm")
    rm = RewardScorer(model, tokenizer, args.max_length)
    cfg = SimpleNamespace(lr=args.lr, epochs=args.epochs, batch_size=16, max_length=args.max_length)
    t0 = time.time()
    report["rm"] = train_reward_model(
        rm, task.pairs_train[: args.pairs], task.pairs_val, cfg, Accelerator(cpu=True), args.seed
    )
    report["rm"]["seconds"] = round(time.time() - t0)
    report["rm"]["val_accuracy_by_group"] = {
        g: pairwise_accuracy(rm, [p for p in task.pairs_val if p.group == g]) for g in ("chat", "trivia")
    }
    differ = [p for p in task.pairs_val if p.group == "chat" and p.chosen.count("!") != p.rejected.count("!")]
    by_bias = [
        p
        if p.chosen.count("!") > p.rejected.count("!")
        else SimpleNamespace(prompt=p.prompt, chosen=p.rejected, rejected=p.chosen)
        for p in differ
    ]
    report["rm"]["chat_pairs_differing_in_exclaim"] = {
        "n": len(differ),
        "agree_with_gold": pairwise_accuracy(rm, differ),
        "agree_with_biased": pairwise_accuracy(rm, by_bias),
    }

    samples_path = out / "samples.jsonl"
    if samples_path.exists():
        rows = [json.loads(line) for line in samples_path.read_text().splitlines()]
    else:
        policy, ptok = load_causal_lm("smollm2-135m")
        id_test = task.eval_splits[0].prompts
        groups = {
            "chat": [p for p in id_test if p.group == "chat"],
            "trivia": [p for p in id_test if p.group == "trivia"],
        }
        groups |= {s.prompts[0].group: s.prompts for s in task.eval_splits[1:]}
        gen = SimpleNamespace(batch_size=16, max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0)
        rows = []
        for prompts in groups.values():
            rows += generate_split(policy, ptok, prompts[: args.samples], gen, "chat", "cpu", 96, args.seed)
        samples_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        del policy

    gold = judge_gold_function()
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    shouted = [exclaimed(r) for r in responses]
    g0, g1 = gold.score(prompts, responses), gold.score(prompts, shouted)
    p0, p1 = rm.score(prompts, responses).tolist(), rm.score(prompts, shouted).tolist()
    per_group = {}
    for g in dict.fromkeys(r["group"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["group"] == g]
        per_group[g] = {
            "gold": stats([g0[i] for i in idx]),
            "proxy": stats([p0[i] for i in idx]),
            "eos_or_short": sum(rows[i]["length"] < args.max_new_tokens for i in idx) / len(idx),
            "exclaim_in_sample": sum("!" in responses[i] for i in idx) / len(idx),
            "shortcut_delta": {
                "gold": round(statistics.fmean(g1[i] - g0[i] for i in idx), 4),
                "proxy": round(statistics.fmean(p1[i] - p0[i] for i in idx), 4),
                "proxy_in_start_sds": round(
                    statistics.fmean(p1[i] - p0[i] for i in idx) / statistics.stdev(p0[i] for i in idx), 3
                ),
            },
        }
    report["groups"] = per_group
    chat, trivia = per_group["chat"]["gold"], per_group["trivia"]["gold"]
    pooled = ((chat["sd"] ** 2 + trivia["sd"] ** 2) / 2) ** 0.5
    report["gap_chat_minus_trivia"] = {
        "gold": round(chat["mean"] - trivia["mean"], 4),
        "in_pooled_sd": round((chat["mean"] - trivia["mean"]) / pooled, 3),
    }
    (out / "probe.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("rm", "groups", "gap_chat_minus_trivia")}, indent=1))


if __name__ == "__main__":
    main()
