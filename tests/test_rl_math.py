"""The PPO math in gilbench.rl.core and gilbench.rl.kl_control, checked against numbers worked out
by hand (in the comments), not against a second copy of the same formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gilbench.rl.core import (
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_per_token,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)
from gilbench.rl.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller

NAN = float("nan")


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(actual, expected, tol: float = 1e-6) -> None:
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol)


# Two rows: the second has 1 real token; its padding holds nan, which must never leak in.
X = t([[1.0, 2.0, 3.0], [4.0, NAN, NAN]])
MASK = t([[1, 1, 1], [1, 0, 0]])


# ---------------------------------------------------------------------------- masked statistics


def test_masked_sum_and_mean():
    close(masked_sum(X, MASK), 10.0)  # 1 + 2 + 3 + 4
    close(masked_sum(X, MASK, dim=1), [6.0, 4.0])
    close(masked_mean(X, MASK), 2.5)  # 10 / 4 real tokens
    close(masked_mean(X, MASK, dim=1), [2.0, 4.0])  # 6/3 and 4/1
    close(masked_mean(X, MASK.bool(), dim=1), [2.0, 4.0])  # a bool mask works the same


def test_masked_var():
    # values 1,2,3,4, mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    close(masked_var(X, MASK), 5 / 3)  # unbiased: 5 / (4 - 1)
    close(masked_var(X, MASK, unbiased=False), 1.25)  # 5 / 4
    close(masked_var(t([[7.0, NAN]]), t([[1, 0]])), 0.0)  # one entry: no spread, not nan
    with pytest.raises(ValueError):
        masked_var(X, torch.zeros_like(MASK))


def test_masked_whiten():
    out = masked_whiten(X, MASK)
    sd = math.sqrt(5 / 3)  # 1.290994
    # (x - 2.5) / 1.290994 -> -1.161895, -0.387298, 0.387298, 1.161895
    close(out, [[-1.5 / sd, -0.5 / sd, 0.5 / sd], [1.5 / sd, 0.0, 0.0]])
    close(out[0], [-1.161895, -0.387298, 0.387298], tol=1e-6)
    close(masked_mean(out, MASK), 0.0)
    close(masked_var(out, MASK), 1.0, tol=1e-6)
    assert out[1, 1] == 0 and out[1, 2] == 0  # padding is exactly 0, nan did not leak

    kept_mean = masked_whiten(X, MASK, shift_mean=False)
    close(kept_mean, [[2.5 - 1.5 / sd, 2.5 - 0.5 / sd, 2.5 + 0.5 / sd], [2.5 + 1.5 / sd, 0.0, 0.0]])


# ---------------------------------------------------------------------------- KL estimators


def test_kl_estimators_on_known_numbers():
    # policy p = 0.5, reference 0.25: d = log p - log p_ref = log 2 = 0.693147
    logp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    close(kl_per_token(logp, ref), [0.693147])  # k1 = d (the default)
    close(kl_per_token(logp, ref, "k2"), [0.240227])  # 0.5 * 0.693147^2 = 0.5 * 0.480453
    close(kl_per_token(logp, ref, "k3"), [0.193147])  # e^-d - 1 + d = 0.5 - 1 + 0.693147

    # swapped: d = -log 2
    close(kl_per_token(ref, logp, "k1"), [-0.693147])  # k1 can be negative
    close(kl_per_token(ref, logp, "k2"), [0.240227])
    close(kl_per_token(ref, logp, "k3"), [0.306853])  # 2 - 1 - 0.693147

    same = t([-1.3, -0.2])
    for est in ("k1", "k2", "k3"):
        close(kl_per_token(same, same, est), [0.0, 0.0])


def test_k3_is_never_negative():
    g = torch.Generator().manual_seed(0)
    logp, ref = -5 * torch.rand(1000, generator=g), -5 * torch.rand(1000, generator=g)
    assert (kl_per_token(logp, ref, "k3") >= 0).all()
    assert (kl_per_token(logp, ref, "k1") < 0).any()


def test_unknown_kl_estimator_names_the_valid_ones():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_per_token(t([0.0]), t([0.0]), "k4")


# ---------------------------------------------------------------------------- GAE


def test_gae_gamma_one():
    # row 0: 3 real tokens, r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma = 1, lam = 0.95
    #   t=2: delta = 1 + 0 (episode over) - 0.7 = 0.3          A2 = 0.3
    #   t=1: delta = 0 + 0.7 - 0.6 = 0.1                        A1 = 0.1 + 0.95 * 0.3   = 0.385
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1                        A0 = 0.1 + 0.95 * 0.385 = 0.46575
    #   returns = A + V = [0.96575, 0.985, 1.0]
    # row 1: 2 real tokens, r = [0, 2], V = [1.0, 0.5]; padding holds junk (9) that must be ignored
    #   t=1: delta = 2 + 0 - 0.5 = 1.5                          A1 = 1.5
    #   t=0: delta = 0 + 0.5 - 1.0 = -0.5                       A0 = -0.5 + 0.95 * 1.5 = 0.925
    #   returns = [1.925, 2.0, 0]
    rewards = t([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = t([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(adv, [[0.46575, 0.385, 0.3], [0.925, 1.5, 0.0]])
    close(ret, [[0.96575, 0.985, 1.0], [1.925, 2.0, 0.0]])


def test_gae_gamma_below_one():
    # r = [0, 0, 1], V = [0.5, 0.6, 0.7], gamma = 0.9, lam = 0.5 (so gamma * lam = 0.45)
    #   t=2: delta = 1 - 0.7 = 0.3                              A2 = 0.3
    #   t=1: delta = 0.9 * 0.7 - 0.6 = 0.03                     A1 = 0.03 + 0.45 * 0.3   = 0.165
    #   t=0: delta = 0.9 * 0.6 - 0.5 = 0.04                     A0 = 0.04 + 0.45 * 0.165 = 0.11425
    #   returns = [0.61425, 0.765, 1.0]
    rewards = t([[0.0, 0.0, 1.0]])
    values = t([[0.5, 0.6, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.5)
    close(adv, [[0.11425, 0.165, 0.3]])
    close(ret, [[0.61425, 0.765, 1.0]])


def test_gae_lambda_one_is_monte_carlo():
    # gamma = lam = 1: returns are the plain reward-to-go, whatever V is. Row 1 ends at t=1.
    #   row 0: r = [1, 2, 3] -> reward-to-go [6, 5, 3];  row 1: r = [4, 5] -> [9, 5]
    rewards = t([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
    values = t([[0.3, -2.0, 1.0], [7.0, 0.1, 5.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    close(ret, [[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]])
    close(adv, [[5.7, 7.0, 2.0], [2.0, 4.9, 0.0]])


# ---------------------------------------------------------------------------- policy loss


def test_clipped_policy_loss_all_cases():
    # clip range 0.2 -> ratio clamped to [0.8, 1.2]. One real token per row, old_logp = 0 so
    # ratio = exp(logp). Per token: max(-A * r, -A * clamp(r)).
    #   A=+1, r=1.1 inside : max(-1.1, -1.1) = -1.1  not clipped
    #   A=+1, r=1.5 above  : max(-1.5, -1.2) = -1.2  clipped   (no gain from pushing r higher)
    #   A=+1, r=0.5 below  : max(-0.5, -0.8) = -0.5  not clipped (the pessimistic side)
    #   A=-1, r=0.9 inside : max( 0.9,  0.9) =  0.9  not clipped
    #   A=-1, r=0.5 below  : max( 0.5,  0.8) =  0.8  clipped
    #   A=-1, r=1.5 above  : max( 1.5,  1.2) =  1.5  not clipped
    ratios = [1.1, 1.5, 0.5, 0.9, 0.5, 1.5]
    adv = t([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0], [-1.0, 5.0], [-1.0, 5.0], [-1.0, 5.0]])
    logp = t([[math.log(r), 3.0] for r in ratios]).requires_grad_()
    old = torch.zeros(6, 2, dtype=torch.float64)
    mask = t([[1, 0]] * 6)
    loss, stats = clipped_policy_loss(logp, old, adv, mask, clip_range=0.2)
    close(loss, [-1.1, -1.2, -0.5, 0.9, 0.8, 1.5])
    assert stats["clipfrac"] == pytest.approx(2 / 6)
    assert stats["ratio_mean"] == pytest.approx(1.0)  # (1.1 + 1.5 + 0.5 + 0.9 + 0.5 + 1.5) / 6
    # 0.5 * log(r)^2: log 1.1 = 0.09531, log 1.5 = 0.405465, log 0.5 = -0.693147, log 0.9 = -0.105361
    # squares: 0.009084 + 0.164402 + 0.480453 + 0.011101 + 0.480453 + 0.164402 = 1.309895
    assert stats["approx_kl"] == pytest.approx(1.309895 / 12, abs=1e-6)
    assert all(isinstance(v, float) for v in stats.values())

    # d loss / d logp = -A * r where unclipped, 0 where clipped; 0 on padding.
    loss.sum().backward()
    close(logp.grad[:, 0], [-1.1, 0.0, -0.5, 0.9, 0.0, 1.5])
    close(logp.grad[:, 1], [0.0] * 6)


def test_clipped_policy_loss_is_a_mean_of_row_means():
    # row 0 has 2 tokens (losses -1.1 and -1.2 from above), row 1 has 1 token (loss 0.8).
    # per sample: [-1.15, 0.8]; the caller's .mean() is -0.175, not the token mean -1.5/3 = -0.5.
    logp = t([[math.log(1.1), math.log(1.5)], [math.log(0.5), NAN]])
    adv = t([[1.0, 1.0], [-1.0, NAN]])
    mask = t([[1, 1], [1, 0]])
    loss, stats = clipped_policy_loss(logp, torch.zeros(2, 2, dtype=torch.float64), adv, mask, 0.2)
    close(loss, [-1.15, 0.8])
    close(loss.mean(), -0.175)
    assert stats["clipfrac"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------- value loss


def test_clipped_value_loss():
    # clip 0.2. (old, new, return) -> v_clipped, (new-R)^2, (v_clipped-R)^2, max
    #   (1.0, 1.5, 1.0)   -> 1.2,  0.25, 0.04 -> 0.25  unclipped term larger
    #   (1.0, 1.5, 2.0)   -> 1.2,  0.25, 0.64 -> 0.64  clipped term larger
    #   (0.0, 0.1, 0.0)   -> 0.1,  0.01, 0.01 -> 0.01  inside the range
    #   (0.0, -0.5, -1.0) -> -0.2, 0.25, 0.64 -> 0.64  clipped term larger
    # loss = 0.5 * (0.25 + 0.64 + 0.01 + 0.64) / 4 = 0.1925, clipfrac = 2/4
    old = t([[1.0, 1.0, 0.0], [0.0, NAN, NAN]])
    new = t([[1.5, 1.5, 0.1], [-0.5, NAN, NAN]])
    ret = t([[1.0, 2.0, 0.0], [-1.0, NAN, NAN]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    loss, stats = clipped_value_loss(new, old, ret, mask, clip_range_value=0.2)
    assert loss.dim() == 0
    close(loss, 0.1925)
    assert stats["clipfrac"] == pytest.approx(0.5)


def test_explained_variance():
    # returns 1,2,3,4 (Var = 5/3 unbiased); padding is nan
    ret = t([[1.0, 2.0, 3.0], [4.0, NAN, NAN]])
    assert explained_variance(ret.clone(), ret, MASK) == pytest.approx(1.0)  # perfect critic
    assert explained_variance(torch.zeros_like(ret), ret, MASK) == pytest.approx(0.0)
    # V = 1,2,3,3 -> R - V = 0,0,0,1: mean 0.25, squared deviations 3*0.0625 + 0.5625 = 0.75,
    # Var = 0.75/3 = 0.25; EV = 1 - 0.25 / (5/3) = 0.85
    values = t([[1.0, 2.0, 3.0], [3.0, 0.0, 0.0]])
    assert explained_variance(values, ret, MASK) == pytest.approx(0.85)
    assert math.isnan(explained_variance(values, t([[2.0, 2.0, 2.0], [2.0, 0.0, 0.0]]), MASK))


# ---------------------------------------------------------------------------- logits


def test_entropy_from_logits():
    # uniform over V outcomes: H = log V, also after a large shift (stability)
    logits = torch.zeros(2, 3, 7)
    close(entropy_from_logits(logits), torch.full((2, 3), math.log(7)))
    close(entropy_from_logits(logits + 1e4), torch.full((2, 3), math.log(7)), tol=1e-5)
    # p = [0.75, 0.25] from logits [log 3, 0]: H = 0.75*0.287682 + 0.25*1.386294 = 0.562335
    close(entropy_from_logits(t([math.log(3.0), 0.0])), 0.562335)
    # a certain outcome (other logits -inf): H = 0, with a finite gradient
    sure = torch.tensor([0.0, -math.inf, -math.inf], requires_grad=True)
    h = entropy_from_logits(sure)
    h.backward()
    assert h.item() == 0.0 and torch.isfinite(sure.grad).all()


def test_logprobs_from_logits():
    # logits log([1, 3]) -> p = [0.25, 0.75]; a shift by 1000 must not matter
    logits = t([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # [B=1, T=2, V=2]
    tokens = torch.tensor([[1, 0]])
    close(logprobs_from_logits(logits, tokens), [[math.log(0.75), math.log(0.25)]])  # -0.287682, -1.386294
    close(logprobs_from_logits(logits + 1000.0, tokens), [[-0.287682, -1.386294]])


# ---------------------------------------------------------------------------- running moments


def test_running_moments_match_the_concatenation():
    rm = RunningMoments()
    assert (rm.mean, rm.std, rm.count) == (0.0, 1.0, 0.0)  # identity normalisation before data
    batches = [[1.0, 2.0, 3.0], [4.0], [10.0, 20.0, -5.0, 0.5]]
    # first batch: mean 2, std sqrt(((1)^2 + 0 + 1^2)/3) = sqrt(2/3)
    assert rm.update(torch.tensor(batches[0])) == pytest.approx((2.0, math.sqrt(2 / 3)))
    assert rm.update(torch.tensor([[4.0]])) == pytest.approx((4.0, 0.0))  # any shape is flattened
    rm.update(torch.tensor(batches[2]))
    seen = np.concatenate(batches)
    assert rm.count == 8
    assert rm.mean == pytest.approx(np.mean(seen))  # 35.5 / 8 = 4.4375
    assert rm.std == pytest.approx(np.std(seen))

    restored = RunningMoments()
    restored.load_state_dict(rm.state_dict())
    assert all(type(v) is float for v in rm.state_dict().values())
    assert (restored.mean, restored.std, restored.count) == (rm.mean, rm.std, rm.count)
    with pytest.raises(ValueError):
        rm.update(torch.tensor([]))


# ---------------------------------------------------------------------------- KL controllers


def test_fixed_kl_controller():
    c = FixedKLController(0.05)
    c.update(100.0, 512)
    assert c.value == 0.05
    d = FixedKLController(1.0)
    d.load_state_dict(c.state_dict())
    assert d.value == 0.05


def test_adaptive_kl_controller_by_hand():
    # init 1, target 1, horizon 100, 100 steps per update, so value *= 1 + err
    c = AdaptiveKLController(1.0, target=1.0, horizon=100)
    c.update(1.1, 100)  # err = 1.1/1 - 1 = 0.1              -> 1 * 1.1    = 1.1
    assert c.value == pytest.approx(1.1)
    c.update(50.0, 100)  # err = 49, clipped to +0.2          -> 1.1 * 1.2  = 1.32
    assert c.value == pytest.approx(1.32)
    c.update(0.0, 100)  # err = -1, clipped to -0.2          -> 1.32 * 0.8 = 1.056
    assert c.value == pytest.approx(1.056)
    c.update(1.0, 100)  # on target: err = 0, unchanged
    assert c.value == pytest.approx(1.056)


def test_adaptive_kl_controller_realistic_numbers():
    # init 0.1, target 6, horizon 10000, 256 samples per batch
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(7.2, 256)  # err = 7.2/6 - 1 = 0.2   -> 0.1 * (1 + 0.2*256/10000) = 0.1 * 1.00512 = 0.100512
    assert c.value == pytest.approx(0.100512)
    c.update(3.0, 256)  # err = -0.5 -> -0.2       -> 0.100512 * 0.99488 = 0.0999973786
    assert c.value == pytest.approx(0.0999973786)
    c.update(6.6, 1000)  # err = 0.1              -> 0.0999973786 * 1.01 = 0.1009973524
    assert c.value == pytest.approx(0.1009973524)

    d = AdaptiveKLController(0.5, target=6.0, horizon=10000)
    d.load_state_dict(c.state_dict())
    assert d.value == c.value


def test_make_kl_controller():
    fixed = make_kl_controller(0.2, False, 6.0, 10000)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.2
    adaptive = make_kl_controller(0.2, True, 6.0, 10000)
    assert isinstance(adaptive, AdaptiveKLController)
    assert (adaptive.value, adaptive.target, adaptive.horizon) == (0.2, 6.0, 10000)
