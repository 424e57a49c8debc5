"""The PPO loop every RL method runs. A method changes it only through the hooks below.

One iteration (``step``):
  1. rollout: sample responses, score them, one forward each of policy, reference and critic;
  2. ``after_rollout(batch)``          hook: read the batch (GIL infers groups here);
  3. ``shape_rewards(batch)``          hook: per-token rewards, default -kl_coef * KL + score at the last token;
  4. GAE and advantage whitening;
  5. ``before_update(batch)``          hook: a step of the method's own (GIL's group-inference step);
  6. PPO epochs x minibatches; each micro-batch's loss is
     ``policy_loss(per_sample_loss, mb)`` + ``extra_loss(mb)`` + vf_coef * clipped value loss
     (both hooks return ``(loss, metrics)``; metrics are averaged over the update);
  7. log metrics (fixed names), checkpoint.
Each step seeds its own RNG from (seed, step), so a resumed run samples exactly what an unbroken one would.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from gilbench import tracking
from gilbench.errors import GilbenchError
from gilbench.method import Method, RunContext
from gilbench.models.heads import ValueModel
from gilbench.models.precision import freeze_in_half, half_dtype
from gilbench.rl import checkpoint
from gilbench.rl.core import (
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    kl_per_token,
    masked_mean,
    masked_whiten,
)
from gilbench.rl.kl_control import make_kl_controller
from gilbench.rl.rollout import critic_forward, repetition_rate, response_logprobs, sample, tokenize_prompts
from gilbench.store import ROLLOUTS, MetricsLog


@dataclass
class Rollout:
    """One batch of trajectories. Tensors are [B] or [B, R] over response tokens."""

    prompts: list  # gilbench.data.Prompt
    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    mask: torch.Tensor
    texts: list[str]
    scores: torch.Tensor  # reward-model score (after optional normalisation/clipping)
    raw_scores: torch.Tensor  # reward-model score as given
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    kl: torch.Tensor  # per-token KL estimate
    values: torch.Tensor
    last_hidden: torch.Tensor  # critic hidden state at the last response token [B, H]
    entropy: torch.Tensor
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)  # per-sample tensors a method adds (moved with minibatches)

    def __len__(self) -> int:
        return self.response.shape[0]

    def select(self, idx: torch.Tensor) -> "Rollout":
        def take(x):
            return x[idx] if torch.is_tensor(x) else x

        fields = {k: take(v) for k, v in vars(self).items() if k not in ("prompts", "texts", "extra")}
        ids = idx.tolist()
        return Rollout(prompts=[self.prompts[i] for i in ids], texts=[self.texts[i] for i in ids], extra={k: take(v) for k, v in self.extra.items()}, **fields)


def rollout_rows(batch: Rollout, seq_kl: torch.Tensor, step: int) -> list[dict]:
    lengths, scores, kls = batch.mask.sum(dim=1).tolist(), batch.raw_scores.tolist(), seq_kl.tolist()
    return [{"step": step, "prompt_id": p.id, "prompt": p.text, "group": p.group, "response": text, "score": score,
             "kl": kl, "length": int(length)}
            for p, text, score, kl, length in zip(batch.prompts, batch.texts, scores, kls, lengths)]


def disable_dropout(model: torch.nn.Module) -> None:
    """PPO's ratio must compare the same function: dropout would make old and new log-probs differ."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def freeze(model: torch.nn.Module, half: torch.dtype | None) -> None:
    """A frozen model (the reference): no grad, eval mode, matmul weights in ``half`` under mixed precision."""
    if half is not None:
        freeze_in_half(model, half)
    else:
        model.requires_grad_(False).eval()


