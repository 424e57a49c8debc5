"""GIL (gilbench/methods/gil.py): the group math by hand, group inference on planted batches, the adaptive KL
weights and the shared-trunk group step (end-to-end runs: tests/test_gil_runs.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from loop_fixtures import fake_rollout

from gilbench.methods.gil import (
    GIL,
    GILConfig,
    GroupHead,
    adaptive_kl_weights,
    group_inference_loss,
    invariant_policy_loss,
    normalized_mutual_info,
    purity,
    soft_group_stats,
    train_group_head,
)
from gilbench.rl.rollout import Rollout
from gilbench.rl.trainer import shape_rewards

# Six samples, two groups. Masses: g0 = 1+1+.75+.5+.25+0 = 3.5, g1 = 0+0+.25+.5+.75+1 = 2.5.
P6 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.0, 1.0]])
PERF6 = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
LOSS6 = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, -0.5])


def test_soft_group_stats_by_hand():
    m, R, V = soft_group_stats(P6, PERF6)
    # m = (3.5/6, 2.5/6) = (7/12, 5/12)
    # R0 = (1*1 + 1*2 + .75*3 + .5*4 + .25*5 + 0*6) / 3.5 = 8.5 / 3.5 = 17/7
    # R1 = (0 + 0 + .25*3 + .5*4 + .75*5 + 1*6) / 2.5 = 12.5 / 2.5 = 5
    # mean R = (17/7 + 35/7)/2 = 26/7; V = ((17/7 - 26/7)^2 + (5 - 26/7)^2) / 2 = (9/7)^2 = 81/49
    assert torch.allclose(m, torch.tensor([7 / 12, 5 / 12]))
    assert torch.allclose(R, torch.tensor([17 / 7, 5.0]))
    assert V.item() == pytest.approx(81 / 49, rel=1e-6)
    # KL(m || uniform) = 7/12 log(2*7/12) + 5/12 log(2*5/12) = 0.0139539...
    kl = 7 / 12 * math.log(14 / 12) + 5 / 12 * math.log(10 / 12)
    assert group_inference_loss(P6, PERF6, beta_critic=1.0, balance=0.5).item() == pytest.approx(
        -81 / 49 + 0.5 * kl, rel=1e-6
    )
    assert group_inference_loss(P6, PERF6, beta_critic=2.0, balance=0.0).item() == pytest.approx(-2 * 81 / 49, rel=1e-6)


def test_invariant_policy_loss_by_hand_and_gradient():
    loss, stats = invariant_policy_loss(LOSS6, P6, beta_policy=2.0)
    # L0 = (.5 - 1 + .75*2 + 0 + .25*1 + 0) / 3.5 = 1.25 / 3.5 = 5/14
    # L1 = (0 + 0 + .25*2 + 0 + .75*1 - .5) / 2.5 = 0.75 / 2.5 = 3/10
    # sum_g m_g L_g = 7/12 * 5/14 + 5/12 * 3/10 = 5/24 + 3/24 = 1/3 = mean(l) = 2/6
    # penalty = ((5/14 - 3/10) / 2)^2 = (1/35)^2 = 1/1225; loss = 1/3 + 2/1225
    assert torch.allclose(stats["group_losses"], torch.tensor([5 / 14, 3 / 10]))
    assert stats["penalty"].item() == pytest.approx(1 / 1225, rel=1e-5)
    assert loss.item() == pytest.approx(1 / 3 + 2 / 1225, rel=1e-6)
    assert 7 / 12 * 5 / 14 + 5 / 12 * 3 / 10 == pytest.approx(LOSS6.mean().item())
    assert (
        invariant_policy_loss(LOSS6, P6, beta_policy=0.0)[0].item() == LOSS6.mean().item()
    )  # beta 0: PPO's loss, exactly

    p64 = P6.double()
    assert torch.autograd.gradcheck(
        lambda losses: invariant_policy_loss(losses, p64, 2.0)[0], LOSS6.double().requires_grad_()
    )
    soft = torch.softmax(torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=1)
    assert torch.autograd.gradcheck(
        lambda losses: invariant_policy_loss(losses, soft, 0.7)[0], LOSS6.double().requires_grad_()
    )
    assert torch.autograd.gradcheck(
        lambda p: group_inference_loss(p, PERF6.double(), 1.0, 0.5), soft.clone().requires_grad_()
    )


def test_groups_without_mass_are_left_out():
    onehot = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # group 1 absent (oracle p)
    m, R, V = soft_group_stats(onehot, torch.tensor([1.0, 3.0, 6.0]))
    # R = (2, nan, 6); V over the two present groups = ((2 - 4)^2 + (6 - 4)^2) / 2 = 4
    assert m[1] == 0 and math.isnan(R[1]) and R[0] == 2 and R[2] == 6 and V.item() == pytest.approx(4.0)
    losses = torch.tensor([1.0, 3.0, 6.0], requires_grad=True)
    loss, _ = invariant_policy_loss(losses, onehot, 1.0)  # mean 10/3 + the same penalty, 4
    assert loss.item() == pytest.approx(10 / 3 + 4.0) and torch.isfinite(torch.autograd.grad(loss, losses)[0]).all()


def test_nmi_and_purity():
    assert normalized_mutual_info([0, 0, 1, 1], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert normalized_mutual_info([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(1.0)  # names do not matter
    assert normalized_mutual_info([0, 1, 0, 1], ["a", "a", "b", "b"]) == pytest.approx(0.0, abs=1e-12)
    # pred (0,0,0,1), labels (a,a,b,b): H(pred) = H(.75,.25) = 0.5623, H(labels) = log 2 = 0.6931,
    # MI = .5 log(.5/(.75*.5)) + .25 log(.25/(.75*.5)) + .25 log(.25/(.25*.5)) = 0.2158; NMI = MI / mean(H) = 0.3441
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = 0.5 * math.log(0.5 / 0.375) + 0.25 * math.log(0.25 / 0.375) + 0.25 * math.log(2.0)
    assert normalized_mutual_info([0, 0, 0, 1], list("aabb")) == pytest.approx(mi / ((h_pred + math.log(2)) / 2))
    assert purity([0, 0, 0, 1], list("aabb")) == pytest.approx(0.75)  # group 0: 2 of 3 are a; group 1: 1 of 1
    assert purity([0, 0, 0, 0], list("aabb")) == 0.5
    sklearn = pytest.importorskip("sklearn.metrics")  # a cross-check only: not a dependency of gilbench
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 3, (50,), generator=gen).tolist(), torch.randint(0, 4, (50,), generator=gen).tolist()
    assert normalized_mutual_info(a, b) == pytest.approx(sklearn.normalized_mutual_info_score(b, a))


def test_group_head_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    head = GroupHead(16, 4, seed=7)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(head.weight, GroupHead(16, 4, seed=7).weight) and not torch.equal(
        head.weight, GroupHead(16, 4, seed=8).weight
    )


def planted_batch(seed: int, B: int = 32, H: int = 64):
    """Two clusters of hidden states (a shared offset, a small shift along one direction, noise), rewards +1 / -1."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(B) % 2
    hidden = 3 * torch.randn(H, generator=gen) + (2 * labels[:, None] - 1) * 0.3 * torch.randn(H, generator=gen)
    hidden = hidden + 0.5 * torch.randn(B, H, generator=gen)
    rewards = torch.where(labels == 1, 1.0, -1.0) + 0.3 * torch.randn(B, generator=gen)
    return hidden, rewards, labels


