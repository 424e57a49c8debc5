"""Sample the trained policy on every eval split and score the samples with the reward model."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from gilbench.config import GenerateConfig, RLConfig
from gilbench.data.format import format_prompt
from gilbench.rl.rollout import sample, tokenize_prompts


def rollout_sampling(rl: RLConfig) -> GenerateConfig:
    """Generation settings that sample as the RL rollouts do (length, temperature, top-p, batch): for text that
    stands for the start policy's own distribution (judge-curve references, PPO-ptx's reference text)."""
    return GenerateConfig(
        max_prompts=0,
        max_new_tokens=rl.max_new_tokens,
        temperature=rl.temperature,
        top_p=rl.top_p,
        batch_size=rl.forward_batch_size,
    )


def generate_split(
    policy, tokenizer, prompts, cfg, prompt_format: str, device, max_prompt_length: int, seed: int
) -> list[dict]:
    torch.manual_seed(seed)
    policy.eval()
    rows = []
    for start in tqdm(range(0, len(prompts), cfg.batch_size), desc="generate", leave=False, dynamic_ncols=True):
        chunk = prompts[start : start + cfg.batch_size]
        texts = [format_prompt(tokenizer, p.text, prompt_format) for p in chunk]
        query, query_mask = tokenize_prompts(tokenizer, texts, max_prompt_length, device)
        response, mask = sample(policy, tokenizer, query, query_mask, cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        decoded = tokenizer.batch_decode(response, skip_special_tokens=True)
        for p, text, n in zip(chunk, decoded, mask.sum(dim=1).tolist()):
            rows.append({"id": p.id, "prompt": p.text, "group": p.group, "response": text.strip(), "length": int(n)})
    return rows


def summarise_scores(scores: list[float]) -> dict:
    n = len(scores)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "stderr": float("nan")}
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return {"n": n, "mean": mean, "stderr": math.sqrt(var / n)}
