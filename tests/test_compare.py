"""Statistics of a comparison (checked by hand and against scipy), the results files and the `compare` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from gilbench.cli.compare import add_compare_parser
from gilbench.errors import GilbenchError
from gilbench.eval import stats
from gilbench.eval.compare import compare
from gilbench.eval.judges import ScoreJudge

sys.path.insert(0, str(Path(__file__).parent))
from judge_server import JudgeServer, make_runs  # noqa: E402


def items_from(outcomes: str, prompts=None) -> list[dict]:
    """'w' / 't' / 'l' per item; cluster = prompt (defaults to one prompt per item)."""
    frac = {"w": (1.0, 0.0, 0.0), "t": (0.0, 1.0, 0.0), "l": (0.0, 0.0, 1.0)}
    prompts = prompts or list(range(len(outcomes)))
    return [dict(zip(("win", "tie", "lose"), frac[o]), cluster=str(p)) for o, p in zip(outcomes, prompts)]


def test_rates_sign_test_and_bootstrap():
    items = items_from("wwwwwwttll")
    out, draws = stats.rates(items, "x", n_boot=4000, seed=1)
    assert (out["win"], out["tie"], out["lose"], out["n"]) == (0.6, 0.2, 0.2, 10)
    assert out["sign_test"] == {"wins": 6, "losses": 2, "p": pytest.approx(binomtest(6, 8, 0.5).pvalue)}
    assert out["sign_test"]["p"] == pytest.approx(0.2890625)  # 2 * P(X >= 6), X ~ Bin(8, 1/2) = 2 * 37/256
    for k in ("win", "tie", "lose"):
        lo, hi = out[f"{k}_ci"]
        assert lo <= out[k] <= hi
    se = np.sqrt(0.6 * 0.4 / 10)  # the percentile interval is close to the normal one here
    assert out["win_ci"][0] == pytest.approx(0.6 - 1.96 * se, abs=0.06) and out["win_ci"][1] == pytest.approx(
        0.6 + 1.96 * se, abs=0.06
    )
    again, same = stats.rates(items, "x", n_boot=4000, seed=1)
    _, other = stats.rates(items, "x", n_boot=4000, seed=2)
    assert again == out and np.array_equal(same, draws) and not np.array_equal(other, draws) and len(draws) == 4000


def test_bootstrap_resamples_prompts_not_items():
    single = items_from("wwlttwlw")
    triple = items_from("wwlttwlw" * 3, prompts=list(range(8)) * 3)  # three seeds of the same 8 prompts, same outcomes
    a, _ = stats.rates(single, "x", seed=0)
    b, _ = stats.rates(triple, "x", seed=0)
    assert a["win_ci"] == b["win_ci"] and b["n"] == 24 and b["n_prompts"] == 8
    naive = items_from("wwlttwlw" * 3)  # the same 24 items as if independent: a narrower, overconfident interval
    c, _ = stats.rates(naive, "x", seed=0)
    assert c["win_ci"][1] - c["win_ci"][0] < a["win_ci"][1] - a["win_ci"][0]


def test_average_policy_sign_and_invalid_items():
    items = [
        {"win": 0.5, "tie": 0.5, "lose": 0.0, "cluster": "1"},
        {"win": 0.5, "tie": 0.0, "lose": 0.5, "cluster": "2"},
        {"win": None, "tie": None, "lose": None, "cluster": "3"},
        {"win": 0.0, "tie": 0.0, "lose": 1.0, "cluster": "4"},
    ]
    out, _ = stats.rates(items, "x")
    assert out["n"] == 3 and out["n_invalid"] == 1 and out["win"] == pytest.approx(1 / 3)
    assert out["sign_test"]["wins"] == 1 and out["sign_test"]["losses"] == 1 and out["sign_test"]["p"] == 1.0


def test_health_by_hand():
    def item(o1, v1, o2, v2, la=5, lb=3, identical=False):
        return {
            "orders": [{"outcome": o1, "verdict": v1}, {"outcome": o2, "verdict": v2}],
            "length_a": la,
            "length_b": lb,
            "identical": identical,
        }

    items = [
        item("a", "A", "a", "B"),  # consistent; a (longer) wins twice, once first, once second
        item("a", "A", "b", "A"),  # a flip: the first position won both times
        item("tie", "C", "invalid", "invalid"),
        item("b", "B", "tie", "C", la=3, lb=3),  # equal length
        item("tie", "C", "tie", "C", identical=True),
    ]  # never shown to the judge
    h = stats.health(items)
    assert h["position_flip_rate"] == pytest.approx(2 / 3)  # pairs 2 and 4 of the 3 with two valid orders
    assert h["first_position_win_rate"] == pytest.approx(3 / 5)  # A,B,A,A,B over the 5 decisive verdicts
    assert h["longer_wins_rate"] == pytest.approx(3 / 4)  # decisive verdicts of pairs 1-2: a, a, a, b
    assert h["invalid_rate"] == pytest.approx(1 / 8)


def test_gap_and_mean_ci():
    win_id, d_id = stats.rates(items_from("wwwl"), "id")
    win_ood, d_ood = stats.rates(items_from("wlll"), "ood")
    g = stats.gap(d_id, d_ood, win_id["win"], win_ood["win"])
    assert g["win"] == pytest.approx(0.5) and g["ci"][0] <= 0.5 <= g["ci"][1]
    m = stats.mean_ci([1.0, 2.0, 3.0, 6.0], ["a", "b", "c", "d"], "m")
    assert m["mean"] == 3.0 and m["ci"][0] <= 3.0 <= m["ci"][1] and m["n"] == 4


def test_prompt_sign_test_counts_a_prompt_once_whatever_its_seeds():
    # prompt 0: three seeds won; prompt 1: won, lost, lost (mean < 0); prompt 2: won, lost (mean 0: left out)
    items = items_from("wwwwllwl", prompts=[0, 0, 0, 1, 1, 1, 2, 2])
    assert stats.sign_test(items) | {"p": None} == {"wins": 5, "losses": 3, "p": None}
    st = stats.prompt_sign_test(items)
    assert (st["wins"], st["losses"], st["n_prompts"]) == (1, 1, 3) and st["p"] == pytest.approx(1.0)


def test_paired_score_difference_by_hand():
    rows = [(0, 1.0, 0.5), (0, 0.8, 0.6), (1, 0.2, 0.4), (2, 0.9, 0.3)]  # (prompt, score A, score B); prompt 0 twice
    items = [{"cluster": str(p), "score_a": a, "score_b": b} for p, a, b in rows]
    d = stats.score_difference(items, "x", n_boot=2000, seed=0)
    assert (d["n"], d["n_prompts"]) == (4, 3)
    assert (d["a"], d["b"], d["diff"]) == (pytest.approx(0.725), pytest.approx(0.45), pytest.approx(0.275))
    assert d["diff_ci"][0] <= 0.275 <= d["diff_ci"][1]
    # prompt means of A - B: 0.35, -0.2, 0.6 -> 2 prompts up, 1 down
    assert d["prompt_sign_test"] | {"p": None} == {"wins": 2, "losses": 1, "n_prompts": 3, "p": None}
    assert stats.score_difference([{"cluster": "0", "win": 1.0}], "x") is None  # a verdict judge: no scores
    assert "across_seeds" not in d  # items that do not name their seed: no view across seeds


def test_score_difference_across_seeds_by_hand():
    # (seed, score A, score B): seed means of A - B are 0.2, 0.4, 0.0 -> mean 0.2, SD 0.2, SE 0.2 / sqrt(3);
    # t(0.975, df 2) = 4.302653 -> half-width 0.496827
    rows = [(0, 1.0, 0.9), (0, 1.0, 0.7), (1, 0.9, 0.5), (2, 0.5, 0.5)]
    items = [{"cluster": str(i), "seed": s, "score_a": a, "score_b": b} for i, (s, a, b) in enumerate(rows)]
    seeds = stats.score_difference(items, "x")["across_seeds"]
    assert seeds["k"] == 3 and seeds["per_seed"] == pytest.approx({"0": 0.2, "1": 0.4, "2": 0.0})
    assert seeds["mean"] == pytest.approx(0.2)
    assert seeds["ci"] == pytest.approx([0.2 - 0.496827, 0.2 + 0.496827], abs=1e-6)
    one = stats.across_seeds(items[:2], lambda it: it["score_a"] - it["score_b"])
    assert one["k"] == 1 and one["mean"] == pytest.approx(0.2) and one["ci"] is None  # no spread to measure


def test_compare_results_files(tmp_path):
    a, b = make_runs(tmp_path / "runs", seeds=(0, 1))
    judge = ScoreJudge(lambda p, r: float("GOOD" in r), tie_margin=0.5, judge_id="marker")
    res = compare(a, b, judge, progress=False, n_boot=500)
    out = Path(res["out_dir"])
    assert out == tmp_path / "runs" / "toy" / "compare" / "gil_vs_ppo" / "marker"
    assert json.loads((out / "results.json").read_text())["splits"][0]["win"] == res["splits"][0]["win"]
    records = [json.loads(x) for x in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(records) == 32 and res["n_items"] == 32 and res["n_identical"] == 8
    r = records[0]
    for key in (
        "item",
        "split",
        "group",
        "response_a",
        "response_b",
        "orders",
        "outcome",
        "attempts",
        "cached",
        "cost",
    ):
        assert key in r
    assert {"raw", "verdict", "outcome", "order"} <= set(r["orders"][0])
    split = res["splits"][0]
    assert (split["split"], split["n"], split["n_prompts"]) == ("id:test", 16, 8)
    assert (split["win"], split["tie"], split["lose"]) == (0.25, 0.5, 0.25)
    assert set(split["groups"]) == {"g1", "g2"} and split["groups"]["g1"]["n"] == 8
    assert set(res["distributions"]) == {"id", "ood"} and res["distributions"]["ood"]["n"] == 16
    assert res["gap_id_minus_ood"]["win"] == 0.0
    rm = res["reward_model_score"]["splits"]["id:test"]
    assert res["reward_model_score"]["distributions"]["ood"]["b"]["n"] == 16
    assert (
        rm["a"]["method"] == "gil" and rm["a"]["mean"] == pytest.approx(0.35) and rm["b"]["mean"] == pytest.approx(1.35)
    )
    assert res["seeds"] == [0, 1] and res["task"] == "toy"
    # a score judge's scores give the paired difference (A's responses score 0 or 1, as B's)
    diff = split["score_difference"]
    scored = [r for r in records if r["split"] == "id:test"]
    assert diff["n"] == 16 and diff["diff"] == pytest.approx(sum(r["score_a"] - r["score_b"] for r in scored) / 16)
    assert set(split["worst_group_score"]) == {"a", "b"} and "worst_group_score" in res["distributions"]["ood"]


def test_limit_judges_the_first_prompts_of_each_split(tmp_path):
    a, b = make_runs(tmp_path / "runs", seeds=(0, 1))
    judge = ScoreJudge(lambda p, r: float("GOOD" in r), tie_margin=0.5, judge_id="marker")
    res = compare(a, b, judge, progress=False, n_boot=100, limit=3)
    assert len(res["splits"]) == 2 and all(s["n_prompts"] == 3 for s in res["splits"])
    assert res["n_items"] == 12  # 2 splits x 3 prompts x 2 seeds


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gilbench")
    add_compare_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", *argv])
    return args.func(args)


def test_cli_with_an_http_judge(tmp_path, monkeypatch, capsys):
    make_runs(tmp_path / "runs", seeds=(0, 1, 2))
    make_runs(tmp_path / "runs", methods=("ppo",), seeds=(3,))
    monkeypatch.setenv("GILBENCH_TEST_KEY", "sk-cli-secret-123")
    gil_vs_ppo = ["gil", "ppo", "--task", "toy", "--judge", "openai:m", "--output-dir", str(tmp_path / "runs")]
    with JudgeServer() as server:
        base = [
            *gil_vs_ppo,
            "--base-url",
            server.url,
            "--api-key-env",
            "GILBENCH_TEST_KEY",
            "--judge-arg",
            "backoff=0.001",
            "--n-boot",
            "300",
        ]
        assert run_cli(base + ["--dry-run", "--price-per-1k", "0.5,1.5"]) == 0
        text = capsys.readouterr().out
        assert "72 judge calls to make" in text and "estimated cost $" in text and server.count == 0
        assert run_cli(base + ["--seed", "0,1", "--concurrency", "4", "--policy", "average"]) == 0
        text = capsys.readouterr().out
        assert server.count == 48 and "gil wins %" in text and "ood:space" in text and "ID - OOD gap" in text
        results = json.loads(
            (tmp_path / "runs" / "toy" / "compare" / "gil_vs_ppo" / "openai-m" / "results.json").read_text()
        )
        assert results["policy"] == "average" and results["seeds"] == [0, 1]
    assert not any(b"sk-cli-secret-123" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(GilbenchError, match="gilbench run --method dpo --task toy"):
        run_cli(["gil", "dpo", "--task", "toy", "--judge", "openai:m", "--output-dir", str(tmp_path / "runs")])
    with pytest.raises(GilbenchError, match="seed 9"):
        run_cli([*gil_vs_ppo, "--seed", "9"])
    with pytest.raises(GilbenchError, match="price-per-1k"):
        run_cli([*gil_vs_ppo, "--price-per-1k", "x"])


def test_rm_auto_uses_run_a_reward_model(tmp_path, tiny_cfg, capsys):
    """rm:auto finds the reward model the pipeline would have cached for run A, loads it and judges."""
    import yaml

    from gilbench.files import mark_done
    from gilbench.models.presets import load_sequence_classifier
    from gilbench.stages.cache import rm_stage_dir

    cfg = tiny_cfg()
    cfg.method = "gil"
    (a,), _ = make_runs(cfg.output_dir, n=4)
    (a / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    rm_dir = rm_stage_dir(cfg)
    model, tokenizer = load_sequence_classifier("tiny")
    model.save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    mark_done(rm_dir)
    rm_auto = ["gil", "ppo", "--task", "toy", "--judge", "rm:auto", "--output-dir", cfg.output_dir]
    assert run_cli([*rm_auto, "--tie-margin", "0"]) == 0
    out = capsys.readouterr().out
    assert "judge rm-" in out
    res = json.loads(next(Path(cfg.output_dir, "toy", "compare", "gil_vs_ppo").glob("rm-*/results.json")).read_text())
    assert res["judge"]["reward_model"] == str(rm_dir) and res["splits"][0]["n"] == 4
    with pytest.raises(GilbenchError, match="rm:auto"):
        (a / "config.yaml").write_text(
            yaml.safe_dump(dataclasses.asdict(dataclasses.replace(cfg, seed=5)), sort_keys=False)
        )
        run_cli(rm_auto)