def fit(hidden, rewards, seed, cfg):
    head = GroupHead(hidden.shape[1], cfg.n_groups, seed=seed)
    train_group_head(head, torch.optim.AdamW(head.parameters(), lr=cfg.group_lr), hidden, rewards, cfg)
    with torch.no_grad():
        return head(hidden)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_inference_recovers_a_planted_split(seed):
    hidden, rewards, labels = planted_batch(seed)
    p = fit(hidden, rewards, seed, GILConfig())  # the default group_steps on one rollout batch
    assert purity(p.argmax(1).numpy(), labels.numpy()) >= 0.9
    assert normalized_mutual_info(p.argmax(1).numpy(), labels.numpy()) > 0.5


def planted_stream_nmi(seed: int, strength: float, batches: int = 30, B: int = 16, H: int = 64) -> float:
    """Train one head online on a stream of small batches (planted groups along one direction, rewards = group
    +-0.5 + noise of SD 1, so a batch's reward split is mostly noise); return its NMI with the planted groups on
    400 fresh samples it never trained on."""
    gen = torch.Generator().manual_seed(seed)
    offset, direction = 3 * torch.randn(H, generator=gen), strength * torch.randn(H, generator=gen)

    def draw(n):
        labels = torch.randperm(n, generator=gen) % 2
        hidden = offset + (2 * labels[:, None] - 1) * direction + 0.5 * torch.randn(n, H, generator=gen)
        return hidden, 0.5 * (2 * labels - 1).float() + torch.randn(n, generator=gen), labels

    cfg = GILConfig()
    head = GroupHead(H, 2, seed=seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.group_lr)
    for _ in range(batches):  # as GIL runs it: the head and its optimiser carry over from rollout to rollout
        hidden, rewards, _ = draw(B)
        train_group_head(head, optimizer, hidden, rewards, cfg)
    hidden, _, labels = draw(400)
    with torch.no_grad():
        return normalized_mutual_info(head(hidden).argmax(1).numpy(), labels.numpy())


