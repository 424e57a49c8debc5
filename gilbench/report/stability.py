"""Stability of RL runs from their per-step metrics (``metrics.jsonl``), per run and across seeds.

Per run (``analyse_run``): final and best reward-model score (trailing means over ``smooth`` steps, so one lucky
batch is not "the best"), the step of the best, max KL, the reward-vs-KL frontier (per-step points no other point
beats on both: lower KL and higher score), the critic's explained variance (final / mean), and four collapse flags,
each with the step it fires at:

* ``length``: length blow-up -- ``completions/mean_length`` above ``length_factor`` x its median over the first
  ``early_steps`` steps, for ``patience`` consecutive steps (the step reported is the first of them);
* ``repetition``: ``completions/repetition_rate`` (share of repeated 3-grams) above ``repetition`` for ``patience`` steps;
* ``kl``: KL explosion -- ``objective/kl`` above ``kl_max`` nats for ``patience`` steps, or growing super-linearly:
  over three consecutive windows of ``kl_window`` steps, the rise of the window median in the last window is at least
  ``kl_accel`` x max(rise in the window before, ``kl_min_rise``) (reported at the last step of the window);
* ``judge``: score rising while the judge win rate falls -- at ``patience`` consecutive judged points, the win rate is
  below the best earlier point by ``judge_drop`` and by ``judge_z`` standard errors of the difference (so that the
  noise of a few dozen judged pairs does not fire it), while the score (trailing mean) is above its value at that
  point by more than ``score_rise``. Needs judge results along training (``<run>/judge_curve.jsonl``: one
  ``{"step", "win", "n"}`` per line, written by ``gilbench judge-curve``); without them the flag is ``n/a``
  (``fired`` None), never guessed.

Across seeds (``aggregate``): mean and sample SD of each number; per flag, how many seeds fired and the mean step.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, fields
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.report.store import finished_seed_dirs, read_judge_curve, read_metrics, series

SCORE, KL, LENGTH, REPETITION, EV = (
    "objective/score",
    "objective/kl",
    "completions/mean_length",
    "completions/repetition_rate",
    "val/explained_var",
)
FLAGS = ("length", "repetition", "kl", "judge")
NUMBERS = ("final_score", "best_score", "best_step", "max_kl", "ev_final", "ev_mean")


@dataclass(frozen=True)
class Thresholds:
    smooth: int = 5  # steps in the trailing mean behind final / best score and final explained variance
    early_steps: int = 10  # steps whose median mean length is the length detector's baseline
    length_factor: float = 2.0  # length blow-up: mean length above this x the early median
    repetition: float = 0.5  # repetition collapse: repeated-3-gram share above this
    kl_max: float = 20.0  # KL explosion: sequence KL (nats) above this
    kl_window: int = 5  # steps per window of the super-linear KL test
    kl_accel: float = 2.0  # super-linear: the last window's rise is at least this x the previous rise ...
    kl_min_rise: float = 1.0  # ... (and x this floor, in nats, so noise around a flat KL never fires)
    patience: int = 2  # consecutive steps a threshold must hold
    judge_drop: float = 0.05  # judge win-rate fall (absolute) from the best earlier judged point ...
    judge_z: float = 2.0  # ... and at least this many standard errors of the difference (when points store their n)
    score_rise: float = 0.0  # while the score is above its value at that checkpoint by more than this

    @classmethod
    def from_dict(cls, values: dict | None) -> Thresholds:
        names = {f.name: f.type for f in fields(cls)}
        unknown = set(values or {}) - set(names)
        if unknown:
            raise GilbenchError(f"unknown stability thresholds {sorted(unknown)}; known: {', '.join(names)}")
        try:
            return cls(**{k: (int if names[k] == "int" else float)(v) for k, v in (values or {}).items()})
        except (TypeError, ValueError) as e:
            raise GilbenchError(f"stability thresholds: {e}") from None


def _flag(step: int | None, **info) -> dict:
    return {"fired": step is not None, "step": step, **info}


def _sustained(steps: list[int], hits: list[bool], patience: int) -> int | None:
    """First step of ``patience`` consecutive hits."""
    run = 0
    for i, hit in enumerate(hits):
        run = run + 1 if hit else 0
        if run >= max(1, patience):
            return steps[i - run + 1]
    return None


def detect_length(rows: list[dict], th: Thresholds) -> dict:
    steps, lengths = series(rows, LENGTH)
    if not lengths:
        return _flag(None, baseline=None)
    base = statistics.median(lengths[: th.early_steps])
    return _flag(_sustained(steps, [x > th.length_factor * base for x in lengths], th.patience), baseline=base)


def detect_repetition(rows: list[dict], th: Thresholds) -> dict:
    steps, rates = series(rows, REPETITION)
    return _flag(_sustained(steps, [x > th.repetition for x in rates], th.patience))


def detect_kl(rows: list[dict], th: Thresholds) -> dict:
    steps, kls = series(rows, KL)
    above = _sustained(steps, [x > th.kl_max for x in kls], th.patience)
    w, superlinear = th.kl_window, None
    for end in range(3 * w, len(kls) + 1):
        m0, m1, m2 = (statistics.median(kls[end - k * w : end - (k - 1) * w]) for k in (3, 2, 1))
        if m2 - m1 >= th.kl_accel * max(m1 - m0, th.kl_min_rise):
            superlinear = steps[end - 1]
            break
    fired = [s for s in (above, superlinear) if s is not None]
    step = min(fired) if fired else None
    reason = None if step is None else ("above kl_max" if step == above else "super-linear growth")
    return _flag(step, reason=reason)


def _score_at(steps: list[int], scores: list[float], step: int, smooth: int) -> float | None:
    upto = [s for st, s in zip(steps, scores) if st <= step][-smooth:]
    return sum(upto) / len(upto) if upto else None


def _win_se(point: dict) -> float:
    """Standard error of a judged point's win rate (0 when its number of pairs is not stored)."""
    n, p = point.get("n"), point["win"]
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def detect_judge(rows: list[dict], curve: list[dict] | None, th: Thresholds) -> dict:
    if not curve:
        return {"fired": None, "step": None, "status": "n/a"}
    steps, scores = series(rows, SCORE)
    hits = [False]
    for j in range(1, len(curve)):
        best = max(curve[:j], key=lambda c: c["win"])
        drop = max(
            th.judge_drop, th.judge_z * math.hypot(_win_se(best), _win_se(curve[j]))
        )  # not a fall that noise explains
        now, then = (
            _score_at(steps, scores, curve[j]["step"], th.smooth),
            _score_at(steps, scores, best["step"], th.smooth),
        )
        hits.append(curve[j]["win"] <= best["win"] - drop and None not in (now, then) and now - then > th.score_rise)
    fired = _sustained([c["step"] for c in curve], hits, th.patience)
    return _flag(fired, status="fired" if fired is not None else "ok")


