"""benchmarks/gold_fall.py's cross-fitting: a flat curve's picked peak is not above its end; a real drop is kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location("gold_fall", Path(__file__).parent.parent / "benchmarks" / "gold_fall.py")
gold_fall = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gold_fall)


def curve(drop: float, seed: int):
    rng = np.random.default_rng(seed)
    step_of = np.repeat(np.arange(120), 16)  # 120 steps of 16 samples, windows of 10 steps
    window_of = step_of // 10
    gold = 0.3 * rng.standard_normal(len(step_of)) - drop * (window_of == window_of.max())
    return gold, window_of, step_of, np.arange(len(gold)), rng


def test_flat_curve_has_no_cross_fitted_fall_while_the_naive_one_does():
    naive, fitted = zip(*(gold_fall.cross_fitted(*curve(0.0, s), splits=20)[:2] for s in range(20)))
    assert np.mean(naive) > 0.03  # the best of 12 noisy windows (SE 0.024) sits well above the last
    assert abs(np.mean(fitted)) < 0.015


def test_a_real_drop_is_measured():
    fitted = [gold_fall.cross_fitted(*curve(0.2, s), splits=20)[1] for s in range(10)]
    assert abs(np.mean(fitted) - 0.2) < 0.03


def test_copies_of_a_sample_stay_in_one_half():
    def fitted(seed: int, leak: bool) -> float:
        gold, window_of, step_of, _, rng = curve(0.0, seed)
        copies = np.repeat(np.arange(len(gold)), 4)  # every sample 4 times, as a bootstrap draw repeats some
        units = np.arange(len(copies)) if leak else copies
        return gold_fall.cross_fitted(gold[copies], window_of[copies], step_of[copies], units, rng, splits=20)[1]

    assert abs(np.mean([fitted(s, leak=False) for s in range(20)])) < 0.01
    assert np.mean([fitted(s, leak=True) for s in range(20)]) > 0.015  # copies split apart: the halves share samples
