"""DPO: direct preference optimisation on the task's preference pairs (Rafailov et al., 2023).

No reward model and no sampling: the policy starts from the SFT model, which is also the frozen reference,
and minimises, over pairs (x, y_w, y_l) of a preferred and a rejected response,

    L = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

where log pi(y|x) is the sum of the log-probs of the response tokens only (prompt tokens and padding are
masked out). beta * (log pi - log pi_ref) is the implicit reward; its chosen-minus-rejected difference is the
reward margin. Because the reference equals the policy at step 0, its log-probs are computed once, before
training, with the same (dropout-free) weights: no second model is held in memory and the first loss is
exactly log 2.

Each pair is laid out like a rollout: the formatted prompt (left-padded, cut from the LEFT if needed, the
same cut for both responses) followed by the response text + EOS (right-padded, cut from the right), so a
pair's two sequences share one prompt encoding. Per optimizer step it logs ``loss/dpo``, the implicit
rewards ``dpo/reward_chosen``, ``dpo/reward_rejected``, ``dpo/reward_margin``, ``dpo/accuracy`` (share of
pairs with a positive margin), ``dpo/logp_chosen``, ``dpo/logp_rejected`` and ``time/step`` to
``run_dir/metrics.jsonl``. The pipeline then evaluates the returned policy like any other method's.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gilbench import register_method, tracking
from gilbench.data.format import format_example
from gilbench.data.types import PreferencePair
from gilbench.errors import GilbenchError
from gilbench.files import MetricsLog
from gilbench.method import Method, RunContext
from gilbench.rl.model_setup import disable_dropout
from gilbench.rl.rollout import response_logprobs


@dataclass
class DPOConfig:
    beta: float = (
        0.1  # inverse temperature of the implicit reward beta * log(pi / pi_ref); larger = stay closer to the reference
    )
    lr: float = 5e-6  # AdamW learning rate
    epochs: int = 1  # passes over the preference pairs
    batch_size: int = 8  # pairs per optimizer step
    micro_batch_size: int = 4  # pairs per forward/backward (gradient accumulation inside a step)
    max_length: int = 192  # tokens per prompt + response; prompts are cut from the left, responses from the right
    max_pairs: int | None = (
        None  # training pairs used (0 = all); None: rm.max_pairs, the reward model's own pairs (equal budgets)
    )
    max_grad_norm: float = 1.0  # gradient clipping


# ---------------------------------------------------------------------------- encoding and the loss


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def encode_pairs(tokenizer, pairs: list[PreferencePair], prompt_format: str, max_length: int) -> list[EncodedPair]:
    """Token ids of each pair; the prompt keeps at least half of ``max_length`` and loses its start first."""
    out = []
    for pair in pairs:
        head, chosen = format_example(tokenizer, pair.prompt, pair.chosen, prompt_format)
        _, rejected = format_example(tokenizer, pair.prompt, pair.rejected, prompt_format)
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (head, chosen, rejected)]
        prompt, chosen_ids, rejected_ids = ids
        budget = max(max_length - max(len(chosen_ids), len(rejected_ids)), max_length // 2)
        prompt = prompt[-budget:] if len(prompt) > budget else prompt
        room = max_length - len(prompt)
        if room <= 0 or not prompt:
            continue
        out.append(EncodedPair(prompt, chosen_ids[:room], rejected_ids[:room]))
    return out


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
):
    """Per-pair sigmoid DPO loss and implicit rewards, from summed response log-probs (all shaped [B])."""
    reward_chosen = beta * (policy_chosen - ref_chosen)
    reward_rejected = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(reward_chosen - reward_rejected)
    return losses, reward_chosen, reward_rejected


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def sequence_logps(model, batch: list[EncodedPair], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response-token log-probs of the chosen and the rejected responses: two [B] tensors, one forward."""
    query, query_mask = _pad([p.prompt for p in batch] * 2, pad_id, left=True)
    response, response_mask = _pad([p.chosen for p in batch] + [p.rejected for p in batch], pad_id, left=False)
    query, query_mask, response, response_mask = (t.to(device) for t in (query, query_mask, response, response_mask))
    logp = response_logprobs(model, query, query_mask, response, response_mask)
    summed = (logp * response_mask).sum(dim=1)
    return summed[: len(batch)], summed[len(batch) :]


# ---------------------------------------------------------------------------- the method


