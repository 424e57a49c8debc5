"""GIL's policy loss over a whole minibatch (gilbench/rl/update.py, couples_samples): the effective per-sample
weights by hand, and the loss and gradient at micro-batch 2, 4 and 8 against one plain backward."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from test_gil import LOSS6, P6, fake_batch

from gilbench.methods.gil import GIL, GILConfig, GILStepData, effective_weights, invariant_policy_loss
from gilbench.models.presets import load_causal_lm
from gilbench.rl.rollout import response_logprobs
from gilbench.rl.update import minibatch_backward, per_sample_policy_loss


def test_effective_weights_by_hand():
    # w_i = 1/N + beta * dP/dl_i, dP/dl_i = (2/M) sum_g (L_g - mean L) p_ig / mass_g (the mean's own term cancels).
    # With P6, LOSS6: L0 - mean = 1/35, L1 - mean = -1/35, masses 3.5 and 2.5, M = 2, beta = 2:
    # dP/dl_i = (1/35) (p_i0 / 3.5 - p_i1 / 2.5): sample 0 (1, 0): 2/245; sample 3 (.5, .5): -2/1225; sample 5 (0, 1): -2/175.
    w = effective_weights(LOSS6, P6, beta_policy=2.0)
    assert w[0].item() == pytest.approx(1 / 6 + 4 / 245, rel=1e-5)
    assert w[3].item() == pytest.approx(1 / 6 - 4 / 1225, rel=1e-5)
    assert w[5].item() == pytest.approx(1 / 6 - 4 / 175, rel=1e-5)
    assert w.sum().item() == pytest.approx(1.0, rel=1e-6)  # the penalty's weights sum to 0
    assert torch.allclose(effective_weights(LOSS6, P6, 0.0), torch.full((6,), 1 / 6))


def test_penalty_scaled_by_the_loss_sd_by_hand():
    # losses 1, 2, 3, 6 in two hard groups: L = 1.5, 4.5, mean 3, penalty ((-1.5)^2 + 1.5^2) / 2 = 2.25;
    # population SD of the losses sqrt(14 / 4); dP/dl_i = (2/M)(L_g - mean)/n_g = -0.75 (group 0), +0.75 (group 1)
    losses, p = torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    sd = math.sqrt(3.5)
    loss, stats = invariant_policy_loss(losses, p, 1.0, "loss_std")
    assert stats["penalty"].item() == pytest.approx(2.25 / sd) and loss.item() == pytest.approx(3.0 + 2.25 / sd)
    assert effective_weights(losses, p, 1.0).tolist() == pytest.approx([-0.5, -0.5, 1.0, 1.0])
    w = effective_weights(losses, p, 1.0, "loss_std")  # the SD is a constant: w_i = 1/4 -+ 0.75 / sd
    assert w.tolist() == pytest.approx([0.25 - 0.75 / sd] * 2 + [0.25 + 0.75 / sd] * 2, rel=1e-5)
    assert (effective_weights(losses, p, 0.3, "loss_std") > 0).all()  # z-gap 0.80 < 1 / (2 x 0.3)
    scaled = effective_weights(10 * losses, p, 1.0, "loss_std")  # scale-free: the same weights for 10x the losses
    assert scaled.tolist() == pytest.approx(w.tolist(), rel=1e-5)


def tiny_gil(policy, micro: int, beta: float, clamp: bool = False):
    """GIL's loss on a tiny policy with no critic, the minibatch of 8 in micro-batches of ``micro``."""
    method = GIL.__new__(GIL)
    method.policy, method.critic, method.n_groups = copy.deepcopy(policy), None, 2
    method.gil = GILConfig(beta_policy=beta, clamp_group_weights=clamp)
    method.rl = SimpleNamespace(temperature=1.0, clip_range=0.2, micro_batch_size=micro, minibatch_size=8)
    method.acc = SimpleNamespace(backward=lambda loss: loss.backward())
    return method


def tiny_minibatch(policy):
    gen = torch.Generator().manual_seed(0)
    batch = fake_batch(torch.zeros(8, 1), scores=torch.zeros(8), kl=torch.zeros(8, 5))
    batch.query, batch.response = (
        torch.randint(3, 250, (8, 3), generator=gen),
        torch.randint(3, 250, (8, 5), generator=gen),
    )
    batch.query_mask = torch.ones(8, 3, dtype=torch.long)
    batch.mask[1, 3:], batch.mask[6, 1:] = 0, 0
    with torch.no_grad():  # old log-probs near the current ones, so some ratios leave the clip range
        old = response_logprobs(policy, batch.query, batch.query_mask, batch.response, batch.mask.long())
    batch.logprobs = (old + 0.3 * torch.randn(old.shape, generator=gen)) * batch.mask
    batch.advantages = torch.randn(8, 5, generator=gen) * batch.mask
    p = torch.softmax(2 * torch.randn(8, 2, generator=gen), dim=1)
    return batch, GILStepData(group_probs=p)


@pytest.mark.parametrize("clamp", [False, True])
def test_invariance_loss_and_gradient_do_not_depend_on_the_micro_batch_size(clamp):
    policy = load_causal_lm("tiny")[0]
    batch, data = tiny_minibatch(policy)
    beta = 200.0  # large enough that some samples' weights are negative
    reference = tiny_gil(policy, 8, beta, clamp)
    per_sample, _ = per_sample_policy_loss(reference, batch)
    w = effective_weights(per_sample, data.group_probs, beta)
    assert (w < 0).any()
    if clamp:  # the gradient of sum_i max(w_i, 0) l_i, the weights constants
        (w.clamp(min=0) * per_sample).sum().backward()
    else:  # one plain backward of the GIL loss on the whole minibatch
        invariant_policy_loss(per_sample, data.group_probs, beta)[0].backward()
    want_loss = invariant_policy_loss(per_sample.detach(), data.group_probs, beta)[0].item()
    for micro in (2, 4, 8):
        method = tiny_gil(policy, micro, beta, clamp)
        stats = minibatch_backward(method, batch, data, torch.arange(8), step=0)
        assert len(stats) == 8 // micro
        for row in stats:
            assert row["loss/policy"] == pytest.approx(want_loss, rel=1e-5)
            group_weights = [row[f"gil/effective_weight/{g}"] for g in range(2)]
            assert sum(group_weights) == pytest.approx(1.0, rel=1e-5)
            assert row["gil/negative_weight"] == float(min(group_weights) < 0)
        for (name, got), want in zip(method.policy.named_parameters(), reference.policy.parameters()):
            assert torch.allclose(got.grad, want.grad, atol=1e-6, rtol=1e-4), (micro, name)
