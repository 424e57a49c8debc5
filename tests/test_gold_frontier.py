"""Proxy vs gold along training (gilbench/report/gold_frontier.py): hand-computed paths, peaks and matched-KL gold."""

import math

import pytest
from report_fixtures import curve, write_run

from gilbench.errors import GilbenchError
from gilbench.eval.stats import welch_difference
from gilbench.files import atomic_write_text, dumps
from gilbench.report.gold_frontier import gold_at, gold_path, summarise_method, summarise_path
from gilbench.report.spec import parse_spec
from gilbench.report.tables import build_table

METRICS = [{"step": s, "objective/kl": kl} for s, kl in [(1, 0.5), (2, 1.5), (3, 3.0), (4, 5.0), (5, 9.0), (6, 7.0)]]
CURVE = [  # windows of 2 steps: mean KL 1.0, 4.0, 8.0 -> sqrt 1, 2, 2.828
    {"step": 2, "first_step": 1, "judge_score": 1.0, "rm_score": 0.1, "reference_judge_score": 0.8, "win": 0.5},
    {
        "step": 4,
        "first_step": 3,
        "judge_score": 1.2,
        "rm_score": 0.5,
        "reference_judge_score": 0.8,
        "win": 0.6,
        "judge_score_groups": {"chat": 1.5, "trivia": 0.9},
    },
    {
        "step": 6,
        "first_step": 5,
        "judge_score": 0.9,
        "rm_score": 1.4,
        "reference_judge_score": 0.8,
        "win": 0.4,
        "judge_score_groups": {"chat": 1.3, "trivia": 0.5},
    },
]


def test_path_reads_the_window_kl_from_the_metrics():
    path = gold_path(METRICS, CURVE)
    assert [p["step"] for p in path] == [2, 4, 6]
    assert [p["sqrt_kl"] for p in path] == pytest.approx([1.0, 2.0, math.sqrt(8.0)])
    assert [p["gold"] for p in path] == [1.0, 1.2, 0.9] and [p["proxy"] for p in path] == [0.1, 0.5, 1.4]
    assert gold_path(METRICS, [{"step": 2, "win": 0.5}]) == []  # a win-rate judge has no score: no path


def test_gold_at_matched_kl_interpolates_from_the_start():
    path = gold_path(METRICS, CURVE)
    assert gold_at(path, 0.5) == pytest.approx(0.9)  # halfway from the start (0, 0.8) to (1, 1.0)
    assert gold_at(path, 1.5) == pytest.approx(1.1)
    assert gold_at(path, 2.0 + (math.sqrt(8) - 2) / 2) == pytest.approx(1.05)
    assert gold_at(path, 3.0) is None  # never got that far


def test_summary_of_one_path():
    s = summarise_path(gold_path(METRICS, CURVE), sqrt_kl_points=(1.0, 2.0))
    assert s["start_gold"] == pytest.approx(0.8) and s["peak_gold"] == 1.2 and s["peak_step"] == 4
    assert s["peak_sqrt_kl"] == pytest.approx(2.0) and s["end_gold"] == 0.9 and s["end_proxy"] == 1.4
    assert s["late_gold"] == pytest.approx(1.05)  # the mean of the last two windows, 1.2 and 0.9
    assert s["drop"] == pytest.approx(0.3) and s["gold@1"] == pytest.approx(1.0) and s["gold@2"] == pytest.approx(1.2)
    assert s["gap_first"] is None and s["gap_end"] == pytest.approx(0.8)
    assert s["worst_late"] == pytest.approx(0.7)  # trivia in both of the last two windows: 0.9, 0.5


def test_summary_across_seeds_is_mean_and_sd():
    shifted = [dict(p, judge_score=p["judge_score"] + 0.2) for p in CURVE]
    agg = summarise_method([gold_path(METRICS, CURVE), gold_path(METRICS, shifted)])
    assert agg["n"] == 2 and agg["peak_gold"]["mean"] == pytest.approx(1.3)
    assert agg["peak_gold"]["sd"] == pytest.approx(math.sqrt(0.02))


