"""Configs, --set overrides, the registries and plugins."""

from __future__ import annotations

import textwrap

import pytest

from gilbench import registry
from gilbench.cli import main, parse_seeds
from gilbench.config import RunConfig, nest, parse_cli_value, resolve_set_key, stable_hash, update_dataclass
from gilbench.errors import GilbenchError
from gilbench.resolve import resolve_run


def resolve(method="ppo-kl", task="chitchat", overrides=(), **kw):
    return resolve_run(method, task, overrides, **kw).cfg


def test_set_overrides_are_typed():
    cfg = resolve(overrides=["rl.steps=4", "kl_coef=0.1", "rl.adaptive_kl=true", "model.policy=tiny"])
    assert cfg.rl.steps == 4 and cfg.rl.kl_coef == 0.1 and cfg.rl.adaptive_kl is True
    with pytest.raises(GilbenchError, match=r"rl.steps: expected int, got 'abc'"):
        resolve(overrides=["rl.steps=abc"])
    with pytest.raises(GilbenchError, match=r"adaptive_kl: expected bool"):
        resolve(overrides=["rl.adaptive_kl=3"])
    with pytest.raises(GilbenchError, match=r"unknown config field 'rl.step'. Did you mean 'steps'"):
        resolve(overrides=["rl.step=3"])
    with pytest.raises(GilbenchError, match="KEY=VALUE"):
        resolve(overrides=["rl.steps"])


def test_method_defaults_apply_before_user_overrides():
    assert resolve("ppo").rl.kl_coef == 0.0
    assert resolve("ppo", overrides=["rl.kl_coef=0.2"]).rl.kl_coef == 0.2


def test_method_fields_and_yaml_config(tmp_path):
    cfg = resolve("ppo-ptx", overrides=[("ptx_coef", 0.25)])
    assert cfg.method_args == {"ptx_coef": 0.25}
    path = tmp_path / "run.yaml"
    path.write_text("method: ppo-ptx\nrl:\n  steps: 3\nmethod_args:\n  ptx_coef: 0.75\n")
    cfg = resolve(None, config_file=path)
    assert cfg.rl.steps == 3 and cfg.method_args["ptx_coef"] == 0.75
    path.write_text("rl:\n  steps: three\n")
    with pytest.raises(GilbenchError, match="rl.steps: expected int"):
        resolve(config_file=path)


def test_seeds_and_hash():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5]
    with pytest.raises(GilbenchError, match="--seed"):
        parse_seeds("a")
    main_seeds = [r.cfg.seed for r in (resolve_run("ppo-kl", "chitchat").with_seed(s) for s in parse_seeds("0,1"))]
    assert main_seeds == [0, 1]
    assert stable_hash(RunConfig().rl) == stable_hash(RunConfig().rl)
    c = RunConfig()
    update_dataclass(c, nest("rl.lr", 1.0))
    assert stable_hash(c.rl) != stable_hash(RunConfig().rl)


def test_bare_set_key_resolution():
    cfg = RunConfig()
    assert resolve_set_key("steps", cfg, None) == "rl.steps"
    with pytest.raises(GilbenchError, match="ambiguous"):
        resolve_set_key("lr", cfg, None)  # sft.lr, rm.lr and rl.lr
    assert parse_cli_value("[1, 2]") == [1, 2] and parse_cli_value("null") is None


def test_unknown_names_suggest_close_matches(capsys):
    with pytest.raises(GilbenchError, match=r"unknown method 'ppo-kll'. Did you mean 'ppo-kl'"):
        registry.methods.get("ppo-kll")
    with pytest.raises(GilbenchError, match=r"unknown task 'chitchatt'. Did you mean 'chitchat'"):
        resolve(task="chitchatt")
    assert main(["run", "--method", "ppo_kl", "--task", "chitchat"]) == 2
    assert "Did you mean 'ppo-kl'" in capsys.readouterr().err


def test_builtin_methods_come_through_entry_points():
    names = registry.methods.names()
    assert {"ppo", "ppo-kl", "ppo-ptx"} <= set(names)


PLUGIN = textwrap.dedent(
    '''
    """A third-party method: PPO w/ KL with a doubled score."""
    from gilbench import register_method
    from gilbench.rl.trainer import RLMethod, StepData

    @register_method("my-ppo")
    class MyPPO(RLMethod):
        """Plugin PPO that doubles the reward-model score."""

        def prepare(self, batch):
            batch.scores = 2 * batch.scores
            return StepData()
    '''
)


def test_plugin_is_listed_with_include(tmp_path, capsys):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_ppo.py").write_text(PLUGIN)
    assert main(["ls", "methods", "--include", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "my-ppo" in out and "doubles the reward-model score" in out


def test_include_errors(tmp_path, capsys):
    assert main(["ls", "methods", "--include", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert main(["ls", "methods", "--include", str(bad)]) == 2
    assert "importing the plugin failed: RuntimeError: boom" in capsys.readouterr().err


def test_plugin_method_runs_with_include(tmp_path, capsys):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_ppo.py").write_text(PLUGIN)
    small = [
        "rl.steps=1",
        "rl.rollout_batch_size=4",
        "rl.minibatch_size=4",
        "rl.micro_batch_size=4",
        "rl.max_new_tokens=4",
        "rl.ppo_epochs=1",
        "sft.max_examples=4",
        "rm.max_pairs=4",
        "generate.max_prompts=1",
        "generate.max_new_tokens=4",
    ]
    argv = [
        "run",
        "--include",
        str(folder),
        "--method",
        "my-ppo",
        "--task",
        "toy",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    for item in small:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "== my-ppo on toy (seed 0, tiny)" in out
    assert (tmp_path / "runs" / "toy" / "my-ppo" / "seed0" / "metrics.jsonl").exists()


def test_missing_optional_package_names_the_install(monkeypatch):
    import sys

    from gilbench.errors import MissingDependency, require

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(
        MissingDependency,
        match=r"TensorBoard logging needs the optional package 'tensorboard'.*pip install \"gilbench\[tensorboard\]\"",
    ):
        require("tensorboard", "TensorBoard logging", extra="tensorboard")
