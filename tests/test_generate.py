"""`gilbench generate` on any prompt file, `compare` on those generations, the exports, and the length-controlled rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gilbench.cli import main
from gilbench.errors import GilbenchError
from gilbench.eval.generate import generate, read_prompt_file
from gilbench.eval.length_control import length_controlled
from gilbench.pipeline import run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two finished tiny runs on the toy task (ppo-kl with a large step size, so its answers differ from sft's) and prompt files."""
    import conftest

    root = tmp_path_factory.mktemp("generate")
    run(conftest.tiny_config(root, "sft"))
    run(conftest.tiny_config(root, "ppo-kl", steps=2, lr=3e-2))
    prompts = root / "prompts"
    prompts.mkdir()
    (prompts / "mine.jsonl").write_text(
        "".join(
            json.dumps({"prompt": f"Say something kind about thing {i}.", "group": "odd" if i % 2 else "even"}) + "\n"
            for i in range(20)
        )
    )
    (prompts / "alpaca.json").write_text(
        json.dumps(
            [
                {"instruction": f"What is {i} plus {i}?", "dataset": "arith", "output": "", "generator": "x"}
                for i in range(5)
            ]
        )
    )
    (prompts / "table.csv").write_text(
        'id,instruction,category\nq1,"Name a colour, please.",easy\nq2,Name a fruit.,easy\n'
    )
    return root


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_files_in_three_layouts(store):
    jsonl = read_prompt_file(store / "prompts" / "mine.jsonl")
    assert len(jsonl) == 20 and jsonl[3] == {
        "id": "3",
        "text": "Say something kind about thing 3.",
        "group": "odd",
        "source": {"group": "odd"},
    }
    alpaca = read_prompt_file(store / "prompts" / "alpaca.json")
    assert (
        alpaca[1]["text"] == "What is 1 plus 1?"
        and alpaca[1]["group"] == "arith"
        and alpaca[1]["source"]["dataset"] == "arith"
    )
    csv = read_prompt_file(store / "prompts" / "table.csv")
    assert [(p["id"], p["text"], p["group"]) for p in csv] == [
        ("q1", "Name a colour, please.", "easy"),
        ("q2", "Name a fruit.", "easy"),
    ]
    bad = store / "prompts" / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(GilbenchError, match=r"bad.jsonl line 1: no 'prompt' or 'instruction' text field"):
        read_prompt_file(bad)
    bad.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n')
    with pytest.raises(GilbenchError, match=r"bad.jsonl line 2: id '1' appears twice"):
        read_prompt_file(bad)
    with pytest.raises(GilbenchError, match=r"unknown extension '.txt'"):
        read_prompt_file(bad.with_suffix(".txt").write_text("x") and bad.with_suffix(".txt"))