def test_online_group_inference_finds_planted_groups_on_held_out_samples():
    """Not the reward split of one batch: trained on batches of 16 whose rewards are mostly noise, the head's groups
    match the planted ones on samples it never saw; with no structure in the hidden states they match nothing."""
    planted = sum(planted_stream_nmi(seed, strength=0.1) for seed in range(5)) / 5
    none = sum(planted_stream_nmi(seed, strength=0.0) for seed in range(5)) / 5
    assert planted > 0.3 and none < 0.05


def test_balance_term_stops_the_head_isolating_an_outlier():
    """One sample with an outlying reward and a distinctive hidden state: maximising V alone puts it in a
    group of its own (mass 1/32). 256 steps (32 rollouts' worth, on the same batch) is the worst case."""
    min_mass = {}
    for balance in (0.0, GILConfig.group_balance):
        masses = []
        for seed in range(4):
            gen = torch.Generator().manual_seed(seed)
            hidden = torch.randn(64, generator=gen) + torch.randn(32, 64, generator=gen)
            hidden[0] += 3 * torch.randn(64, generator=gen)
            rewards = 0.3 * torch.randn(32, generator=gen)
            rewards[0] = 6.0
            p = fit(hidden, rewards, seed, GILConfig(group_balance=balance, group_steps=256))
            masses.append(p.mean(0).min().item())
        min_mass[balance] = min(masses)
    assert min_mass[0.0] < 0.1  # the failure the guard exists for
    assert min_mass[GILConfig.group_balance] >= 0.1


def fake_batch(hidden: torch.Tensor, scores: torch.Tensor, kl: torch.Tensor) -> Rollout:
    """A batch as GIL sees it: the critic's values (zeros) and its hidden state ``hidden`` at the last token."""
    return fake_rollout(scores, kl, with_values=True, critic_hidden=hidden)


@pytest.mark.parametrize("normalise", [True, False])
def test_adaptive_kl_weights_follow_the_high_group(normalise):
    p_high = torch.tensor([0.9, 0.5, 0.1, 0.3])
    w = adaptive_kl_weights(p_high, normalise)
    assert torch.allclose(w, p_high / p_high.mean() if normalise else p_high)
    # Through prepare: a 1-d head with p(g=1 | h) = sigmoid(-2h); the samples with h < 0 score high, so g_high = 1.
    method = GIL.__new__(GIL)
    method.gil, method.n_groups = GILConfig(kl_normalise=normalise, group_steps=0), 2
    method.kl_ctl = SimpleNamespace(value=0.1)
    method.head = GroupHead(1, 2, seed=0, center=False)
    with torch.no_grad():
        method.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    hidden = torch.tensor([[-2.0], [-1.0], [0.5], [2.0]])
    batch = fake_batch(hidden, scores=torch.tensor([3.0, 2.0, 0.0, -1.0]), kl=torch.ones(4, 3))
    data = method.prepare(batch)
    p1 = torch.sigmoid(-2 * hidden[:, 0])
    expected = p1 / p1.mean() if normalise else p1
    assert data.metrics["gil/g_high"] == 1
    assert torch.allclose(data.kl_weights, expected)
    assert torch.allclose(data.group_probs[:, 1], p1)
    assert data.metrics["gil/kl_weight_mean"] == pytest.approx(1.0 if normalise else p1.mean().item(), rel=1e-6)
    rewards = shape_rewards(
        batch, 0.1, data.kl_weights
    )  # the loop's shaping: -kl_coef * w_i * KL_t, + score at the end
    assert torch.allclose(rewards[:, 0], -0.1 * expected)
    assert torch.allclose(rewards[:, -1], -0.1 * expected + batch.scores)
    method.gil.adaptive_kl = False
    assert torch.equal(method.prepare(batch).kl_weights, torch.ones(4))


