"""The RL loop every RL method runs, and the small typed contract a method fills in.

A method subclasses ``RLMethod`` and may set or override:
  needs_critic: ClassVar[bool]          load and train a value model (False: none is built, no ``val/*`` metrics)
  samples_per_prompt() -> int           responses sampled per prompt (RLOO / GRPO: k; default 1)
  prepare(batch) -> StepData            after the rollout: per-sample KL weights, the method's own per-sample
                                        data (a StepData subclass), metrics
  advantages(batch) -> (A, returns)     default: GAE on the critic's values, whitened; critic-free methods their own
  loss(per_sample, mb, data)            the policy loss of a minibatch from its per-sample clipped PPO losses
  couples_samples: ClassVar[bool]       ``loss`` is not a mean over samples (GIL's group variance): the loop then
                                        computes it over the whole minibatch whatever rl.micro_batch_size is
  extra_loss(mb), method_state(), load_method_state(state)

One step (``iteration``), each line a plain function or one of the above:
  batch = rollout(prompts)                                 sample, score, one forward per model (rl/rollout.py)
  data = prepare(batch)
  batch.rewards = shape_rewards(batch, kl_coef, data.kl_weights)   -kl_coef * w_i * KL_t, + score at the end
  batch.advantages, batch.returns = advantages(batch)
  update(batch, data)                                      ppo_epochs x minibatches x micro-batches (rl/update.py)
  metrics (fixed names), checkpoint
Each step seeds its own RNG from (seed, step), so a resumed run samples exactly what an unbroken one would.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from gilbench import tracking
from gilbench.errors import GilbenchError
from gilbench.files import MetricsLog
from gilbench.method import Method, RunContext
from gilbench.models.heads import SharedValueHead, ValueModel
from gilbench.models.precision import half_dtype
from gilbench.models.shared_prefix import common_prefix_length, uses_shared_prefix
from gilbench.rl import checkpoint
from gilbench.rl.core import RunningMoments, explained_variance, gae, kl_per_token, masked_mean, masked_whiten
from gilbench.rl.kl_control import make_kl_controller
from gilbench.rl.model_setup import (
    adamw,
    disable_dropout,
    freeze,
    recompute_activations,
    seed_everything,
    set_attention,
)
from gilbench.rl.rollout import (
    Rollout,
    chunks,
    policy_and_values,
    repetition_rate,
    response_logprobs,
    rollout_rows,
    sample,
    tokenize_prompts,
)
from gilbench.rl.update import update
from gilbench.store import ROLLOUTS


@dataclass
class StepData:
    """What a method prepares from one rollout. Subclasses add their own per-sample tensors ([B, ...]);
    ``select`` takes every tensor field's rows of a minibatch."""

    kl_weights: torch.Tensor | None = None  # per-sample multipliers of the KL penalty (None: all 1)
    metrics: dict = field(default_factory=dict)  # logged with the step

    def select(self, idx: torch.Tensor) -> StepData:
        tensors = {
            f.name: getattr(self, f.name)[idx]
            for f in dataclasses.fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, **tensors)


