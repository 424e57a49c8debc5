"""`gilbench sweep --plan FILE` (gilbench/cli/sweep_plan.py): a study's grids in one YAML file, merged, checked and run
in order, each run once; for real on the toy task (registered in conftest.py) with the tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from gilbench.cli.sweep import is_complete, sweep_jobs
from gilbench.cli.sweep_plan import load_plan
from gilbench.errors import GilbenchError

sys.path.insert(0, str(Path(__file__).parent))
from test_sweep import sweep_args  # noqa: E402
from tiny_run import TINY_SETTINGS  # noqa: E402


def write_plan(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_grids_start_from_common_and_add_their_own_settings(tmp_path):
    plan = write_plan(
        tmp_path / "study.yaml",
        {
            "output_dir": "somewhere",
            "common": {"tasks": "toy", "set": {"rl.steps": 3, "mixed_precision": "fp32"}, "judge_curve": "gold"},
            "grids": [
                {"methods": "ppo,ppo-kl", "seeds": "0-2"},
                {"methods": ["gil"], "seeds": [0, 3], "set": {"rl.steps": 5, "method_args.clamp_group_weights": True}},
                {"methods": "sft", "tasks": "chitchat", "seeds": 4, "judge_curve": None},
            ],
        },
    )
    grids, output_dir = load_plan(plan)
    assert output_dir == "somewhere" and len(grids) == 3
    first, second, third = grids
    assert (first.methods, first.tasks, first.seeds) == (["ppo", "ppo-kl"], ["toy"], [0, 1, 2])
    assert first.overrides == ["rl.steps=3", "mixed_precision=fp32"] and first.judge_curve == "gold"
    # a grid's own `set` comes after the common one, so its rl.steps (applied last) wins
    assert second.seeds == [0, 3]
    assert second.overrides == [
        "rl.steps=3",
        "mixed_precision=fp32",
        "rl.steps=5",
        "method_args.clamp_group_weights=true",
    ]
    assert (third.tasks, third.seeds, third.judge_curve) == (["chitchat"], [4], None)
    assert "grid 2 of" in second.where


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"grid": []}, "non-empty list under grids"),
        ({"grids": [{"methods": "ppo", "tasks": "toy", "seed": 1}]}, "unknown key 'seed'; did you mean seeds?"),
        ({"commons": {}, "grids": [{"methods": "ppo", "tasks": "toy"}]}, "unknown key 'commons'; did you mean common?"),
        ({"grids": [{"methods": "ppo", "tasks": "toy", "seeds": "2-0"}]}, "runs backwards"),
        ({"grids": [{"methods": "ppo", "tasks": "toy", "seeds": True}]}, "seeds must be like"),
        ({"grids": [{"methods": "", "tasks": "toy"}]}, "methods must name at least one"),
        ({"grids": [{"methods": "ppo", "tasks": "toy", "set": "rl.steps=3"}]}, "must be a mapping of config fields"),
        ({"grids": [{"methods": "ppo", "tasks": "toy", "limit": "8"}]}, "limit must be a int"),
        ({"grids": ["ppo on toy"]}, "grid 1 of"),
    ],
)
def test_a_malformed_plan_is_refused_with_what_to_fix(tmp_path, doc, message):
    with pytest.raises(GilbenchError, match=message.replace("?", r"\?")):
        load_plan(write_plan(tmp_path / "study.yaml", doc))


def test_unreadable_or_invalid_files_name_the_problem(tmp_path):
    with pytest.raises(GilbenchError, match="missing.yaml: no such file"):
        load_plan(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grids: [\n")
    with pytest.raises(GilbenchError, match=r"is not valid YAML \(.* at line 2, column 1\)"):
        load_plan(bad)


def test_a_run_two_grids_name_is_kept_once_unless_they_disagree(tmp_path):
    out = str(tmp_path / "runs")
    plan = write_plan(
        tmp_path / "study.yaml",
        {
            "common": {"tasks": "toy", "set": {"rl.steps": 3}},
            "grids": [{"methods": "ppo-kl", "seeds": "0-1"}, {"methods": "ppo-kl,gil", "seeds": "1-2"}],
        },
    )
    jobs = sweep_jobs(load_plan(plan)[0], out)
    assert [j.name for j in jobs] == [
        "toy/ppo-kl/seed0",
        "toy/ppo-kl/seed1",
        "toy/ppo-kl/seed2",
        "toy/gil/seed1",
        "toy/gil/seed2",
    ]
    clash = write_plan(
        tmp_path / "clash.yaml",
        {
            "common": {"tasks": "toy"},
            "grids": [{"methods": "ppo-kl", "set": {"rl.steps": 3}}, {"methods": "ppo-kl", "set": {"rl.steps": 4}}],
        },
    )
    with pytest.raises(
        GilbenchError, match=r"grid 1 of .* and grid 2 of .* both make toy/ppo-kl/seed0 .*rl.steps: 3 -> 4"
    ):
        sweep_jobs(load_plan(clash)[0], out)
    unknown = write_plan(tmp_path / "unknown.yaml", {"grids": [{"methods": "ppo-k", "tasks": "toy"}]})
    with pytest.raises(GilbenchError, match="ppo-kl"):  # the registry's did-you-mean
        sweep_jobs(load_plan(unknown)[0], out)


def test_grid_flags_beside_a_plan_are_refused(tmp_path):
    plan = write_plan(tmp_path / "study.yaml", {"grids": [{"methods": "ppo", "tasks": "toy"}]})
    args = sweep_args("--plan", str(plan), "--seeds", "0-1", "--set", "rl.steps=2")
    with pytest.raises(GilbenchError, match="drop --seeds, --set from the command line"):
        args.func(args)
    args = sweep_args("--seeds", "0")
    with pytest.raises(GilbenchError, match="sweep needs --methods and --tasks"):
        args.func(args)


def test_dry_run_of_a_plan_uses_its_store_unless_the_command_line_names_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = write_plan(
        tmp_path / "study.yaml",
        {"output_dir": "study-runs", "common": {"tasks": "toy"}, "grids": [{"methods": "ppo-kl"}, {"methods": "gil"}]},
    )
    args = sweep_args("--plan", str(plan), "--dry-run")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2 runs: 0 complete (skipped), 2 to run" in out and out.count(str(tmp_path / "study-runs")) == 2
    assert out.index("--method ppo-kl") < out.index("--method gil")  # the file's order
    args = sweep_args("--plan", str(plan), "--dry-run", "--output-dir", "elsewhere")
    assert args.func(args) == 0
    assert str(tmp_path / "elsewhere") in capsys.readouterr().out


def test_a_plan_runs_its_grids_in_order_then_skips_them(tmp_path, capsys):
    """For real: a plain and a variant grid of ppo-kl on the toy task with the tiny model, one step each."""
    out = tmp_path / "runs"
    settings = dict(item.split("=", 1) for item in [*TINY_SETTINGS, "rl.steps=1"])
    plan = write_plan(
        tmp_path / "study.yaml",
        {
            "output_dir": str(out),
            "common": {"tasks": "toy", "model": "tiny", "device": "cpu", "set": settings},
            "grids": [{"methods": "ppo-kl"}, {"methods": "ppo-kl", "set": {"rl.kl_coef": 0.5, "variant": "kl0.5"}}],
        },
    )
    args = sweep_args("--plan", str(plan))
    assert args.func(args) == 0
    runs = [out / "toy" / name / "seed0" for name in ("ppo-kl", "ppo-kl@kl0.5")]
    assert all(is_complete(r) for r in runs)
    assert "kl_coef: 0.5" in (runs[1] / "config.yaml").read_text()
    capsys.readouterr()
    assert args.func(args) == 0
    assert "2 runs: 2 complete (skipped), 0 to run" in capsys.readouterr().out
