"""Group Invariant Learning (GIL) for RLHF (Zheng et al., ICLR 2024): PPO that must do well on every group.

After each rollout a group head on the critic's last hidden state, p_phi(g|tau) = softmax(W h + b), learns
to split the batch into M soft groups whose mean performance differs most (maximise V, the variance of the
group means; a balance term stops it isolating one outlier). The policy minimises the PPO loss plus
beta_policy x the variance of the group-wise PPO losses (V-REx), so no group is neglected, and each sample's
KL penalty is scaled by p(g_high|tau): easy, high-reward samples stay near the reference, hard ones may move
further. With beta_policy = 0 and adaptive_kl = false it is PPO w/ KL, step for step.
Specification, our own choices marked (ours): docs/GIL.md. Ablations: gil-fixed-kl, gil-no-inv, gil-oracle.

One step, as the shared loop (RLMethod.iteration, rl/trainer.py) runs it with GIL's two pieces:
    batch = rollout(prompts)                     the critic's last hidden states kept (needs_critic_hidden)
    data = GIL.prepare(batch)                    p, g_high, KL weights w_i; group_steps on the head; p again
    batch.rewards = shape_rewards(batch, kl_coef, data.kl_weights)
    batch.advantages, batch.returns = GAE + whitening
    update(batch, data)                          PPO epochs; each minibatch's policy loss is GIL.loss on the
                                                 whole minibatch (couples_samples), + the critic's value loss
This file: the math (soft group statistics, the group loss, the invariance penalty, effective weights), the
group head, then the method in the order the loop calls it, then the ablations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gilbench import register_method
from gilbench.errors import GilbenchError
from gilbench.rl.rollout import Rollout, chunks, critic_forward
from gilbench.rl.trainer import RLMethod, StepData, shape_rewards


@dataclass
class GILConfig:
    n_groups: int = 2  # M, groups the head infers (2 in the paper); oracle uses the task's label count
    beta_critic: float = 1.0  # weight of the performance gap V in the group head's loss (paper: 1)
    beta_policy: float = 0.3  # weight of the variance of group-wise PPO losses (0 = plain PPO loss); ours, chosen
    # by the qa-chat sweep on ID training samples (results/README.md); 1.0 before it, with negative group weights
    group_balance: float = 1.0  # weight of KL(m || uniform) in the group loss, against one-outlier groups (ours)
    normalise_performance: bool = (
        True  # z-score R_i in the batch for the group loss, so the balance is scale-free (ours)
    )
    group_steps: int = 8  # AdamW steps on the group head after each rollout (ours)
    group_lr: float = 1e-2  # learning rate of the group head (ours)
    center_hidden: bool = True  # the head reads h minus its batch mean (see GroupHead) (ours)
    group_head_shares_trunk: bool = (
        False  # the group loss also trains the critic trunk, at rl.critic_lr (costly, see GIL.group_step) (ours)
    )
    performance: str = "score"  # R_i: "score" (raw reward-model score) or "return" (sum of KL-shaped rewards) (ours)
    adaptive_kl: bool = True  # scale each sample's KL penalty by p(g_high | tau) (section 3)
    kl_normalise: bool = True  # rescale those KL weights to mean 1, same KL budget as PPO w/ KL (ours)
    groups: str = "inferred"  # "inferred" (group head) or "oracle" (the task's known prompt groups, one-hot)
    clamp_group_weights: bool = (
        False  # clamp each sample's effective gradient weight at >= 0 (ours; see GIL.md, "Effective weights")
    )
    group_input: str = "response"  # the hidden state the group head reads: response (last response token, the paper's p(g|tau)) or prompt (last prompt token: groups of prompts, which a batch's reward split cannot define) (ours; GIL.md)
    penalty_scale: str = "none"  # none | loss_std: divide the penalty by the per-sample losses' SD, so beta_policy is scale-free (ours; GIL.md)


# ----------------------------------------------------------------------------- the math, on its own
def soft_group_stats(p: torch.Tensor, perf: torch.Tensor):
    """m_g = mean_i p_ig, R_g = sum_i p_ig R_i / sum_i p_ig, V = (1/M) sum_g (R_g - mean R)^2.

    A group with no mass (possible with one-hot oracle p) has R_g = nan and is left out of V and the
    mean. Masks rather than boolean indexing, so a GPU never waits for the host here.
    """
    mass = p.sum(dim=0)
    present = mass > 0
    R = (p * perf[:, None]).sum(dim=0) / torch.where(present, mass, torch.ones_like(mass))
    n_present = present.sum().clamp_min(1)
    R_mean = torch.where(present, R, 0.0).sum() / n_present
    V = torch.where(present, (R - R_mean) ** 2, 0.0).sum() / n_present
    return mass / p.shape[0], torch.where(present, R, math.nan), V


def group_inference_loss(p: torch.Tensor, perf: torch.Tensor, beta_critic: float, balance: float) -> torch.Tensor:
    """-beta_critic * V + balance * KL(m || uniform): minimising it maximises the gap between groups."""
    m, _, V = soft_group_stats(p, perf)
    kl_to_uniform = (m * torch.log((m * p.shape[1]).clamp_min(1e-12))).sum()  # clamp: 0 log 0 = 0
    return -beta_critic * V + balance * kl_to_uniform


def invariant_policy_loss(per_sample_loss: torch.Tensor, p: torch.Tensor, beta_policy: float, scale: str = "none"):
    """sum_g m_g L_g + beta_policy * (1/M) sum_g (L_g - mean L)^2 / s with L_g = sum_i p_ig l_i / sum_i p_ig.

    Rows of p sum to 1, so sum_g m_g L_g is exactly the mean of l_i; it is computed as that mean so
    that beta_policy = 0 reproduces PPO's loss bit for bit. Groups without mass are left out. s = 1, or with
    ``scale="loss_std"`` the (constant) SD of the l_i: the penalty then has the loss's units whatever its scale.
    """
    _, L, penalty = soft_group_stats(p, per_sample_loss)
    if scale == "loss_std":
        penalty = penalty / (per_sample_loss.detach().std(unbiased=False) + 1e-8)
    loss = per_sample_loss.mean() + beta_policy * penalty
    return loss, {"penalty": penalty.detach(), "group_losses": L.detach()}


def effective_weights(
    per_sample_loss: torch.Tensor, p: torch.Tensor, beta_policy: float, scale: str = "none"
) -> torch.Tensor:
    """w_i = d L_policy / d l_i = 1/N + beta_policy * d penalty / d l_i: each sample's weight in the policy gradient
    (the penalty's gradient is linear in the per-sample loss gradients). Negative w_i push a sample's loss up."""
    losses = per_sample_loss.detach().clone().requires_grad_()
    with torch.enable_grad():
        (weights,) = torch.autograd.grad(invariant_policy_loss(losses, p, beta_policy, scale)[0], losses)
    return weights


def adaptive_kl_weights(p_high: torch.Tensor, normalise: bool) -> torch.Tensor:
    """Per-sample KL multipliers p(g_high | tau_i), rescaled to mean 1 if ``normalise``."""
    return p_high / p_high.mean().clamp_min(1e-8) if normalise else p_high


def standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std(unbiased=False) + 1e-8)


def normalized_mutual_info(a, b) -> float:
    """NMI of two labelings, MI / mean(H(a), H(b)) (the arithmetic normalisation, as scikit-learn's default)."""
    _, a = np.unique(np.asarray(a), return_inverse=True)
    _, b = np.unique(np.asarray(b), return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha, hb = float(-(pa * np.log(pa)).sum()), float(-(pb * np.log(pb)).sum())
    if ha == 0 and hb == 0:
        return 1.0  # both labelings put everything in one group: they agree
    return max(0.0, mi / ((ha + hb) / 2))


def purity(pred, labels) -> float:
    """Share of samples whose label is the most common one in their predicted group."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return sum(np.unique(labels[pred == g], return_counts=True)[1].max() for g in np.unique(pred)) / len(pred)


# ----------------------------------------------------------------------------- the group head
class GroupHead(nn.Module):
    """p_phi(g | tau) = softmax(W h + b) on the critic's hidden state at the last response token.

    With ``center`` the head reads h minus the batch mean (ours, GILConfig.center_hidden): on one batch
    that is only a shift of b, but LM hidden states share a large common component (and a few huge
    dimensions) that would otherwise saturate the softmax from the first step.
    """

    def __init__(self, hidden_size: int, n_groups: int, seed: int, center: bool = True):
        super().__init__()
        self.center = center
        # Its own generator: creating the head must not move the global RNG, or GIL would sample
        # different responses than PPO on the same seed (see the equivalence test).
        gen = torch.Generator().manual_seed(seed)
        bound = 1 / math.sqrt(hidden_size)  # nn.Linear's default range
        self.weight = nn.Parameter(torch.empty(n_groups, hidden_size).uniform_(-bound, bound, generator=gen))
        self.bias = nn.Parameter(torch.zeros(n_groups))

    def forward(self, hidden: torch.Tensor, batch_mean: torch.Tensor | None = None) -> torch.Tensor:
        """Group probabilities [B, M]; pass ``batch_mean`` when ``hidden`` is one chunk of a batch."""
        hidden = hidden.float()
        if self.center:
            hidden = hidden - (hidden.mean(dim=0) if batch_mean is None else batch_mean).detach()
        return F.linear(hidden, self.weight, self.bias).softmax(dim=-1)


def train_group_head(head: GroupHead, optimizer, hidden: torch.Tensor, perf: torch.Tensor, cfg: GILConfig) -> None:
    """cfg.group_steps optimizer steps on the head alone; hidden states are read detached, R_i are constants."""
    target = standardise(perf) if cfg.normalise_performance else perf
    for _ in range(cfg.group_steps):
        loss = group_inference_loss(head(hidden.detach()), target, cfg.beta_critic, cfg.group_balance)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- the method
@dataclass
class GILStepData(StepData):
    """GIL's per-sample data for one step: p_phi(g | tau_i), held fixed during the PPO epochs."""

    group_probs: torch.Tensor | None = None  # [B, M]


@register_method("gil")
class GIL(RLMethod):
    """Group Invariant Learning: inferred groups, invariance penalty on group-wise PPO losses, group-adaptive KL."""

    Config = GILConfig
    needs_critic_hidden = True  # the group head reads the critic's hidden state (group_input: which token)
    couples_samples = (
        True  # the group variance couples a minibatch's samples: the loop computes it on the whole minibatch
    )

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.gil = gc = ctx.method_cfg if ctx.method_cfg is not None else GILConfig()
        missing = [
            k for k in self.defaults if k.startswith("method_args.") and k.split(".", 1)[1] not in ctx.cfg.method_args
        ]
        if missing:  # pipeline.run() takes the config as given: a bare RunConfig(method=...) lacks them
            raise GilbenchError(
                f"{self.registered_name} needs its defaults {self.defaults} in the config; "
                "build it with gilbench.resolve.resolve_run (the CLI does)"
            )
        for field, value, allowed in (
            ("performance", gc.performance, ("score", "return")),
            ("groups", gc.groups, ("inferred", "oracle")),
            ("group_input", gc.group_input, ("response", "prompt")),
        ):
            if value not in allowed:
                raise GilbenchError(f"GIL {field} must be one of {', '.join(allowed)}, got {value!r}")
        self.n_groups = gc.n_groups
        self.critic_hidden_at = gc.group_input
        if gc.groups == "oracle":
            labels = [p.group for p in self.prompts]
            if None in labels:
                raise GilbenchError(
                    f"groups=oracle needs a group label on every RL prompt; task {ctx.task.name} has unlabelled ones"
                )
            self.group_index = {g: i for i, g in enumerate(sorted(set(labels)))}  # sorted: the same indices every run
            self.n_groups = len(self.group_index)
            ctx.log(f"[gil] oracle groups: {self.group_index}")
        if self.n_groups < 2:
            raise GilbenchError(f"GIL needs at least 2 groups, got {self.n_groups}")
        critic = self.acc.unwrap_model(self.critic)
        self.head = GroupHead(critic.hidden_size, self.n_groups, self.cfg.seed, gc.center_hidden).to(self.acc.device)
        groups = [{"params": list(self.head.parameters()), "lr": gc.group_lr}]
        if gc.group_head_shares_trunk and critic.shares_policy_trunk:
            raise GilbenchError(
                "group_head_shares_trunk would train the policy's own trunk with the group loss under "
                "model.critic=shared; set group_head_shares_trunk=false or model.critic=policy"
            )
        if gc.group_head_shares_trunk:
            groups.append(
                {"params": [p for p in critic.trunk.parameters() if p.requires_grad], "lr": self.rl.critic_lr}
            )
        self.group_opt = torch.optim.AdamW(groups, lr=gc.group_lr)

    # -- 1. after the rollout: groups, KL weights, the group-inference step (GIL.md, "Where it sits in the PPO loop")
    def prepare(self, batch: Rollout) -> GILStepData:
        gc = self.gil
        p = self.group_probs(batch)  # before this step's head update: they pick g_high for the KL weights
        _, R, _ = soft_group_stats(
            p, batch.raw_scores if gc.performance == "score" else self.kl_shaped_return(batch, None)
        )
        g_high = int(torch.nan_to_num(R, nan=-math.inf).argmax())
        w = (
            adaptive_kl_weights(p[:, g_high], gc.kl_normalise)
            if gc.adaptive_kl
            else torch.ones(len(batch), device=p.device)
        )
        metrics = {
            "gil/kl_weight_mean": w.mean().item(),
            "gil/kl_weight_std": w.std(unbiased=False).item(),
            "gil/g_high": g_high,
        }
        perf = batch.raw_scores if gc.performance == "score" else self.kl_shaped_return(batch, w)
        if gc.groups == "inferred" and gc.group_steps > 0:
            if gc.group_head_shares_trunk:
                for _ in range(gc.group_steps):
                    self.group_step(batch, perf)
            else:
                train_group_head(self.head, self.group_opt, batch.critic_hidden, perf, gc)
        p = self.group_probs(batch)  # after it: held fixed during the PPO epochs
        metrics.update(self.group_metrics(batch, p, perf))
        return GILStepData(kl_weights=w, group_probs=p, metrics=metrics)

    def kl_shaped_return(self, batch: Rollout, kl_weights: torch.Tensor | None) -> torch.Tensor:
        """R_i = sum of the KL-shaped rewards (performance=return); with unit KL weights before they are known."""
        return shape_rewards(batch, self.kl_ctl.value, kl_weights).sum(dim=1)

    @torch.no_grad()
    def group_probs(self, batch: Rollout) -> torch.Tensor:
        if self.gil.groups == "oracle":
            idx = torch.tensor([self.group_index[p.group] for p in batch.prompts], device=batch.mask.device)
            return F.one_hot(idx, self.n_groups).float()
        return self.head(self.all_hidden_states(batch) if self.gil.group_head_shares_trunk else batch.critic_hidden)

    @torch.no_grad()
    def all_hidden_states(self, batch: Rollout) -> torch.Tensor:
        return torch.cat(
            [self.hidden_states(batch, sl) for sl in chunks(len(batch), self.rl.forward_batch_size)]
        ).float()

    def hidden_states(self, batch: Rollout, sl: slice) -> torch.Tensor:
        """The critic's current hidden states at group_input's token (with grad if enabled)."""
        args = (batch.query[sl], batch.query_mask[sl], batch.response[sl], batch.mask[sl].long())
        return critic_forward(self.critic, *args, hidden_at=self.critic_hidden_at)[1]

    def group_step(self, batch: Rollout, perf: torch.Tensor) -> None:
        """One step on the head and the critic trunk. V is a statistic of the whole batch, so first get
        dLoss/dp from a no-grad forward, then push it through the critic one forward batch at a time
        (memory of one forward batch). Cost per step: 2 critic forwards + 1 backward over the rollout."""
        gc = self.gil
        hidden = self.all_hidden_states(batch)
        with torch.no_grad():
            p = self.head(hidden)
        p.requires_grad_()
        target = standardise(perf) if gc.normalise_performance else perf
        (grad_p,) = torch.autograd.grad(group_inference_loss(p, target, gc.beta_critic, gc.group_balance), p)
        for sl in chunks(
            len(batch), self.rl.forward_batch_size
        ):  # chain rule, chunk by chunk, centred on the whole batch's mean
            self.head(self.hidden_states(batch, sl), batch_mean=hidden.mean(dim=0)).backward(grad_p[sl])
        self.group_opt.step()
        self.group_opt.zero_grad(set_to_none=True)  # leaves no group gradient in the critic for the PPO step

    # -- 2. the policy loss of a minibatch (the loop calls it on the whole minibatch: couples_samples)
    def loss(self, per_sample_loss: torch.Tensor, mb: Rollout, data: GILStepData) -> tuple[torch.Tensor, dict]:
        p = data.group_probs
        gc = self.gil
        loss, stats = invariant_policy_loss(per_sample_loss, p, gc.beta_policy, gc.penalty_scale)
        weights = effective_weights(per_sample_loss.detach(), p, gc.beta_policy, gc.penalty_scale)
        metrics = {"loss/invariance": stats["penalty"].item()}
        group_weights = (p * weights[:, None]).sum(dim=0)  # each group's effective gradient weight
        metrics.update({f"gil/effective_weight/{g}": group_weights[g].item() for g in range(self.n_groups)})
        metrics["gil/negative_weight"] = float((group_weights < 0).any())
        if self.gil.clamp_group_weights:  # the value stays the GIL loss; the gradient uses weights clamped at 0
            clamped = weights.clamp(min=0)
            loss = (clamped * per_sample_loss).sum() + (loss - (clamped * per_sample_loss).sum()).detach()
        return loss, metrics

    # -- logging
    @torch.no_grad()
    def group_metrics(self, batch: Rollout, p: torch.Tensor, perf: torch.Tensor) -> dict:
        gc = self.gil
        m, R, V = soft_group_stats(p, perf)
        target = standardise(perf) if gc.normalise_performance else perf
        per_sample = {
            "score": batch.raw_scores,
            "kl": (batch.kl * batch.mask).sum(dim=1),
            "length": batch.mask.sum(dim=1),
        }
        soft = {name: soft_group_stats(p, x)[1] for name, x in per_sample.items()}
        R_present = R[~R.isnan()]  # variance, worst and gap are over R_g, the performance the head separates
        metrics = {
            "group/variance": V.item(),
            "group/worst": R_present.min().item(),
            "group/gap": (R_present.max() - R_present.min()).item(),
            "loss/group": group_inference_loss(p, target, gc.beta_critic, gc.group_balance).item(),
        }
        for g in range(self.n_groups):
            metrics[f"group/{g}/mass"] = m[g].item()
            metrics.update({f"group/{g}/{name}": soft[name][g].item() for name in per_sample})
        labels = [prompt.group for prompt in batch.prompts]
        if None not in labels:  # how well the inferred groups match the task's known ones
            pred = p.argmax(dim=1).cpu().numpy()
            metrics["group/nmi"] = normalized_mutual_info(pred, labels)
            metrics["group/purity"] = purity(pred, labels)
        return metrics

    # -- checkpoint
    def method_state(self) -> dict:
        return {"head": self.head.state_dict(), "group_opt": self.group_opt.state_dict()}

    def load_method_state(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.group_opt.load_state_dict(state["group_opt"])


# ----------------------------------------------------------------------------- ablations (GIL.md table)
@register_method("gil-fixed-kl")
class GILFixedKL(GIL):
    """GIL without the group-adaptive KL penalty (ablation "w/o dynamic KL")."""

    defaults = {"method_args.adaptive_kl": False}


@register_method("gil-no-inv")
class GILNoInvariance(GIL):
    """GIL without the invariance penalty, beta_policy = 0 (ablation "w/o invariant learning")."""

    defaults = {"method_args.beta_policy": 0.0}


@register_method("gil-oracle")
class GILOracle(GIL):
    """GIL with the task's known prompt groups (one-hot) instead of inferred ones."""

    defaults = {"method_args.groups": "oracle"}