def test_generate_compare_and_export(store, capsys):
    runs = store / "runs" / "toy"
    for method in ("ppo-kl", "sft"):
        for name in ("mine.jsonl", "alpaca.json"):
            assert (
                main(
                    [
                        "generate",
                        "--run",
                        str(runs / method / "seed0"),
                        "--prompts",
                        str(store / "prompts" / name),
                        "--device",
                        "cpu",
                    ]
                )
                == 0
            )
    out = rows(runs / "ppo-kl" / "seed0" / "generations" / "mine.jsonl")
    assert len(out) == 20 and [r["id"] for r in out] == [str(i) for i in range(20)]
    assert all(
        r["split"] == "mine" and r["method"] == "ppo-kl" and r["seed"] == 0 and isinstance(r["rm_score"], float)
        for r in out
    )
    assert len(rows(runs / "sft" / "seed0" / "generations" / "alpaca.jsonl")) == 5
    # compare judges the new prompts (and only them, with --split) against the other run, with the run's own reward model
    assert (
        main(
            [
                "compare",
                "ppo-kl",
                "sft",
                "--task",
                "toy",
                "--output-dir",
                str(store / "runs"),
                "--judge",
                "rm:auto",
                "--split",
                "mine",
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    folders = list((runs / "compare" / "ppo-kl_vs_sft").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("@mine")
    results = json.loads((folders[0] / "results.json").read_text())
    assert [s["split"] for s in results["splits"]] == ["mine"] and results["n_items"] == 20
    assert results["n_identical"] < 20  # the two policies answer differently
    lc = results["splits"][0]["length_controlled"]
    assert 0 <= lc["lc_win"] <= 1 and lc["raw_preference"] == pytest.approx(
        results["splits"][0]["win"] + results["splits"][0]["tie"] / 2
    )
    assert "pref % -> LC %" in capsys.readouterr().out
    # exports: AlpacaEval's model_outputs.json and Arena-Hard answers
    assert main(["export", "--run", str(runs / "ppo-kl" / "seed0"), "--name", "alpaca", "--format", "alpaca-eval"]) == 0
    outputs = json.load(open(runs / "ppo-kl" / "seed0" / "exports" / "alpaca" / "model_outputs.json"))
    assert len(outputs) == 5 and all(set(o) == {"instruction", "output", "generator", "dataset"} for o in outputs)
    assert (
        outputs[2]["instruction"] == "What is 2 plus 2?"
        and outputs[2]["generator"] == "ppo-kl-seed0"
        and outputs[2]["dataset"] == "arith"
    )
    assert (
        main(
            [
                "export",
                "--run",
                str(runs / "ppo-kl" / "seed0"),
                "--name",
                "mine",
                "--format",
                "arena-hard",
                "--generator",
                "tiny-ppo",
            ]
        )
        == 0
    )
    answers = rows(runs / "ppo-kl" / "seed0" / "exports" / "mine" / "tiny-ppo.jsonl")
    assert len(answers) == 20 and answers[0]["question_id"] == "0" and answers[0]["model_id"] == "tiny-ppo"
    assert answers[0]["choices"][0]["turns"][0]["content"] == out[0]["response"]
    with pytest.raises(
        GilbenchError, match=r"nope.jsonl does not exist; this run has generations alpaca, id_test, mine, ood_space"
    ):
        from gilbench.eval.export import export

        export(runs / "ppo-kl" / "seed0", "nope", "alpaca-eval")


def test_generate_resumes_caches_and_refuses_other_prompts(store):
    run_dir = store / "runs" / "toy" / "sft" / "seed0"
    prompts = store / "prompts" / "mine.jsonl"
    whole = generate(run_dir, prompts, name="resume", device="cpu", log=lambda _m: None)
    reference = whole.read_text()
    # as if killed after the first batch of 16: the rest is sampled with the same per-batch seeds
    partial = whole.with_name("resume.jsonl.partial")
    partial.write_text("".join(reference.splitlines(keepends=True)[:16]))
    whole.unlink()
    messages = []
    assert generate(run_dir, prompts, name="resume", device="cpu", log=messages.append).read_text() == reference
    assert messages[0] == "[gilbench] resuming resume.jsonl: 16 of 20 prompts already sampled" and not partial.exists()
    mtime = whole.stat().st_mtime_ns
    assert (
        generate(run_dir, prompts, name="resume", device="cpu", log=messages.append) == whole
        and whole.stat().st_mtime_ns == mtime
    )
    with pytest.raises(GilbenchError, match=r"resume.jsonl was made from other prompts or settings"):
        generate(run_dir, store / "prompts" / "alpaca.json", name="resume", device="cpu")
    with pytest.raises(GilbenchError, match=r"the task's eval split already writes generations/id_test.jsonl"):
        generate(run_dir, prompts, name="id_test", device="cpu")


def test_a_baseline_model_sampled_like_a_run(store):
    baseline = store / "runs" / "toy" / "base-tiny" / "seed0"
    path = generate(
        baseline,
        store / "prompts" / "table.csv",
        model="tiny",
        like=store / "runs" / "toy" / "sft" / "seed0",
        device="cpu",
        log=lambda _m: None,
    )
    out = rows(path)
    assert (
        [r["id"] for r in out] == ["q1", "q2"]
        and {r["method"] for r in out} == {"base-tiny"}
        and all("rm_score" in r for r in out)
    )
    with pytest.raises(
        GilbenchError, match=r"not a gilbench run folder \(no config.yaml\); to sample a baseline model give --model"
    ):
        generate(store / "elsewhere", store / "prompts" / "table.csv")


def test_length_control_by_hand():
    """With two length differences the logistic fit is saturated, so the LC rate is sigmoid of the mean of the two logits."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(400):
        a_longer = i % 4 != 0  # A is the longer answer in 3 pairs of 4
        a_wins = a_longer == (rng.random() < 0.85)  # the judge prefers the longer answer 85 % of the time
        items.append(
            {
                "win": float(a_wins),
                "tie": 0.0,
                "lose": float(not a_wins),
                "cluster": str(i),
                "length_a": 40 if a_longer else 20,
                "length_b": 20 if a_longer else 40,
            }
        )
    p_long = np.mean([it["win"] for it in items if it["length_a"] > it["length_b"]])
    p_short = np.mean([it["win"] for it in items if it["length_a"] < it["length_b"]])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    expected = 1 / (1 + math.exp(-(logit(p_long) + logit(p_short)) / 2))
    out = length_controlled(items, "x", n_boot=300, seed=0)
    assert out["raw_preference"] == pytest.approx(np.mean([it["win"] for it in items])) and out["raw_preference"] > 0.6
    assert (
        out["lc_win"] == pytest.approx(expected, abs=2e-3)
        and abs(out["lc_win"] - 0.5) < 0.06
        and out["length_slope"] > 1
    )
    assert out["lc_win_ci"][0] < out["lc_win"] < out["lc_win_ci"][1]
    even = length_controlled([dict(it, length_a=30, length_b=30) for it in items], "x", n_boot=0)
    assert even["lc_win"] == pytest.approx(even["raw_preference"], abs=1e-4) and even["length_slope"] == 0.0
