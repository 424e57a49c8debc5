"""Bad inputs are refused before anything is computed: one line naming the problem and the fix, exit code 2.

A representative table; benchmarks/audit_bad_inputs.py runs the full audit (>= 100 cases, subprocesses)."""

from __future__ import annotations

import pytest

from gilbench.cli import main, parse_seeds
from gilbench.config import load_yaml_config, parse_cli_value
from gilbench.errors import GilbenchError
from gilbench.resolve import resolve_run

RUN = ["run", "--method", "ppo-kl", "--task", "toy", "--model", "tiny", "--device", "cpu"]

BAD_RUNS = [
    (["--limit", "-1"], "limit"),
    (["--seed", "3-1"], "backwards"),
    (["--seed", ","], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1,,2"], "--seed"),
    (["--seed", "0,0"], "twice"),
    (["--seed", "x"], "--seed"),
    (["--set", "rl.steps=0"], "rl.steps"),
    (["--set", "rl.steps=-1"], "rl.steps"),
    (["--set", "rl.ppo_epochs=0"], "rl.ppo_epochs"),
    (["--set", "rl.temperature=0"], "rl.temperature"),
    (["--set", "rl.temperature=-1"], "rl.temperature"),
    (["--set", "rl.rollout_batch_size=0"], "rl.rollout_batch_size"),
    (["--set", "rl.minibatch_size=0"], "rl.minibatch_size"),
    (["--set", "rl.micro_batch_size=0"], "rl.micro_batch_size"),
    (["--set", "sft.batch_size=0"], "sft.batch_size"),
    (["--set", "rm.batch_size=0"], "rm.batch_size"),
    (["--set", "generate.batch_size=0"], "generate.batch_size"),
    (["--set", "rl.minibatch_size=3"], "multiple"),
    (["--set", "rl.lr=.nan"], "finite"),
    (["--set", "rl.lr=-1"], "rl.lr"),
    (["--set", "rl.lr=.inf"], "finite"),
    (["--set", "rl.max_new_tokens=0"], "rl.max_new_tokens"),
    (["--set", "rl.kl_estimator=k9"], "k1, k2, k3"),
    (["--set", "mixed_precision=fp8"], "auto, no, fp32, bf16, fp16"),
    (["--set", "variant=../gil"], "a folder name"),
    (["--set", "model.attention=flash"], "auto, eager, sdpa"),
    (["--set", "rl.top_p=0"], "rl.top_p"),
    (["--set", "rl.gamma=1.5"], "rl.gamma"),
    (["--device", "tpu"], "device"),
    (["--set", "model.critic=value"], "model.critic"),
    (["--set", "generate.temperature=-0.1"], "generate.temperature"),
    (["--set", "rl.nope=1"], "unknown config field"),
    (["--set", "rl.steps"], "KEY=VALUE"),
    (["--set", "rl.steps=abc"], "expected int"),
    (["--method", "gil", "--set", "n_groups=-1"], "n_groups"),
    (["--method", "gil", "--set", "group_input=reward"], "response, prompt"),
]


@pytest.mark.parametrize("extra, named", BAD_RUNS, ids=[" ".join(e) for e, _ in BAD_RUNS])
def test_bad_run_inputs_are_one_line_and_exit_2(tmp_path, capsys, extra, named):
    rc = main(RUN + ["--output-dir", str(tmp_path / "runs"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("gilbench: error:") and named in err
    assert not (tmp_path / "runs" / "toy").exists()  # refused before any stage ran


def test_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(RUN + ["--output-dir", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["rl: {lr: 1e-5}", "rl: {lr: 1E-5, critic_lr: 2e+3}"])
def test_yaml_exponent_numbers_are_floats(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = resolve_run("ppo-kl", "toy", ["rl.max_grad_norm=5e-1"], config_file=path).cfg
    assert cfg.rl.lr == 1e-5 and cfg.rl.max_grad_norm == 0.5 and parse_cli_value("1e-5") == 1e-5


@pytest.mark.parametrize("text, seeds", [("0", [0]), ("0,2", [0, 2]), ("1-3", [1, 2, 3]), (" 4 , 5-6", [4, 5, 6])])
def test_good_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("content", ["[1, 2]", "rl: [", b"\xff\xfe\x00garbage"])
def test_bad_config_files(tmp_path, content):
    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GilbenchError, match="--config"):
        load_yaml_config(path)


def validate(tmp_path, capsys, *args) -> tuple[int, str]:
    rc = main(["validate", *args])
    return rc, capsys.readouterr().err.strip()


TASK = "name: t\ndescription: d\nloader: conftest:toy_task\n"


@pytest.mark.parametrize(
    "write, named",
    [
        (None, "no such file"),
        ("dir", "is a folder"),
        (b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8 text"),
        (TASK + "defaults: {rl.stepz: 4}\n", "rl.stepz"),
        (TASK + "defaults: {rl.steps: 0}\n", "rl.steps"),
        (TASK + "defaults: {rl.lr: 1e-5}\n", None),
    ],
)
def test_validate_task_files(tmp_path, capsys, write, named):
    path = tmp_path / "task.yaml"
    if write == "dir":
        path.mkdir()
    elif write is not None:
        path.write_bytes(write if isinstance(write, bytes) else write.encode())
    rc, err = validate(tmp_path, capsys, str(path))
    assert (rc, named is None or named in err) == ((0, True) if named is None else (2, True)), err
    assert len(err.splitlines()) <= 1


def test_plugin_task_with_undecodable_text(tmp_path, capsys):
    plugin = tmp_path / "bad_task.py"
    plugin.write_text(
        "from gilbench import register_task\nfrom conftest import toy_task\n\n"
        "@register_task('latin')\ndef latin(seed=0, limit=None, data_dir=None):\n"
        "    import dataclasses\n    data = toy_task(seed, limit)\n"
        "    data.rl_prompts[0] = dataclasses.replace(data.rl_prompts[0], text=b'caf\\xe9'.decode('utf-8', 'surrogateescape'))\n"
        "    return data\n"
    )
    rc, err = validate(tmp_path, capsys, "--include", str(plugin), "--task", "latin")
    assert rc == 2 and "not valid UTF-8" in err and "rl_prompts[0]" in err


def test_empty_group_file_is_refused(tmp_path):
    from gilbench.data import hh
    from gilbench.data.hub import load_rows

    path = tmp_path / "hh-rlhf" / "harmless-base" / "train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("")
    with pytest.raises(GilbenchError, match="holds no rows"):
        load_rows(hh.hh_source("harmless-base", "train"), str(tmp_path))


def test_hub_unreachable_fails_in_seconds(monkeypatch):
    import socket
    import time

    from gilbench.data import hh, hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.time()
    with pytest.raises(GilbenchError, match="unreachable"):
        hub.load_rows(hh.hh_source("harmless-base", "train"))
    assert time.time() - t0 < 5 and socket


def test_hub_model_with_the_hub_unreachable_fails_in_seconds(tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    t0 = time.time()
    assert main(RUN + ["--output-dir", str(tmp_path), "--model", "someorg/somemodel"]) == 2
    assert "hub cannot be reached" in capsys.readouterr().err and time.time() - t0 < 5  # before: a minute of retries


@pytest.mark.parametrize(
    "args, named",
    [
        (["--n-boot", "0"], "--n-boot"),
        (["--concurrency", "0"], "--concurrency"),
        (["--max-cost", "-1"], "--max-cost"),
        (["--limit", "0"], "--limit"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--tie-margin", "nan"], "--tie-margin"),
        (["--price-per-1k", "abc"], "--price-per-1k"),
        (["--judge-arg", "timeout"], "KEY=VALUE"),
    ],
)
def test_compare_options_are_refused_before_any_judge_call(tmp_path, capsys, args, named):
    rc = main(["compare", "a", "b", "--task", "toy", "--judge", "gold", "--output-dir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and named in err and len(err.splitlines()) == 1


def test_judge_curve_window_zero(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["judge-curve", str(tmp_path / "run"), "--judge", "gold", "--window", "0"]) == 2
    assert "--window" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["table", "--spec", "main"], ["plot", "--task", "toy"]])
def test_report_on_a_missing_store(tmp_path, capsys, command):
    assert main([*command, "--output-dir", str(tmp_path / "nope")]) == 2
    assert "no such run store" in capsys.readouterr().err


def test_default_store_is_not_the_committed_one():
    from gilbench.config import RunConfig
    from gilbench.store import DEFAULT_OUTPUT_DIR

    assert RunConfig().output_dir == DEFAULT_OUTPUT_DIR == "runs"
