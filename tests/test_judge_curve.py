"""`gilbench judge-curve`: a run's logged samples judged against its starting policy, per window of steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gilbench.cli import main
from gilbench.errors import GilbenchError
from gilbench.eval import judge_curve as jc
from gilbench.eval.judges import ScoreJudge
from gilbench.pipeline import run
from gilbench.report.stability import Thresholds, analyse_run
from gilbench.report.store import read_judge_curve, read_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path_factory.mktemp("jc"), "ppo-kl", steps=4)
    summary = run(cfg, log=lambda s: None)
    return Path(summary["run_dir"]), cfg


def test_curve_points_pool_windows_of_steps_and_carry_both_scores(trained):
    run_dir, cfg = trained
    length_judge = ScoreJudge(score=lambda prompt, response: len(response), judge_id="length")
    curve = jc.judge_curve(
        run_dir, length_judge, output_dir=cfg.output_dir, window=2, progress=False, log=lambda s: None
    )
    assert [(p["first_step"], p["step"]) for p in curve] == [(1, 2), (3, 4)]
    assert all(p["n"] == 2 * cfg.rl.rollout_batch_size and p["invalid"] == 0 for p in curve)
    assert all(p["win"] + p["tie"] + p["lose"] == pytest.approx(1.0) for p in curve)
    # the score the policy was trained on, as the trainer logged it, and the judge's own score of the same samples
    per_step = {r["step"]: r["objective/score"] for r in read_metrics(run_dir)}
    assert curve[0]["rm_score"] == pytest.approx((per_step[1] + per_step[2]) / 2, rel=1e-5)
    logged = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    first = [len(r["response"].strip()) for r in logged if r["step"] in (1, 2)]
    assert curve[0]["judge_score"] == pytest.approx(sum(first) / len(first))
    groups = sorted({r["group"] for r in logged if r["step"] in (1, 2)})
    assert len(groups) > 1  # the judge's score per prompt group
    for g in groups:
        mine = [len(r["response"].strip()) for r in logged if r["step"] in (1, 2) and r["group"] == g]
        assert curve[0]["judge_score_groups"][g] == pytest.approx(sum(mine) / len(mine))
    assert read_judge_curve(run_dir)[-1]["step"] == 4  # written where the stability analysis reads it


def test_win_rate_follows_the_judge_and_the_reference_is_cached(trained, monkeypatch):
    run_dir, cfg = trained
    monkeypatch.setattr(
        "gilbench.stages.generate.generate_split", lambda *a, **k: pytest.fail("the reference should be cached")
    )
    longer = ScoreJudge(score=lambda p, r: len(r), judge_id="longer")
    shorter = ScoreJudge(score=lambda p, r: -len(r), judge_id="shorter")
    a, b = (
        jc.judge_curve(run_dir, j, output_dir=cfg.output_dir, window=4, progress=False, log=lambda s: None)[0]
        for j in (longer, shorter)
    )
    assert a["n"] == b["n"] == 4 * cfg.rl.rollout_batch_size
    assert (a["win"], a["tie"], a["lose"]) == pytest.approx(
        (b["lose"], b["tie"], b["win"])
    )  # opposite judges, mirrored verdicts
    assert a["judge_score"] == pytest.approx(-b["judge_score"]) and a["reference_judge_score"] > 0


def test_a_falling_judge_curve_fires_the_stability_flag(trained):
    run_dir, _ = trained
    rows = read_metrics(run_dir)
    rising = [dict(r, **{"objective/score": float(r["step"])}) for r in rows]  # score up every step
    curve = [
        {"step": 2, "win": 0.7, "n": 64},
        {"step": 3, "win": 0.35, "n": 64},
        {"step": 4, "win": 0.3, "n": 64},
    ]  # judge down
    flag = analyse_run(rising, curve, Thresholds(smooth=1))["flags"]["judge"]
    assert flag["fired"] and flag["step"] == 3


def test_cli_skips_runs_without_samples_and_explains_when_none_have_them(trained, tmp_path, capsys):
    run_dir, cfg = trained
    bare = tmp_path / "toy" / "sft" / "seed0"
    bare.mkdir(parents=True)
    (bare / "config.yaml").write_text("method: sft\ntask: toy\n")
    assert (
        main(
            [
                "judge-curve",
                str(run_dir),
                str(bare),
                "--judge",
                "rm:auto",
                "--output-dir",
                cfg.output_dir,
                "--window",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"skipped {bare}" in out and "win rate against the starting policy by step 4:" in out
    assert main(["judge-curve", str(bare), "--judge", "rm:auto"]) == 2
    assert "has no rollouts.jsonl" in capsys.readouterr().err
    with pytest.raises(GilbenchError, match="--window must be at least 1"):
        jc.windows([1, 2], 0)


def test_cli_skips_a_run_whose_curve_is_up_to_date(trained, tmp_path, capsys):
    run_dir, cfg = trained
    args = ["judge-curve", str(run_dir), "--judge", "rm:auto", "--output-dir", cfg.output_dir]
    assert main([*args, "--window", "2"]) == 0
    first = (run_dir / "judge_curve.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*args, "--window", "2"]) == 0  # same judge, policy and windows over every logged step
    assert "is up to date" in capsys.readouterr().out and (run_dir / "judge_curve.jsonl").read_bytes() == first
    assert main([*args, "--window", "4"]) == 0  # other windows: judged again
    assert "by step 4:" in capsys.readouterr().out
    assert [p["step"] for p in read_judge_curve(run_dir)] == [4]
    assert main([*args, "--window", "4", "--overwrite"]) == 0
    assert "by step 4:" in capsys.readouterr().out
    judge_id = read_judge_curve(run_dir)[0]["judge"]
    assert jc.curve_is_current(run_dir, judge_id, 4, "conservative")
    later = shutil.copytree(run_dir, tmp_path / "later")
    (later / "rollouts.jsonl").write_text(
        (later / "rollouts.jsonl").read_text().replace('"step": 4', '"step": 5')
    )  # a run still training has logged a later step since: its curve is stale
    assert not jc.curve_is_current(later, judge_id, 4, "conservative")