def recompute_activations(model: torch.nn.Module) -> None:
    """Gradient checkpointing, non-reentrant (exact; works with frozen inputs such as LoRA's)."""
    model = model.trunk if isinstance(model, ValueModel) else model
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def adamw(params: list, lr: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one pass over each parameter, no foreach temporaries the size of the model)."""
    return torch.optim.AdamW(params, lr=lr, fused=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PPOTrainer(Method):
    """Clipped-surrogate PPO with a value model and a per-token KL penalty to a frozen reference."""

    # ------------------------------------------------------------------ hooks a method overrides
    def after_rollout(self, batch: Rollout) -> dict:
        """Inspect or annotate a fresh batch (before reward shaping); return metrics to log."""
        return {}

    def kl_weights(self, batch: Rollout) -> torch.Tensor:
        """Per-sample multipliers of the KL penalty (GIL makes these group-dependent)."""
        return torch.ones(len(batch), device=batch.kl.device)

    def shape_rewards(self, batch: Rollout) -> torch.Tensor:
        """Per-token rewards: -kl_coef * weight_i * KL_t, plus the score at the last response token."""
        rewards = -self.kl_ctl.value * self.kl_weights(batch)[:, None] * batch.kl
        last = batch.mask.sum(dim=1).long().clamp(min=1) - 1
        rewards[torch.arange(len(batch)), last] += batch.scores
        return rewards * batch.mask

    def before_update(self, batch: Rollout) -> dict:
        """Runs after GAE, before the PPO epochs; return metrics to log."""
        return {}

    def policy_loss(self, per_sample_loss: torch.Tensor, mb: Rollout) -> tuple[torch.Tensor, dict]:
        """Aggregate per-sample clipped losses (each a token mean) into the policy loss; return it and metrics."""
        return per_sample_loss.mean(), {}

    def extra_loss(self, mb: Rollout) -> tuple[torch.Tensor | None, dict]:
        """An additional policy loss term and its metrics (PPO-ptx adds language modelling)."""
        return None, {}

    def method_state(self) -> dict:
        """State a method needs checkpointed (e.g. GIL's group head)."""
        return {}

    def load_method_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------------ set-up
    def setup(self, ctx: RunContext) -> None:
        self.ctx, self.cfg, self.rl = ctx, ctx.cfg, ctx.cfg.rl
        self.acc = ctx.accelerator
        rl = self.rl
        if rl.minibatch_size % rl.micro_batch_size or rl.rollout_batch_size % rl.minibatch_size:
            raise GilbenchError(
                f"rl.rollout_batch_size ({rl.rollout_batch_size}) must be a multiple of rl.minibatch_size ({rl.minibatch_size}), "
                f"and that of rl.micro_batch_size ({rl.micro_batch_size})"
            )
        seed_everything(self.cfg.seed)
        policy, self.tokenizer = ctx.load_policy()
        critic = self.build_critic(policy)
        if self.cfg.model.lora:
            from gilbench.models.presets import apply_lora

            policy = apply_lora(policy, r=self.cfg.model.lora_r, alpha=self.cfg.model.lora_alpha)
            self.ref_policy = None  # the reference is the policy with its adapters disabled
        else:
            self.ref_policy, _ = ctx.load_policy()
            freeze(self.ref_policy, half_dtype(self.acc.mixed_precision))
            self.ref_policy.to(self.acc.device)
        for model in (policy, critic):
            disable_dropout(model)
            if self.cfg.model.gradient_checkpointing:
                recompute_activations(model)
        policy_opt = adamw([p for p in policy.parameters() if p.requires_grad], lr=rl.lr)
        critic_opt = adamw([p for p in critic.parameters() if p.requires_grad], lr=rl.critic_lr)
        self.policy, self.critic, self.policy_opt, self.critic_opt = self.acc.prepare(policy, critic, policy_opt, critic_opt)
        self.kl_ctl = make_kl_controller(rl.kl_coef, rl.adaptive_kl, rl.kl_target, rl.kl_horizon)
        self.reward_stats = RunningMoments()
        self.prompts = ctx.task.rl_prompts
        if not self.prompts:
            raise GilbenchError(f"task {ctx.task.name} has no RL prompts")

    def build_critic(self, policy) -> ValueModel:
        critic = self._critic_trunk(policy)
        if self.cfg.model.critic_lora:
            critic.train_adapters_only(self.cfg.model.lora_r, self.cfg.model.lora_alpha, half_dtype(self.acc.mixed_precision))
        return critic

    def _critic_trunk(self, policy) -> ValueModel:
        if self.cfg.model.critic == "policy":
            return ValueModel.from_causal_lm(policy)
        if self.cfg.model.critic == "reward":
            rm_tok = self.ctx.reward.tokenizer
            if rm_tok.get_vocab() != self.tokenizer.get_vocab():
                raise GilbenchError("model.critic=reward needs the reward model to share the policy's tokenizer; use model.critic=policy")
            return ValueModel.from_sequence_classifier(self.ctx.reward.model)
        raise GilbenchError(f"model.critic must be policy or reward, got {self.cfg.model.critic!r}")

    # ------------------------------------------------------------------ the loop
    def train(self, ctx: RunContext):
        self.setup(ctx)
        metrics_log, rollout_log = MetricsLog(ctx.run_dir / "metrics.jsonl"), MetricsLog(ctx.run_dir / ROLLOUTS)
        start = checkpoint.restore(self, ctx.run_dir)
        metrics_log.truncate_after(start)
        rollout_log.truncate_after(start)
        if start:
            ctx.log(f"resumed from the checkpoint at step {start}")
        tracker = tracking.open_stage("rl")
        bar = tqdm(range(start, self.rl.steps), desc=f"{self.registered_name or 'rl'}", initial=start, total=self.rl.steps, dynamic_ncols=True)
        for step in bar:
            metrics = self.iteration(step)
            metrics_log.append(metrics)
            every = self.rl.log_rollouts_every
            if every and ((step + 1) % every == 0 or step == 0):
                rollout_log.extend(self.last_rollout_rows)
            tracker.log(metrics, step + 1)
            bar.set_postfix(score=f"{metrics['objective/score']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
            every = self.rl.checkpoint_every
            if (every and (step + 1) % every == 0) or step + 1 == self.rl.steps:
                checkpoint.save(self, ctx.run_dir, step + 1)
        bar.close()
        tracker.close()
        return self.acc.unwrap_model(self.policy), self.tokenizer

    def step_seed(self, step: int) -> int:
        """Seed of one step's sampling; each data-parallel process gets its own."""
        return (self.cfg.seed * 1_000_003 + step * 7919 + self.acc.process_index * 104_729) % 2**31

    def iteration(self, step: int) -> dict:
        t0 = time.perf_counter()
        torch.manual_seed(self.step_seed(step))
        try:
            batch = self.rollout(self.sample_prompts(step))
        except RuntimeError as e:  # sampling from NaN/inf logits: the weights diverged in the previous update
            if "inf" not in str(e) and "nan" not in str(e):
                raise
            raise self.diverged(step, "non-finite probabilities while sampling") from None
        t_rollout = time.perf_counter() - t0
        metrics = dict(self.after_rollout(batch))
        batch.rewards = self.shape_rewards(batch)
        batch.advantages, batch.returns = gae(batch.rewards, batch.values, batch.mask, self.rl.gamma, self.rl.lam)
        if self.rl.whiten_advantages:
            batch.advantages = masked_whiten(batch.advantages, batch.mask)
        metrics.update(self.before_update(batch))
        t1 = time.perf_counter()
        metrics.update(self.update(batch, step))
        t_update = time.perf_counter() - t1
        seq_kl = (batch.kl * batch.mask).sum(dim=1)
        self.last_rollout_rows = rollout_rows(batch, seq_kl, step + 1)
        self.kl_ctl.update(seq_kl.mean().item(), len(batch))
        n_tokens = int(batch.mask.sum().item())
        step_time = time.perf_counter() - t0
        metrics.update(
            {
                "step": step + 1,
                "samples": (step + 1) * len(batch),
                "objective/score": batch.raw_scores.mean().item(),
                "objective/kl": seq_kl.mean().item(),
                "objective/rlhf_reward": batch.rewards.sum(dim=1).mean().item(),
                "objective/entropy": masked_mean(batch.entropy, batch.mask).item(),
                "objective/kl_coef": self.kl_ctl.value,
                "val/explained_var": explained_variance(batch.values, batch.returns, batch.mask),
                "completions/mean_length": batch.mask.sum(dim=1).float().mean().item(),
                "completions/eos_rate": self._eos_rate(batch),
                "completions/repetition_rate": repetition_rate(batch.response, batch.mask),
                "time/rollout": t_rollout,
                "time/update": t_update,
                "time/step": step_time,
                "throughput/tokens_per_s": n_tokens / step_time,
            }
        )
        return metrics

    def sample_prompts(self, step: int) -> list:
        """The same prompts in the same order for every method with the same seed."""
        rng = np.random.default_rng([self.cfg.seed, step, self.acc.process_index])
        idx = rng.choice(len(self.prompts), size=self.rl.rollout_batch_size, replace=len(self.prompts) < self.rl.rollout_batch_size)
        return [self.prompts[i] for i in idx]

    @torch.no_grad()
    def rollout(self, prompts: list) -> Rollout:
        from gilbench.data.format import format_prompt

        rl, device = self.rl, self.acc.device
        policy = self.acc.unwrap_model(self.policy)
        texts = [format_prompt(self.tokenizer, p.text, self.ctx.task.prompt_format) for p in prompts]
        query, query_mask = tokenize_prompts(self.tokenizer, texts, rl.max_prompt_length, device)
        self.last_prompt_tokens = query.shape[1]
        policy.eval()
        # Under the run's mixed precision, as the update's forwards are, so old and new log-probs agree.
        with self.acc.autocast():
            response, mask = sample(policy, self.tokenizer, query, query_mask, rl.max_new_tokens, rl.temperature, rl.top_p, rl.stop_at_eos)
            mask = mask.float()
            logprobs, entropy, ref_logprobs, values, last_hidden = [], [], [], [], []
            for i in range(0, len(prompts), rl.forward_batch_size):
                sl = slice(i, i + rl.forward_batch_size)
                args = (query[sl], query_mask[sl], response[sl], mask[sl].long())
                lp, ent = response_logprobs(policy, *args, temperature=rl.temperature, with_entropy=True)
                logprobs.append(lp)
                entropy.append(ent)
                ref_logprobs.append(self._ref_logprobs(*args))
                v, h = critic_forward(self.acc.unwrap_model(self.critic), *args)
                values.append(v.float())
                last_hidden.append(h.float())
        policy.train()
        response_texts = self.tokenizer.batch_decode(response, skip_special_tokens=True)
        raw_scores = self.ctx.reward.score([p.text for p in prompts], response_texts).to(device).float()
        scores = self._normalise_scores(raw_scores, mask)
        logprobs, ref_logprobs = torch.cat(logprobs), torch.cat(ref_logprobs)
        kl = kl_per_token(logprobs, ref_logprobs, rl.kl_estimator) * mask
        return Rollout(
            prompts=prompts, query=query, query_mask=query_mask, response=response, mask=mask, texts=response_texts,
            scores=scores, raw_scores=raw_scores, logprobs=logprobs * mask, ref_logprobs=ref_logprobs * mask, kl=kl,
            values=torch.cat(values) * mask, last_hidden=torch.cat(last_hidden), entropy=torch.cat(entropy),
        )

    def _ref_logprobs(self, *args) -> torch.Tensor:
        if self.ref_policy is not None:
            with torch.inference_mode():
                logp = response_logprobs(self.ref_policy, *args, temperature=self.rl.temperature)
            return logp.clone()  # a normal tensor again: inference tensors may not enter autograd later
        policy = self.acc.unwrap_model(self.policy)
        with policy.disable_adapter():
            return response_logprobs(policy, *args, temperature=self.rl.temperature)

    def _normalise_scores(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rl = self.rl
        if rl.missing_eos_penalty:
            ended = self._ended_with_eos(mask)
            scores = scores - rl.missing_eos_penalty * (~ended).float()
        if rl.reward_norm:
            self.reward_stats.update(scores)
            scores = (scores - self.reward_stats.mean) / max(self.reward_stats.std, 1e-6)
        if rl.reward_clip:
            scores = scores.clamp(-rl.reward_clip, rl.reward_clip)
        return scores

    def _ended_with_eos(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.sum(dim=1) < mask.shape[1]  # a row that stopped early emitted EOS

    def _eos_rate(self, batch: Rollout) -> float:
        eos = self.tokenizer.eos_token_id
        last = batch.mask.sum(dim=1).long().clamp(min=1) - 1
        return (batch.response[torch.arange(len(batch)), last] == eos).float().mean().item()

    # ------------------------------------------------------------------ the update
    def update(self, batch: Rollout, step: int) -> dict:
        rl = self.rl
        gen = torch.Generator().manual_seed(self.step_seed(step) + 1)
        sums: dict[str, float] = {}
        n = 0
        self.policy.train()
        self.critic.train()
        for _ in range(rl.ppo_epochs):
            order = torch.randperm(len(batch), generator=gen).to(batch.mask.device)
            for start in range(0, len(batch), rl.minibatch_size):
                mb_idx = order[start : start + rl.minibatch_size]
                for micro_start in range(0, len(mb_idx), rl.micro_batch_size):
                    mb = batch.select(mb_idx[micro_start : micro_start + rl.micro_batch_size])
                    stats = self.micro_step(mb, step, weight=len(mb) / len(mb_idx))
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                    n += 1
                for model, opt in ((self.policy, self.policy_opt), (self.critic, self.critic_opt)):
                    if rl.max_grad_norm:
                        self.acc.clip_grad_norm_(model.parameters(), rl.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
        return {k: v / n for k, v in sums.items()}

    def micro_step(self, mb: Rollout, step: int, weight: float) -> dict:
        rl = self.rl
        args = (mb.query, mb.query_mask, mb.response, mb.mask.long())
        logp = response_logprobs(self.policy, *args, temperature=rl.temperature)
        per_sample, pstats = clipped_policy_loss(logp, mb.logprobs, mb.advantages, mb.mask, rl.clip_range)
        policy_loss, policy_stats = self.policy_loss(per_sample, mb)
        extra, extra_stats = self.extra_loss(mb)
        values, _ = critic_forward(self.critic, *args)
        value_loss, vstats = clipped_value_loss(values.float(), mb.values, mb.returns, mb.mask, rl.clip_range_value)
        loss = policy_loss + rl.vf_coef * value_loss + (extra if extra is not None else 0.0)
        if not torch.isfinite(loss):
            raise self.diverged(step, "non-finite loss", f"policy {policy_loss.item()}, value {value_loss.item()}")
        self.acc.backward(loss * weight)
        stats = {
            "loss/policy": policy_loss.item(),
            "loss/value": value_loss.item(),
            "policy/approx_kl": pstats["approx_kl"],
            "policy/clipfrac": pstats["clipfrac"],
            "policy/ratio_mean": pstats["ratio_mean"],
            "val/clipfrac": vstats["clipfrac"],
        }
        stats.update(policy_stats)
        stats.update(extra_stats)
        return stats

    def diverged(self, step: int, what: str, detail: str = "") -> GilbenchError:
        last = checkpoint.latest_step(self.ctx.run_dir)
        where = (f"the last good checkpoint is step {last} in {self.ctx.run_dir / 'checkpoints'}" if last
                 else "no checkpoint was written yet")
        return GilbenchError(f"{what} at step {step + 1}{f' ({detail})' if detail else ''}: training diverged; {where}. Lower rl.lr or set rl.max_grad_norm > 0, "
                             f"then rerun with --overwrite")