def shape_rewards(batch: Rollout, kl_coef: float, kl_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token rewards: -kl_coef * weight_i * KL_t, plus the score at the last response token."""
    weights = torch.ones(len(batch), device=batch.kl.device) if kl_weights is None else kl_weights
    rewards = -kl_coef * weights[:, None] * batch.kl
    last = batch.mask.sum(dim=1).long().clamp(min=1) - 1
    rewards[torch.arange(len(batch)), last] += batch.scores
    return rewards * batch.mask


def gae_advantages(batch: Rollout, gamma: float, lam: float, whiten: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE on the critic's values (and the value targets), advantages whitened over the batch if ``whiten``."""
    advantages, returns = gae(batch.rewards, batch.values, batch.mask, gamma, lam)
    return (masked_whiten(advantages, batch.mask) if whiten else advantages), returns


class RLMethod(Method):
    """Clipped-surrogate PPO with a value model and a per-token KL penalty to a frozen reference."""

    needs_critic: ClassVar[bool] = True
    needs_critic_hidden: ClassVar[bool] = False  # the rollout keeps the critic's last hidden state (GIL's group head)
    critic_hidden_at: str = "response"  # where: the last response token, or "prompt" (the last prompt token)
    couples_samples: ClassVar[bool] = False

    # ------------------------------------------------------------------ the contract
    def samples_per_prompt(self) -> int:
        return 1

    def prepare(self, batch: Rollout) -> StepData:
        return StepData()

    def advantages(self, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor | None]:
        return gae_advantages(batch, self.rl.gamma, self.rl.lam, self.rl.whiten_advantages)

    def loss(self, per_sample_loss: torch.Tensor, mb: Rollout, data: StepData) -> tuple[torch.Tensor, dict]:
        """Per-sample clipped losses (each a token mean) -> the policy loss; return it and metrics."""
        return per_sample_loss.mean(), {}

    def extra_loss(self, mb: Rollout) -> tuple[torch.Tensor | None, dict]:
        """An additional loss term of each micro-batch and its metrics (PPO-ptx adds language modelling)."""
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
        rl, k = self.rl, self.samples_per_prompt()
        if rl.minibatch_size % rl.micro_batch_size or rl.rollout_batch_size % rl.minibatch_size:
            raise GilbenchError(
                f"rl.rollout_batch_size ({rl.rollout_batch_size}) must be a multiple of rl.minibatch_size ({rl.minibatch_size}), "
                f"and that of rl.micro_batch_size ({rl.micro_batch_size})"
            )
        if rl.rollout_batch_size % k:
            raise GilbenchError(
                f"{self.registered_name}: rl.rollout_batch_size ({rl.rollout_batch_size}) counts samples and must be a "
                f"multiple of the {k} samples per prompt; change one of them with --set"
            )
        if rl.critic_warmup_steps and not self.needs_critic:
            raise GilbenchError(
                f"{self.registered_name} has no value model to warm up: drop --set rl.critic_warmup_steps "
                f"(it is {rl.critic_warmup_steps}) or set it to 0"
            )
        seed_everything(self.cfg.seed)
        policy, self.tokenizer = ctx.load_policy()
        set_attention(
            policy, self.cfg.model.attention, self.acc.device, self.cfg.model.share_prompt_prefix
        )  # before a critic copies the policy
        critic = self.build_critic(policy) if self.needs_critic else None
        if self.cfg.model.lora:
            from gilbench.models.presets import apply_lora

            policy = apply_lora(policy, r=self.cfg.model.lora_r, alpha=self.cfg.model.lora_alpha)
            self.ref_policy = None  # the reference is the policy with its adapters disabled
        else:
            self.ref_policy, _ = ctx.load_policy()
            set_attention(
                self.ref_policy, self.cfg.model.attention, self.acc.device, self.cfg.model.share_prompt_prefix
            )  # as the policy's: KL 0 at start
            freeze(self.ref_policy, half_dtype(self.acc.mixed_precision))
            self.ref_policy.to(self.acc.device)
        own_trunk = critic if critic is not None and not critic.shares_policy_trunk else None
        for model in (policy, own_trunk):
            if model is not None:
                disable_dropout(model)
                if self.cfg.model.gradient_checkpointing:
                    recompute_activations(model)
        policy_opt = adamw([p for p in policy.parameters() if p.requires_grad], lr=rl.lr)
        if critic is not None:
            critic_opt = adamw([p for p in critic.parameters() if p.requires_grad], lr=rl.critic_lr)
            self.policy, self.critic, self.policy_opt, self.critic_opt = self.acc.prepare(
                policy, critic, policy_opt, critic_opt
            )
        else:
            self.policy, self.policy_opt = self.acc.prepare(policy, policy_opt)
            self.critic = self.critic_opt = None
        self.kl_ctl = make_kl_controller(rl.kl_coef, rl.adaptive_kl, rl.kl_target, rl.kl_horizon)
        self.reward_stats = RunningMoments()
        self.prompts = ctx.task.rl_prompts
        if not self.prompts:
            raise GilbenchError(f"task {ctx.task.name} has no RL prompts")

    def build_critic(self, policy) -> ValueModel | SharedValueHead:
        critic = self._critic_trunk(policy)
        if self.cfg.model.critic_lora and critic.shares_policy_trunk:
            raise GilbenchError(
                "model.critic=shared has no trunk of its own to put LoRA adapters on: set model.critic_lora=false "
                "(or model.critic=policy)"
            )
        if self.cfg.model.critic_lora:
            critic.train_adapters_only(
                self.cfg.model.lora_r, self.cfg.model.lora_alpha, half_dtype(self.acc.mixed_precision)
            )
        return critic

    def _critic_trunk(self, policy) -> ValueModel:
        if self.cfg.model.critic == "policy":
            return ValueModel.from_causal_lm(policy)
        if self.cfg.model.critic == "shared":
            return SharedValueHead(policy)
        if self.cfg.model.critic == "reward":
            rm_tok = self.ctx.reward.tokenizer
            if rm_tok.get_vocab() != self.tokenizer.get_vocab():
                raise GilbenchError(
                    "model.critic=reward needs the reward model to share the policy's tokenizer; use model.critic=policy"
                )
            return ValueModel.from_sequence_classifier(self.ctx.reward.model)
        raise GilbenchError(f"model.critic must be policy, shared or reward, got {self.cfg.model.critic!r}")

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
        bar = tqdm(
            range(start, self.rl.steps),
            desc=f"{self.registered_name or 'rl'}",
            initial=start,
            total=self.rl.steps,
            dynamic_ncols=True,
        )
        for step in bar:
            metrics = self.iteration(step)
            metrics_log.append(metrics)
            every = self.rl.log_rollouts_every
            if every and ((step + 1) % every == 0 or step == 0):
                rollout_log.extend(self.last_rollout_rows)
            tracker.log(metrics, step + 1)
            bar.set_postfix(score=f"{metrics['objective/score']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
            every = self.rl.checkpoint_every
            last = step + 1 == self.rl.steps
            if (every and (step + 1) % every == 0 and not last) or (last and self.rl.keep_checkpoint):
                checkpoint.save(self, ctx.run_dir, step + 1)  # not at the end unless kept: the saved policy follows
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
        data = self.prepare(batch)
        batch.rewards = shape_rewards(batch, self.kl_ctl.value, data.kl_weights)
        batch.advantages, batch.returns = self.advantages(batch)
        metrics = dict(data.metrics)
        t1 = time.perf_counter()
        metrics.update(update(self, batch, data, step))
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
            }
        )
        if self.critic is not None:
            metrics["val/explained_var"] = explained_variance(batch.values, batch.returns, batch.mask)
        metrics.update(
            {
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
        """The same prompts in the same order for every method with the same seed and samples per prompt;
        with k samples per prompt, rollout_batch_size / k prompts, each k times in a row."""
        k = self.samples_per_prompt()
        n = self.rl.rollout_batch_size // k
        rng = np.random.default_rng([self.cfg.seed, step, self.acc.process_index])
        idx = rng.choice(len(self.prompts), size=n, replace=len(self.prompts) < n)
        return [self.prompts[i] for i in idx for _ in range(k)]

    @torch.no_grad()
    def rollout(self, prompts: list) -> Rollout:
        from gilbench.data.format import format_prompt

        rl, device = self.rl, self.acc.device
        policy = self.acc.unwrap_model(self.policy)
        critic = self.acc.unwrap_model(self.critic) if self.critic is not None else None
        texts = [format_prompt(self.tokenizer, p.text, self.ctx.task.prompt_format) for p in prompts]
        query, query_mask = tokenize_prompts(self.tokenizer, texts, rl.max_prompt_length, device)
        # the prompt's length and the opening its rows share: benchmarks/bench_ppo.py's model of a step's work
        self.last_prompt_tokens = query.shape[1]
        self.last_shared_prefix = common_prefix_length(query, query_mask) if uses_shared_prefix(policy) else 0
        policy.eval()
        # Under the run's mixed precision, as the update's forwards are, so old and new log-probs agree.
        with self.acc.autocast():
            response, mask = sample(
                policy, self.tokenizer, query, query_mask, rl.max_new_tokens, rl.temperature, rl.top_p, rl.stop_at_eos
            )
            mask = mask.float()
            logprobs, entropy, ref_logprobs, values, hidden = [], [], [], [], []
            for sl in chunks(len(prompts), rl.forward_batch_size):
                args = (query[sl], query_mask[sl], response[sl], mask[sl].long())
                lp, ent, v, h = policy_and_values(
                    policy, critic, *args, rl.temperature, with_entropy=True, hidden_at=self.critic_hidden_at
                )
                logprobs.append(lp)
                entropy.append(ent)
                ref_logprobs.append(self._ref_logprobs(*args))
                if critic is not None:
                    values.append(v.float())
                    hidden.append(h.float())
        policy.train()
        response_texts = self.tokenizer.batch_decode(response, skip_special_tokens=True)
        raw_scores = self.ctx.reward.score([p.text for p in prompts], response_texts).to(device).float()
        scores = self._normalise_scores(raw_scores, mask)
        logprobs, ref_logprobs = torch.cat(logprobs), torch.cat(ref_logprobs)
        kl = kl_per_token(logprobs, ref_logprobs, rl.kl_estimator) * mask
        return Rollout(
            prompts=prompts,
            query=query,
            query_mask=query_mask,
            response=response,
            mask=mask,
            texts=response_texts,
            scores=scores,
            raw_scores=raw_scores,
            logprobs=logprobs * mask,
            ref_logprobs=ref_logprobs * mask,
            kl=kl,
            entropy=torch.cat(entropy),
            values=torch.cat(values) * mask if values else None,
            critic_hidden=torch.cat(hidden) if hidden and self.needs_critic_hidden else None,
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
            ended = mask.sum(dim=1) < mask.shape[1]  # a row that stopped early emitted EOS
            scores = scores - rl.missing_eos_penalty * (~ended).float()
        if rl.reward_norm:
            self.reward_stats.update(scores)
            scores = (scores - self.reward_stats.mean) / max(self.reward_stats.std, 1e-6)
        if rl.reward_clip:
            scores = scores.clamp(-rl.reward_clip, rl.reward_clip)
        return scores

    def _eos_rate(self, batch: Rollout) -> float:
        eos = self.tokenizer.eos_token_id
        last = batch.mask.sum(dim=1).long().clamp(min=1) - 1
        return (batch.response[torch.arange(len(batch)), last] == eos).float().mean().item()

    def diverged(self, step: int, what: str, detail: str = "") -> GilbenchError:
        last = checkpoint.latest_step(self.ctx.run_dir)
        where = (
            f"the last good checkpoint is step {last} in {self.ctx.run_dir / 'checkpoints'}"
            if last
            else "no checkpoint was written yet"
        )
        return GilbenchError(
            f"{what} at step {step + 1}{f' ({detail})' if detail else ''}: training diverged; {where}. "
            "Lower rl.lr or set rl.max_grad_norm > 0, then rerun with --overwrite"
        )
