"""Tables, stability analysis and plots from synthetic stored results (tests/report_fixtures.py); no training."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from gilbench.errors import GilbenchError
from gilbench.files import atomic_write_text
from gilbench.report import render_table
from gilbench.report.render import DAGGER, DASH, pct_ci
from gilbench.report.spec import available_specs, load_spec, parse_spec
from gilbench.report.stability import Thresholds, aggregate, analyse_method, analyse_run, detect_judge, frontier
from gilbench.report.store import load_compare, read_json

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import TASK, curve, make_store, write_run  # noqa: E402

SPECS = ["ablation", "groups", "main", "ood", "stability"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("report") / "runs")


def md_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their label cells joined with '/'."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Task"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows["/".join(cells[:3])] = cells
    return rows


# ------------------------------------------------------------------------------------------------ tables
def test_shipped_specs_parse():
    assert set(SPECS) <= set(available_specs())
    assert [load_spec(s).kind for s in SPECS] == ["ablation", "groups", "winrate", "ood", "stability"]


@pytest.mark.parametrize("fmt", ["md", "latex", "csv"])
def test_tables_regenerate_byte_identically(store, tmp_path, fmt):
    copy = tmp_path / "elsewhere"
    shutil.copytree(store, copy)  # another folder, files written at another time: the same bytes
    for spec in SPECS:
        first = render_table(spec, fmt, str(store))
        assert first == render_table(spec, fmt, str(store)) == render_table(spec, fmt, str(copy)), spec
        assert str(store) not in first and first.endswith("\n")


def test_auto_tasks_are_those_where_the_row_methods_ran(tmp_path):
    root = make_store(tmp_path / "runs", seeds=(0,), steps=12)
    write_run(root, "toy", "ppo-kl", 0, curve(12))  # a task with a baseline run only: no GIL row to show
    main = render_table("main", "md", str(root))
    assert "| toy |" not in main and TASK in main
    assert "| toy |" in render_table("stability", "md", str(root))  # its PPO w/ KL run is a stability row


def test_latex_uses_booktabs_and_escapes(store):
    for spec in SPECS:
        tex = render_table(spec, "latex", str(store))
        assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 and r"\midrule" in tex and r"\hline" not in tex
        assert "±" not in tex and DAGGER not in tex and DASH not in tex and "_" not in tex.replace(r"\_", "")
    main = render_table("main", "latex", str(store))
    assert r"\multicolumn{4}{c}{ID}" in main and r"\cmidrule(lr){3-6}" in main and r"$^{\dagger}$" in main


def test_main_table_matches_stored_results_and_marks_missing(store):
    text = render_table("main", "md", str(store))
    rows = md_rows(text)
    r = read_json(store / TASK / "compare" / "gil_vs_sft" / "gold-v1" / "results.json")
    id_ = r["distributions"]["id"]
    sft = rows[f"{TASK}/SFT/{pct_ci(id_['win'], id_['win_ci'])}" + (DAGGER if id_["sign_test"]["p"] < 0.05 else "")]
    assert sft[5] == str(id_["n"]) and sft[4] == pct_ci(id_["lose"], id_["lose_ci"])
    dpo = next(v for k, v in rows.items() if k.startswith(f"{TASK}/DPO/"))
    assert dpo[2:] == [DASH] * 8  # never compared: a dash, not a number
    assert "not stored, not estimated: gil vs dpo (chitchat-ood)" in text and "gilbench compare" in text


def test_significance_marks_follow_the_sign_test(store):
    rows = md_rows(render_table("main", "md", str(store)))
    for b, label in (("sft", "SFT"), ("ppo", "PPO"), ("ppo-kl", "PPO w/ KL")):
        r = load_compare(store, TASK, "gil", b, "gold-v1")
        cells = next(v for k, v in rows.items() if k.startswith(f"{TASK}/{label}/"))
        for dist, offset in (("id", 2), ("ood", 6)):
            e = r["distributions"][dist]
            marked = any(DAGGER in c for c in cells[offset : offset + 3])
            assert marked == (e["sign_test"]["p"] < 0.05), (b, dist)


def test_flipping_swaps_the_score_difference():
    from gilbench.report.store import _flip_entry

    st = {"wins": 5, "losses": 2, "p": 0.4, "n_prompts": 8}
    entry = {"win": 0.6, "lose": 0.3, "score_difference": {"a": 1.0, "b": 0.8, "diff": 0.2, "diff_ci": [0.1, 0.35]}}
    entry["score_difference"]["prompt_sign_test"] = st
    d = _flip_entry(entry)["score_difference"]
    assert (d["a"], d["b"], d["diff"], d["diff_ci"]) == (0.8, 1.0, -0.2, [-0.35, -0.1])
    assert (d["prompt_sign_test"]["wins"], d["prompt_sign_test"]["losses"]) == (2, 5)
    seeds = {"k": 2, "per_seed": {"0": 0.1, "1": 0.3}, "mean": 0.2, "ci": [-1.1, 1.5]}
    entry["score_difference"]["across_seeds"] = seeds
    flipped = _flip_entry(entry)["score_difference"]["across_seeds"]
    assert flipped == {"k": 2, "per_seed": {"0": -0.1, "1": -0.3}, "mean": -0.2, "ci": [-1.5, 1.1]}


def test_opposite_comparison_is_read_flipped(store):
    stored = read_json(store / TASK / "compare" / "ppo-ptx_vs_gil" / "gold-v1" / "results.json")
    seen = load_compare(store, TASK, "gil", "ppo-ptx", "gold-v1")
    assert seen["flipped"] and seen["a"] == "gil"
    assert seen["distributions"]["ood"]["win"] == stored["distributions"]["ood"]["lose"]
    assert seen["distributions"]["ood"]["lose_ci"] == stored["distributions"]["ood"]["win_ci"]
    text = render_table("ood", "md", str(store))
    assert "Read from the opposite comparison" in text and "gil vs ppo-ptx" in text


def test_ablation_and_groups_tables(store):
    abl = md_rows(render_table("ablation", "md", str(store)))
    oracle = next(v for k, v in abl.items() if "oracle" in k)
    assert oracle[2] == "0" and set(oracle[3:]) == {DASH}
    gil = next(v for k, v in abl.items() if k.startswith(f"{TASK}/GIL/"))
    assert gil[2] == "3" and "±" in gil[3] and gil[5] != DASH
    groups = md_rows(render_table("groups", "md", str(store)))
    g = next(v for k, v in groups.items() if k.startswith(f"{TASK}/GIL/"))
    high, low = float(g[3].split(" ±")[0]), float(g[4].split(" ±")[0])
    assert high > low and g[5] == g[4] and g[7].startswith("0.600")  # worst group = the lowest; NMI of the last steps
    assert g[9].startswith("0.2")  # a negative group weight on a quarter of all updates (the fixture's every 4th step)


def test_stability_table_reports_the_collapsed_seed(store):
    rows = md_rows(render_table("stability", "md", str(store)))
    ppo = next(v for k, v in rows.items() if k.startswith(f"{TASK}/PPO/"))
    assert ppo[2] == "3" and "1/3 @ 25" in ppo  # fixture: seed 0 of ppo blows up its length at 25
    assert ppo[-1] == "3/3 @ 30"  # and every seed's judge curve falls while its score climbs
    gil = next(v for k, v in rows.items() if k.startswith(f"{TASK}/GIL/"))
    assert gil[-4:] == ["0/3"] * 4
    ptx = next(v for k, v in rows.items() if k.startswith(f"{TASK}/PPO-ptx/"))
    assert ptx[-1] == "n/a"  # no judge curve stored


def test_user_spec_file_and_spec_errors(store, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "kind: winrate\ntitle: Mine\ntasks: [chitchat-ood]\nmethods: [gil-no-inv]\nbaselines: [ppo-kl]\nsplits: [id:test]\n"
        "columns: [win, p]\njudge: gold-v1\n"
    )
    csv = render_table(str(path), "csv", str(store))
    assert csv.splitlines()[0] == "Task,vs,id:test Win,id:test p" and csv.count("\n") == 2
    with pytest.raises(GilbenchError, match="unknown field"):
        parse_spec({"kind": "winrate", "colums": ["win"]}, "x")
    with pytest.raises(GilbenchError, match="do not exist for kind"):
        parse_spec({"kind": "ood", "columns": ["tie"]}, "x")
    with pytest.raises(GilbenchError, match="no table spec 'nope'"):
        load_spec("nope")


def _ood_items_by_seed(root, a: str, b: str) -> list[list[dict]]:
    rows = [
        json.loads(line) for line in (root / TASK / "compare" / f"{a}_vs_{b}" / "gold-v1" / "judgments.jsonl").open()
    ]
    return [[r for r in rows if r["seed"] == s and r["distribution"] == "ood"] for s in (0, 1, 2)]


def test_the_seed_column_is_the_t_interval_over_seeds(tmp_path):
    from report_fixtures import write_compare

    root = make_store(tmp_path / "runs", seeds=(0, 1, 2), steps=12)
    r = write_compare(root, TASK, "gil", "rloo", {"id": 0.5, "ood": 0.5}, (0, 1, 2), scores=True)
    seeds = r["distributions"]["ood"]["score_difference"]["across_seeds"]
    assert seeds["k"] == 3 and seeds["ci"][0] < seeds["mean"] < seeds["ci"][1]
    path = tmp_path / "spec.yaml"
    spec = "columns: [seed_win, diff, seed_diff]\nsplits: [ood]\n"
    path.write_text(f"kind: winrate\ntasks: [{TASK}]\nmethods: [gil]\nbaselines: [rloo]\n{spec}")
    text = render_table(str(path), "md", str(root))
    row = next(v for k, v in md_rows(text).items() if k.startswith(f"{TASK}/RLOO/"))
    lo, hi = seeds["ci"]
    assert row[-1] == f"{seeds['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] (3)" and "t-interval over seeds" in text
    win = r["distributions"]["ood"]["win_seeds"]
    per_seed = [sum(it["win"] for it in items) / len(items) for items in _ood_items_by_seed(root, "gil", "rloo")]
    assert list(win["per_seed"].values()) == pytest.approx(per_seed) and win["k"] == 3
    wlo, whi = max(0.0, win["ci"][0]), min(1.0, win["ci"][1])
    assert row[2] == f"{100 * win['mean']:.1f} [{100 * wlo:.1f}, {100 * whi:.1f}] (3)"
    flipped = load_compare(root, TASK, "rloo", "gil", "gold-v1")["distributions"]["ood"]
    assert flipped["lose_seeds"] == win and flipped["win_seeds"] == r["distributions"]["ood"]["lose_seeds"]
    path.write_text(
        f"kind: ablation\ntasks: [{TASK}]\nmethods: [gil]\nbaselines: [rloo]\nsplits: [ood]\ncolumns: [diff, seed_diff]\n"
    )
    ablation = render_table(str(path), "md", str(root))
    assert f"| {seeds['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] (3) |" in ablation and "Δ seeds vs RLOO" in ablation
    seen_from_rloo = load_compare(root, TASK, "rloo", "gil", "gold-v1")["distributions"]["ood"]
    assert seen_from_rloo["score_difference"]["across_seeds"]["ci"] == [-hi, -lo]
    from gilbench.report.plots_compare import plot_differences

    png = plot_differences(root, TASK, ["gil"], tmp_path / "d.png", "gold-v1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn from the one comparison with scores
    assert plot_differences(root, TASK, ["ppo-ptx"], tmp_path / "none.png", "gold-v1") is None  # a verdict-only one


@pytest.mark.parametrize(
    "write, named",
    [("dir", "is a folder"), (b"\x89PNG\x00\xff", "is not UTF-8 text"), (b"kind: [winrate\n", "is not valid YAML")],
)
def test_a_broken_spec_file_is_one_line_naming_it(tmp_path, write, named):
    path = tmp_path / "mine.yaml"
    path.mkdir() if write == "dir" else path.write_bytes(write)
    with pytest.raises(GilbenchError, match=f"table spec {path}.*{named}") as error:
        load_spec(str(path))
    assert "\n" not in str(error.value)


def test_table_and_plot_commands(store, tmp_path):
    from gilbench.cli.report import add_plot_parser, add_table_parser

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_table_parser(sub)
    add_plot_parser(sub)
    args = parser.parse_args(
        ["table", "--spec", "main", "--format", "latex", "--output-dir", str(store), "--out", str(tmp_path / "t.tex")]
    )
    assert args.func(args) == 0 and (tmp_path / "t.tex").read_text() == render_table("main", "latex", str(store))
    args = parser.parse_args(["plot", "--task", TASK, "--output-dir", str(store), "--out-dir", str(tmp_path / "plots")])
    assert args.func(args) == 0
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == [
        f"{TASK}_{k}.png" for k in ("curves", "frontier", "gold_frontier", "groups", "judge_curve", "winrates")
    ]
    for p in (tmp_path / "plots").glob("*.png"):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    args = parser.parse_args(["plot", "--task", "nope", "--output-dir", str(store)])
    with pytest.raises(GilbenchError, match="no runs or comparisons of task 'nope'"):
        args.func(args)
    subset = ["plot", "--task", TASK, "--output-dir", str(store), "--out-dir", str(tmp_path / "grid")]
    args = parser.parse_args([*subset, "--methods", "gil,ppo-kl", "--name", "grid"])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "grid").glob("*.png"))[0] == "grid_curves.png"
    args = parser.parse_args([*subset, "--name", "../grid"])
    with pytest.raises(GilbenchError, match="--name '../grid': give a file-name stem"):
        args.func(args)
    args = parser.parse_args([*subset, "--methods", "gil,ppo-lk"])
    with pytest.raises(GilbenchError, match="unknown method of task .* 'ppo-lk'. Did you mean 'ppo-kl'"):
        args.func(args)


def test_plot_panels_hold_one_family_and_at_most_four_methods():
    from gilbench.report.plots import families

    methods = ["ppo", "ppo-kl", "gil", "gil@b0.1", "gil@b0.1-clamp", "gil@b0.3", "gil-no-inv", "ppo-kl@kl0.01", "rloo"]
    assert families(methods) == {
        "ppo family": ["ppo", "ppo-kl", "ppo-kl@kl0.01"],
        "gil family (1/2)": ["gil", "gil@b0.1", "gil@b0.1-clamp", "gil@b0.3"],
        "gil family (2/2)": ["gil-no-inv"],
        "rloo family": ["rloo"],
    }


# ------------------------------------------------------------------------------------------------ stability
@pytest.mark.parametrize("kind", ["length", "repetition", "kl"])
def test_collapse_detector_fires_at_the_collapse_step(kind):
    flags = analyse_run(curve(40, seed=3, collapse=kind, at=25))["flags"]
    assert flags[kind]["fired"] and flags[kind]["step"] == 25
    others = [name for name in ("length", "repetition", "kl") if name != kind]
    assert not any(flags[o]["fired"] for o in others)


def test_superlinear_kl_fires_soon_after_the_onset_and_threshold_later():
    th = Thresholds()
    flag = analyse_run(curve(40, seed=1, collapse="kl_superlinear", at=20), th=th)["flags"]["kl"]
    assert flag["fired"] and flag["reason"] == "super-linear growth" and 20 < flag["step"] <= 20 + 2 * th.kl_window


@pytest.mark.parametrize("seed", range(5))
def test_detectors_stay_silent_on_healthy_runs(seed):
    flags = analyse_run(
        curve(60, seed=seed), [{"step": s, "win": 0.4 + 0.01 * s / 10} for s in (10, 20, 30, 40, 50, 60)]
    )["flags"]
    assert [flags[k]["fired"] for k in ("length", "repetition", "kl", "judge")] == [False] * 4


def test_judge_flag_needs_checkpoint_results_and_fires_when_win_falls_as_score_rises():
    rows = curve(40, seed=2)
    assert detect_judge(rows, None, Thresholds()) == {"fired": None, "step": None, "status": "n/a"}
    falling = [
        {"step": 10, "win": 0.50},
        {"step": 20, "win": 0.52},
        {"step": 30, "win": 0.44},
        {"step": 40, "win": 0.40},
    ]
    assert detect_judge(rows, falling, Thresholds())["step"] == 30  # the first of two falling points
    assert not detect_judge(rows, falling[:3], Thresholds())["fired"]  # one falling point is not a trend
    flat_score = [dict(r, **{"objective/score": 0.5}) for r in rows]
    assert not detect_judge(flat_score, falling, Thresholds(score_rise=0.01))["fired"]


def test_judge_flag_ignores_a_fall_that_the_number_of_judged_pairs_explains():
    rows = curve(40, seed=2)
    wins = [0.72, 0.56, 0.55, 0.52]  # 16-20 points down: within noise of 32 pairs a point, far outside it of 3200
    few, many = ([{"step": 10 * (i + 1), "win": w, "n": n} for i, w in enumerate(wins)] for n in (32, 3200))
    assert not detect_judge(rows, few, Thresholds())["fired"]
    assert detect_judge(rows, many, Thresholds())["step"] == 20


def test_judge_curve_file_reaches_the_aggregate(tmp_path):
    for seed in (0, 1):
        run = write_run(tmp_path, "toy", "ppo-kl", seed, curve(40, seed=seed))
        if seed == 0:
            atomic_write_text(
                run / "judge_curve.jsonl",
                '{"step": 20, "win": 0.6}\n{"step": 30, "win": 0.45}\n{"step": 40, "win": 0.4}\n',
            )
    agg = analyse_method(tmp_path, "toy", "ppo-kl")["aggregate"]
    assert agg["n"] == 2 and agg["flags"]["judge"] == {"fired": 1, "n": 1, "steps": [30], "mean_step": 30}
    assert agg["flags"]["length"]["fired"] == 0 and agg["flags"]["length"]["n"] == 2


def test_runs_still_in_flight_stay_out_of_the_tables(tmp_path):
    for seed in (0, 1):
        run = write_run(tmp_path, "toy", "ppo-kl", seed, curve(40, seed=seed))
    (run / "summary.json").unlink()  # seed 1 has metrics so far but has not finished
    assert sorted(analyse_method(tmp_path, "toy", "ppo-kl")["runs"]) == [0]


def test_run_numbers_and_aggregate():
    rows = [
        {"step": t, "objective/score": s, "objective/kl": k, "val/explained_var": ev}
        for t, s, k, ev in [(1, 0.0, 0.1, None), (2, 1.0, 0.5, 0.2), (3, 0.5, 0.3, 0.4), (4, 0.2, 2.0, 0.6)]
    ]
    r = analyse_run(rows, th=Thresholds(smooth=1))
    assert (r["final_score"], r["best_score"], r["best_step"], r["max_kl"]) == (0.2, 1.0, 2, 2.0)
    assert r["ev_final"] == 0.6 and r["ev_mean"] == pytest.approx(0.4)
    assert r["frontier"] == frontier(rows) == [[0.1, 0.0], [0.3, 0.5], [0.5, 1.0]]
    agg = aggregate([r, dict(r, final_score=0.4)])
    assert agg["final_score"]["mean"] == pytest.approx(0.3) and agg["final_score"]["sd"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert analyse_run([{"step": 1, "loss/dpo": 0.7}]) is None  # no rollouts: nothing to analyse


def test_a_variant_is_a_row_of_its_own_under_its_methods_label(store, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(store, root)
    write_run(root, TASK, "gil@b0.1", 0, curve(30))
    path = tmp_path / "beta.yaml"
    path.write_text(f"kind: stability\ntasks: [{TASK}]\nmethods: [gil, gil@b0.1]\ncolumns: [final, max_kl]\n")
    rows = md_rows(render_table(str(path), "md", str(root)))
    assert any(k.startswith(f"{TASK}/GIL@b0.1/") for k in rows) and any(k.startswith(f"{TASK}/GIL/") for k in rows)


@pytest.mark.parametrize("kind", ["stability", "winrate"])
def test_a_row_whose_seeds_differ_in_config_says_so(store, tmp_path, kind):
    """Seed 2 of ppo-kl made in the other precision than seeds 0-1 (auto resolves per machine: fp32 or bf16): the
    row's mean averages two settings, so the table names the field and its values; a row of one config gets no such
    note."""
    root = tmp_path / "runs"
    shutil.copytree(store, root)
    config = root / TASK / "ppo-kl" / "seed2" / "config.yaml"
    record = yaml.safe_load(config.read_text())
    made = record["mixed_precision"]  # what auto gave on this machine
    other = record["mixed_precision"] = "bf16" if made == "no" else "no"
    config.write_text(yaml.safe_dump(record, sort_keys=False))
    path = tmp_path / "spec.yaml"
    rows = "methods: [ppo-kl]" if kind == "stability" else "methods: [gil]\nbaselines: [ppo-kl]"
    path.write_text(f"kind: {kind}\ntasks: [{TASK}]\n{rows}\n")
    text = render_table(str(path), "md", str(root))
    assert "Seeds of one row made with different configs" in text
    assert f"PPO w/ KL ({TASK}): mixed_precision {made!r} x2, {other!r} x1" in text
    assert "different configs" not in render_table(str(path), "md", str(store))