def test_frontier_table_from_stored_runs(tmp_path):
    for seed in (0, 1):
        rows = [dict(r, **m) for r, m in zip(curve(6, seed=seed), METRICS)]  # the KL of METRICS
        run = write_run(tmp_path, "toy", "ppo", seed, rows)
        atomic_write_text(run / "judge_curve.jsonl", "".join(dumps(p, sort_keys=True) + "\n" for p in CURVE))
    write_run(tmp_path, "toy", "ppo-kl", 0, curve(6))  # no judge curve: left out under methods: auto
    table = build_table(parse_spec({"kind": "frontier", "sqrt_kl": [1]}, "f"), tmp_path)
    assert [r[:3] for r in table.rows] == [["toy", "PPO", "2"]]
    cells = dict(zip([c for _, c in table.columns], table.rows[0]))
    assert cells["peak"] == "1.200 ± 0.000" and cells["√KL=1"] == "1.000 ± 0.000"
    assert cells["first → end"] == "— → 0.800 ± 0.000"  # the first window has no groups, the last does
    with pytest.raises(GilbenchError, match="sqrt_kl values must be positive"):
        parse_spec({"kind": "frontier", "sqrt_kl": [0]}, "f")


def test_welch_difference_by_hand():
    # a: mean 1.0, SD 0.2, 4 runs; b: mean 0.8, SD 0.1, 5 runs -> variances of the means 0.01 and 0.002, SE sqrt(0.012);
    # Welch df = 0.012^2 / (0.01^2 / 3 + 0.002^2 / 4) = 4.19417; t(0.975, 4.19417) = 2.726479 -> half-width 0.298671
    d = welch_difference({"mean": 1.0, "sd": 0.2, "n": 4}, {"mean": 0.8, "sd": 0.1, "n": 5})
    assert d["diff"] == pytest.approx(0.2) and d["df"] == pytest.approx(4.194175, abs=1e-6)
    assert d["ci"] == pytest.approx([0.2 - 0.298671, 0.2 + 0.298671], abs=1e-6)
    one = welch_difference({"mean": 1.0, "sd": None, "n": 1}, {"mean": 0.8, "sd": 0.1, "n": 5})
    assert one == {"diff": pytest.approx(0.2), "ci": None, "df": None}  # one seed: a difference, no interval
    assert welch_difference({"mean": None, "sd": None, "n": 0}, {"mean": 0.8, "sd": 0.1, "n": 5}) is None


def test_frontier_rows_against_a_baseline(tmp_path):
    shifted = [dict(p, judge_score=p["judge_score"] + 0.1 * k) for k, p in enumerate(CURVE)]
    for method, judged in (("gil", CURVE), ("ppo-kl", shifted)):
        for seed in (0, 1):
            rows = [dict(r, **m) for r, m in zip(curve(6, seed=seed), METRICS)]
            run = write_run(tmp_path, "toy", method, seed, rows)
            points = [dict(p, judge_score=p["judge_score"] + 0.02 * seed) for p in judged]
            atomic_write_text(run / "judge_curve.jsonl", "".join(dumps(p, sort_keys=True) + "\n" for p in points))
    spec = {"kind": "frontier", "methods": ["ppo-kl", "gil"], "baselines": ["ppo-kl"], "columns": ["late", "worst"]}
    table = build_table(parse_spec(spec, "f"), tmp_path)
    assert [r[1:3] for r in table.rows] == [["PPO w/ KL", "2"], ["GIL", "2"], ["GIL − PPO w/ KL", "2 vs 2"]]
    # late gold: GIL 1.05 (+0.01 on average over its seeds), PPO w/ KL 1.05 + (0.1 + 0.2) / 2 = 1.20 (+0.01): -0.150;
    # both SDs are equal (0.0141), so Welch's df is 2 and the half-width t(0.975, 2) * 0.01414 = 4.302653 * 0.01414
    half = 4.302653 * math.sqrt(0.0002 / 2 + 0.0002 / 2)
    assert table.rows[2][3] == f"-0.150 [{-0.150 - half:+.3f}, {-0.150 + half:+.3f}]"
    assert table.rows[2][4] == "+0.000 [+0.000, +0.000]"  # worst group: groups carry no shift, SD 0: no spread
    assert any("Welch" in n for n in table.notes)
    spec["baselines"] = ["ppo-lk"]  # a baseline without runs: dashes, and the note names it
    table = build_table(parse_spec(spec, "f"), tmp_path)
    assert table.rows[-1][2:] == ["2 vs 0", "—", "—"] and "ppo-lk (toy)" in table.notes[-1]