@register_method("dpo")
class DPO(Method):
    """Direct preference optimisation on the task's preference pairs, from (and regularised to) the SFT model."""

    Config = DPOConfig
    needs_reward_model = False  # trains without one; the pipeline still builds it when the task has eval splits

    def train(self, ctx: RunContext):
        cfg: DPOConfig = ctx.method_cfg
        if cfg.batch_size % cfg.micro_batch_size:
            raise GilbenchError(
                f"dpo: batch_size ({cfg.batch_size}) must be a multiple of micro_batch_size ({cfg.micro_batch_size})"
            )
        if cfg.beta <= 0:
            raise GilbenchError(f"dpo: beta must be > 0, got {cfg.beta}")
        acc, device = ctx.accelerator, ctx.accelerator.device
        torch.manual_seed(ctx.cfg.seed)
        policy, tokenizer = ctx.load_policy()
        if (
            ctx.cfg.model.lora
        ):  # LoRA adapters start as a no-op, so the reference log-probs below are still the SFT model's
            from gilbench.models.presets import apply_lora

            policy = apply_lora(policy, r=ctx.cfg.model.lora_r, alpha=ctx.cfg.model.lora_alpha)
        disable_dropout(policy)
        n_pairs = ctx.cfg.rm.max_pairs if cfg.max_pairs is None else cfg.max_pairs
        pairs = ctx.task.pairs_train[: n_pairs or None]  # the reward model's slice: the same pairs when n_pairs agrees
        data = encode_pairs(tokenizer, pairs, ctx.task.prompt_format, cfg.max_length)
        if not data:
            raise GilbenchError(
                f"dpo: task {ctx.task.name} has no usable preference pairs ({len(pairs)} given, max_length {cfg.max_length})"
            )
        ctx.log(
            f"[dpo] {len(data)} pairs ({len(pairs) - len(data)} dropped), beta {cfg.beta}, {cfg.epochs} epoch(s) of batch {cfg.batch_size}"
        )

        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr)
        policy, optimizer = acc.prepare(policy, optimizer)
        policy.eval()
        ref_chosen, ref_rejected = torch.zeros(len(data)), torch.zeros(len(data))
        with (
            torch.no_grad()
        ):  # the reference is the SFT model, i.e. the policy before any update (same precision, same forward)
            for start in range(0, len(data), cfg.micro_batch_size):
                c, r = sequence_logps(
                    policy, data[start : start + cfg.micro_batch_size], tokenizer.pad_token_id, device
                )
                ref_chosen[start : start + len(c)], ref_rejected[start : start + len(r)] = (
                    c.float().cpu(),
                    r.float().cpu(),
                )
        policy.train()
        log = MetricsLog(ctx.run_dir / "metrics.jsonl")
        log.truncate_after(0)  # a rerun of an unfinished method starts over: DPO keeps no checkpoints
        rng = random.Random(ctx.cfg.seed)
        steps_per_epoch = (len(data) + cfg.batch_size - 1) // cfg.batch_size
        bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="dpo", dynamic_ncols=True)
        step, history, tracker = 0, [], tracking.open_stage("dpo")
        for epoch in range(cfg.epochs):
            order = list(range(len(data)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                t0 = time.time()
                idx = order[start : start + cfg.batch_size]
                sums = dict.fromkeys(("loss", "rc", "rr", "acc", "lc", "lr_"), 0.0)
                for m in range(0, len(idx), cfg.micro_batch_size):
                    micro = idx[m : m + cfg.micro_batch_size]
                    pc, pr = sequence_logps(policy, [data[i] for i in micro], tokenizer.pad_token_id, device)
                    losses, rc, rr = dpo_loss(
                        pc.float(), pr.float(), ref_chosen[micro].to(device), ref_rejected[micro].to(device), cfg.beta
                    )
                    acc.backward(losses.sum() / len(idx))
                    sums["loss"] += losses.sum().item()
                    sums["rc"] += rc.sum().item()
                    sums["rr"] += rr.sum().item()
                    sums["acc"] += (rc > rr).float().sum().item()
                    sums["lc"] += pc.sum().item()
                    sums["lr_"] += pr.sum().item()
                grad_norm = acc.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                n = len(idx)
                row = {
                    "step": step,
                    "epoch": epoch,
                    "loss/dpo": sums["loss"] / n,
                    "dpo/reward_chosen": sums["rc"] / n,
                    "dpo/reward_rejected": sums["rr"] / n,
                    "dpo/reward_margin": (sums["rc"] - sums["rr"]) / n,
                    "dpo/accuracy": sums["acc"] / n,
                    "dpo/logp_chosen": sums["lc"] / n,
                    "dpo/logp_rejected": sums["lr_"] / n,
                    "dpo/grad_norm": float(grad_norm),
                    "time/step": time.time() - t0,
                }
                log.append(row)
                tracker.log(row, step)
                history.append(row)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{row['loss/dpo']:.3f}",
                    margin=f"{row['dpo/reward_margin']:+.3f}",
                    acc=f"{row['dpo/accuracy']:.2f}",
                )
        bar.close()
        tracker.close()
        k = max(1, len(history) // 10)
        ctx.summary.update(
            {
                "dpo/pairs": len(data),
                "dpo/steps": step,
                "dpo/loss_first": sum(r["loss/dpo"] for r in history[:k]) / k,
                "dpo/loss_last": sum(r["loss/dpo"] for r in history[-k:]) / k,
                "dpo/margin_last": sum(r["dpo/reward_margin"] for r in history[-k:]) / k,
                "dpo/accuracy_last": sum(r["dpo/accuracy"] for r in history[-k:]) / k,
            }
        )
        return acc.unwrap_model(policy).eval(), tokenizer