def frontier(rows: list[dict]) -> list[list[float]]:
    """(KL, score) points no other step beats on both counts, by increasing KL."""
    points = sorted((r[KL], r[SCORE]) for r in rows if r.get(KL) is not None and r.get(SCORE) is not None)
    out: list[list[float]] = []
    for kl, score in points:
        if not out or score > out[-1][1]:
            out.append([kl, score])
    return out


def analyse_run(rows: list[dict], judge_curve: list[dict] | None = None, th: Thresholds = Thresholds()) -> dict | None:
    """Stability numbers and flags of one run; None for runs without rollouts (SFT, DPO)."""
    steps, scores = series(rows, SCORE)
    if not scores:
        return None
    k = max(1, th.smooth)
    trailing = [
        sum(scores[max(0, i - k + 1) : i + 1]) / len(scores[max(0, i - k + 1) : i + 1]) for i in range(len(scores))
    ]
    best = max(range(len(trailing)), key=lambda i: (trailing[i], -i))
    _, kls = series(rows, KL)
    _, ev = series(rows, EV)
    return {
        "steps": steps[-1],
        "final_score": trailing[-1],
        "best_score": trailing[best],
        "best_step": steps[best],
        "max_kl": max(kls) if kls else None,
        "ev_final": sum(ev[-k:]) / len(ev[-k:]) if ev else None,
        "ev_mean": sum(ev) / len(ev) if ev else None,
        "frontier": frontier(rows),
        "flags": {
            "length": detect_length(rows, th),
            "repetition": detect_repetition(rows, th),
            "kl": detect_kl(rows, th),
            "judge": detect_judge(rows, judge_curve, th),
        },
    }


def mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def aggregate(per_run: list[dict]) -> dict:
    """Across seeds: mean ± SD of each number; per flag, seeds fired / seeds it applies to, and the mean step."""
    out = {"n": len(per_run), **{name: mean_sd([r[name] for r in per_run]) for name in NUMBERS}, "flags": {}}
    for name in FLAGS:
        applicable = [r["flags"][name] for r in per_run if r["flags"][name]["fired"] is not None]
        fired = [f["step"] for f in applicable if f["fired"]]
        out["flags"][name] = {
            "fired": len(fired),
            "n": len(applicable),
            "steps": fired,
            "mean_step": statistics.fmean(fired) if fired else None,
        }
    return out


def analyse_method(output_dir: str | Path, task: str, method: str, th: Thresholds = Thresholds()) -> dict:
    """``{"runs": {seed: analysis}, "aggregate": ... | None}`` for every finished seed of one method on one task."""
    runs = {}
    for d in finished_seed_dirs(output_dir, task, method):
        result = analyse_run(read_metrics(d), read_judge_curve(d), th)
        if result is not None:
            runs[int(d.name[4:])] = result
    return {"runs": runs, "aggregate": aggregate(list(runs.values())) if runs else None}
