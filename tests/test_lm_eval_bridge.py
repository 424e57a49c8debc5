"""The lm-eval bridge, offline: a tiny policy saved here, scored on a multiple-choice lm-eval task whose YAML and
JSONL data this test writes (dataset_path: json over a local file)."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from gilbench.cli.lm_eval import add_lm_eval_parser
from gilbench.errors import GilbenchError, MissingDependency
from gilbench.files import mark_done
from gilbench.lm_eval_bridge import format_results, parse_model_args, run_lm_eval
from gilbench.models.presets import load_causal_lm

TASK_YAML = """\
task: gilbench_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval")
    model, tokenizer = load_causal_lm("tiny")
    policy = root / "run" / "policy"
    model.save_pretrained(policy, safe_serialization=True)
    tokenizer.save_pretrained(policy)
    mark_done(policy)
    tasks = root / "tasks"
    tasks.mkdir()
    data = tasks / "questions.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 7)], "answer": 0}) + "\n"
            for i in range(6)
        )
    )
    (tasks / "tiny_mc.yaml").write_text(TASK_YAML.format(data=data))
    return root


def test_scores_a_run_policy_and_writes_lm_eval_json(setup, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", setup / "hf_cache")  # keep lm-eval's dataset cache in tmp
    run_dir = setup / "run"
    result = run_lm_eval(
        run_dir, ["gilbench_tiny_mc"], limit=4, include_path=setup / "tasks", batch_size=4, device="cpu"
    )
    metrics = result["results"]["gilbench_tiny_mc"]
    assert 0.0 <= metrics["acc,none"] <= 1.0 and metrics["acc,none"] * 4 == round(metrics["acc,none"] * 4)
    # lm-eval's own keys, untouched; ours under "gilbench"
    assert result["n-samples"]["gilbench_tiny_mc"] == {"original": 6, "effective": 4}
    assert {"results", "configs", "versions", "n-shot", "higher_is_better", "config"} <= set(result)
    ours = result["gilbench"]
    assert ours["model"] == str(run_dir / "policy") and ours["tasks"] == ["gilbench_tiny_mc"] and ours["limit"] == 4
    assert json.loads((run_dir / "lm_eval.json").read_text()) == result
    assert not list(run_dir.glob(".lm_eval.json.*"))  # the atomic write left no temp file
    # lm-eval's layout: OUTPUT_PATH/<model name>/results_<date>.json, readable by its own tools
    written = list((run_dir / "lm_eval").glob("*/results_*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["results"] == result["results"]
    table = format_results(result)
    assert "gilbench_tiny_mc" in table and "acc" in table


def test_cli_takes_lm_evals_flag_names(setup, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import shutil

    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", setup / "hf_cache")
    run_dir = tmp_path / "odd,name=run"  # a folder lm-eval's "k=v,k=v" string could not carry: model args go as a dict
    shutil.copytree(setup / "run" / "policy", run_dir / "policy")
    parser = argparse.ArgumentParser(prog="gilbench")
    add_lm_eval_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "lm_out"
    args = parser.parse_args(
        [
            "eval",
            "--tasks",
            "gilbench_tiny_mc",
            "--run",
            str(run_dir),
            "--limit",
            "2",
            "--include_path",
            str(setup / "tasks"),
            "--device",
            "cpu",
            "--batch_size",
            "2",
            "--num_fewshot",
            "0",
            "--seed",
            "3",
            "--output_path",
            str(out),
            "--log_samples",
            "--model_args",
            '{"max_length": 256}',
        ]
    )
    assert args.func(args) == 0
    result = json.loads((run_dir / "lm_eval.json").read_text())
    assert result["n-samples"]["gilbench_tiny_mc"]["effective"] == 2 and result["n-shot"]["gilbench_tiny_mc"] == 0
    assert result["config"]["random_seed"] == 3 and result["gilbench"]["seed"] == 3
    samples = list(out.glob("*/samples_gilbench_tiny_mc_*.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 2
    assert parse_model_args("dtype=bfloat16,max_length=256") == {"dtype": "bfloat16", "max_length": 256}
    with pytest.raises(GilbenchError, match=r"--model_args expects KEY=VALUE"):
        parse_model_args("nonsense")


def test_clear_errors(setup, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    with pytest.raises(GilbenchError, match="no such run folder"):
        run_lm_eval(tmp_path / "missing", ["gilbench_tiny_mc"])
    (tmp_path / "half" / "policy").mkdir(parents=True)
    with pytest.raises(GilbenchError, match="incomplete"):
        run_lm_eval(tmp_path / "half", ["gilbench_tiny_mc"])
    with pytest.raises(GilbenchError, match="at least one task"):
        run_lm_eval(setup / "run", [" "])
    with pytest.raises(GilbenchError, match=r"no such folder of lm-eval task YAMLs"):
        run_lm_eval(setup / "run", ["gilbench_tiny_mc"], include_path=tmp_path / "nope")
    # an unknown task is caught before any model is loaded; the include path alone is searched first
    with pytest.raises(
        GilbenchError, match=r"unknown lm-eval task\(s\) \['gilbench_tiny_m'\].*did you mean gilbench_tiny_mc"
    ):
        run_lm_eval(setup / "run", ["gilbench_tiny_m"], include_path=setup / "tasks")


def test_missing_lm_eval_says_how_to_install(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail as if it were not installed
    with pytest.raises(
        MissingDependency, match=r"the lm-eval bridge needs the optional package 'lm-eval'.*gilbench\[lm-eval\]"
    ):
        run_lm_eval(setup / "run", ["gilbench_tiny_mc"])