def test_shared_trunk_step_matches_a_whole_batch_backward():
    """group_step pushes dLoss/dp through the critic chunk by chunk; the update must equal one plain
    backward of the group loss through head and trunk on the whole batch."""
    import copy

    from gilbench.models.heads import ValueModel
    from gilbench.models.presets import load_causal_lm
    from gilbench.rl.rollout import critic_forward

    critic = ValueModel.from_causal_lm(load_causal_lm("tiny")[0])
    gen = torch.Generator().manual_seed(0)
    batch = fake_batch(torch.zeros(5, 64), scores=torch.randn(5, generator=gen), kl=torch.zeros(5, 4))
    batch.query, batch.response = (
        torch.randint(0, 250, (5, 2), generator=gen),
        torch.randint(0, 250, (5, 4), generator=gen),
    )
    batch.mask[3, 2:] = 0  # a short response: its hidden state is read at its own last token
    cfg = GILConfig(group_head_shares_trunk=True, n_groups=3)

    reference_critic, reference_head = copy.deepcopy(critic), GroupHead(64, 3, seed=0)
    _, hidden = critic_forward(reference_critic, batch.query, batch.query_mask, batch.response, batch.mask.long())
    group_inference_loss(
        reference_head(hidden),
        (batch.scores - batch.scores.mean()) / batch.scores.std(unbiased=False),
        1.0,
        cfg.group_balance,
    ).backward()

    method = GIL.__new__(GIL)
    method.gil, method.critic, method.head = cfg, critic, GroupHead(64, 3, seed=0)
    method.rl = SimpleNamespace(forward_batch_size=2)  # chunks of 2, 2 and 1
    method.group_opt = torch.optim.SGD([*method.head.parameters(), *critic.trunk.parameters()], lr=1.0)
    before = {n: p.detach().clone() for n, p in [*method.head.named_parameters(), *critic.trunk.named_parameters()]}
    method.group_step(batch, batch.scores)
    for name, param in [*method.head.named_parameters(), *critic.trunk.named_parameters()]:
        ref = dict([*reference_head.named_parameters(), *reference_critic.trunk.named_parameters()])[name]
        step = before[name] - param.detach()  # SGD with lr 1: the gradient
        assert torch.allclose(
            step, ref.grad if ref.grad is not None else torch.zeros_like(step), atol=1e-5, rtol=1e-4
        ), name
        assert param.grad is None  # nothing left behind for the PPO step


def test_performance_return_uses_the_kl_shaped_return():
    """performance=return: g_high from score - kl_coef * sum KL with unit weights (before the KL weights exist); the
    group step from the sum of the rewards shaped with those weights."""
    method = GIL.__new__(GIL)
    method.gil, method.n_groups = GILConfig(performance="return", group_steps=0), 2
    method.kl_ctl = SimpleNamespace(value=1.0)
    method.head = GroupHead(1, 2, seed=0, center=False)
    with torch.no_grad():
        method.head.weight.copy_(torch.tensor([[5.0], [-5.0]]))  # h > 0: group 0, h < 0: group 1
    # Group 0 scores higher (2 vs 1) but pays 3 nats of KL over 3 tokens: its return is 2 - 3 = -1 < 1.
    batch = fake_batch(
        torch.tensor([[1.0], [1.0], [-1.0], [-1.0]]),
        scores=torch.tensor([2.0, 2.0, 1.0, 1.0]),
        kl=torch.tensor([[1.0, 1.0, 1.0]] * 2 + [[0.0, 0.0, 0.0]] * 2),
    )
    data = method.prepare(batch)
    assert data.metrics["gil/g_high"] == 1
    assert torch.allclose(method.kl_shaped_return(batch, None), torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    w = data.kl_weights
    assert torch.allclose(method.kl_shaped_return(batch, w), batch.scores - 3 * w * torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # group statistics use the return shaped with w (~0 for group 0, whose p_high is ~0): returns 2 and 1, gap 1
    # (with unit weights they would be -1 and 1, gap 2)
    assert data.metrics["group/gap"] == pytest.approx(1.0, abs=1e-3)
