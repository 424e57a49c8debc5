"""Audit: run >= 100 bad inputs through the ``gilbench`` command line and classify what each one does.

    python benchmarks/audit_bad_inputs.py [--out audit.json] [--only SUBSTRING]

Every case is a bad input: a CLI flag, a config field, a task file, a data file, a judge option or damaged
run state. The right outcome is a *clean error*: exit code 2 and exactly one ``error:`` line on stderr,
no traceback. The others are *traceback* (an exception escaped, or another exit code) and *silent*
(exit code 0: nonsense accepted). Cases run in this process through ``gilbench.cli.main`` (fast: no
interpreter start per case), on the tiny model, a toy task made here, and a throwaway folder.
Takes a few minutes on 2 cores (two tiny runs are trained once and copied for the damaged-state cases).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from audit_harness import TINY, Audit, copy_store, finished_store, transcript, write_hh
from tiny_run import set_flags  # tests/tiny_run.py: audit_harness puts tests/ on the path


def all_cases(audit: Audit, only: str | None) -> None:
    f = audit.folder
    run = audit.run_args
    c = audit.case
    task_file = "name: t\ndescription: d\nloader: gilbench.data.chitchat:load_chitchat\n"

    # ---------------------------------------------------------------- CLI flags of `run`
    flags = [
        ("--limit -1", ["--limit", "-1"]),
        ("--limit abc", ["--limit", "abc"]),
        ("--seed 3-1", ["--seed", "3-1"]),
        ("--seed ,", ["--seed", ","]),
        ("--seed -1", ["--seed", "-1"]),
        ("--seed 1,,2", ["--seed", "1,,2"]),
        ("--seed 0,0", ["--seed", "0,0"]),
        ("--seed x", ["--seed", "x"]),
        ("--seed 1.5", ["--seed", "1.5"]),
        ("--seed ''", ["--seed", ""]),
        ("--method nope", ["--method", "nope"]),
        ("--task nope", ["--task", "nope"]),
        ("--device tpu", ["--device", "tpu"]),
        ("--device cuda:0 (no GPU)", ["--device", "cuda:0"]),
        ("--device cuda:x", ["--device", "cuda:x"]),
        ("--model ''", ["--model", ""]),
        ("--data-dir missing", ["--data-dir", "/nonexistent/gilbench"]),
        ("--include missing", ["--include", "/nonexistent/p.py"]),
        ("--set no equals", ["--set", "rl.steps"]),
        ("--set unknown field", ["--set", "rl.nope=1"]),
        ("--set unknown section", ["--set", "nope.steps=1"]),
        ("--set ambiguous bare lr", ["--set", "lr=1e-5"]),
        ("--set rl.steps=abc", ["--set", "rl.steps=abc"]),
        ("--set rl.steps=1.5", ["--set", "rl.steps=1.5"]),
        ("--set rl.adaptive_kl=maybe", ["--set", "rl.adaptive_kl=maybe"]),
        ("--set rl=5", ["--set", "rl=5"]),
    ]
    if __import__("torch").cuda.is_available():
        flags = [x for x in flags if "cuda:0" not in x[0]]
    for name, extra in flags:
        c("cli-flag", name, run(f(), *extra))
    file_ = f() / "afile"
    file_.write_text("")
    c("cli-flag", "--output-dir is a file", run(file_))
    c("cli-flag", "--output-dir unwritable (/proc)", run(Path("/proc/gilbench-audit")))
    bad_include = f() / "notes.txt"
    bad_include.write_text("x")
    c("cli-flag", "--include a .txt file", run(f(), "--include", str(bad_include)))
    raising = f() / "raising.py"
    raising.write_text("raise RuntimeError('plugin bug')\n")
    c("cli-flag", "--include a plugin that raises", run(f(), "--include", str(raising)))

    # ---------------------------------------------------------------- config fields
    fields = [
        "rl.steps=0",
        "rl.steps=-1",
        "rl.ppo_epochs=0",
        "rl.temperature=0",
        "rl.temperature=-1",
        "rl.rollout_batch_size=0",
        "rl.minibatch_size=0",
        "rl.micro_batch_size=0",
        "rl.minibatch_size=3",
        "rl.forward_batch_size=0",
        "sft.batch_size=0",
        "rm.batch_size=0",
        "generate.batch_size=0",
        "rl.lr=.nan",
        "rl.lr=-1",
        "rl.lr=.inf",
        "rl.lr=0",
        "rl.critic_lr=0",
        "sft.lr=-1",
        "rm.lr=.nan",
        "rl.max_new_tokens=0",
        "rl.max_prompt_length=0",
        "rl.kl_estimator=k9",
        "mixed_precision=fp8",
        "rl.top_p=0",
        "rl.top_p=1.5",
        "generate.top_p=0",
        "rl.gamma=1.5",
        "rl.lam=-0.1",
        "rl.kl_coef=-1",
        "rl.kl_target=0",
        "rl.kl_horizon=0",
        "rl.clip_range=0",
        "rl.clip_range_value=-1",
        "rl.vf_coef=-1",
        "rl.reward_clip=-1",
        "rl.max_grad_norm=-1",
        "rl.missing_eos_penalty=.nan",
        "rl.checkpoint_every=-1",
        "rl.log_rollouts_every=-1",
        "sft.epochs=0",
        "rm.epochs=0",
        "sft.max_length=0",
        "rm.max_length=1",
        "sft.max_examples=-1",
        "rm.max_pairs=-1",
        "generate.max_prompts=-1",
        "generate.max_new_tokens=0",
        "generate.temperature=-0.1",
        "model.critic=value",
        "model.lora_r=0",
        "model.lora_alpha=0",
        "split_seed=-1",
        "seed=-1",
    ]
    for kv in fields:
        c("config-field", kv, run(f(), "--set", kv))
    for method, kv in (
        ("gil", "n_groups=0"),
        ("gil", "n_groups=-1"),
        ("gil", "group_lr=0"),
        ("gil", "performance=nope"),
        ("gil", "groups=nope"),
        ("dpo", "beta=0"),
        ("dpo", "micro_batch_size=3"),
        ("ppo-ptx", "ptx_coef=-1"),
    ):
        c("config-field", f"{method} {kv}", run(f(), "--set", kv, method=method))
    c(
        "config-field",
        "diverging run (rl.lr=1e12, no grad clip)",
        run(f(), "--set", "rl.lr=1.0e+12", "--set", "rl.max_grad_norm=0"),
    )
    configs = {
        "missing": None,
        "a folder": "DIR",
        "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe",
        "a list": "[1, 2]",
        "bad YAML": "rl: [",
        "unknown field": "rl: {stepz: 3}",
        "rl not a mapping": "rl: 5",
        "bad value": "rl: {gamma: 2}",
        "lr=nan": "rl: {lr: .nan}",
    }
    for name, content in configs.items():
        path = f() / "c.yaml"
        if content == "DIR":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        c("config-file", f"--config {name}", run(f(), "--config", str(path)))

    # ---------------------------------------------------------------- task files (validate) and plugin tasks
    tasks = {
        "missing": None,
        "a folder": "DIR",
        "binary": b"\x00\xff\xfe\x89",
        "empty": "",
        "a list": "[1]",
        "unknown field": task_file + "colour: red\n",
        "no loader": "name: t\ndescription: d\n",
        "loader not module:function": task_file.replace("gilbench.data.chitchat:load_chitchat", "nocolon"),
        "loader module missing": task_file.replace("gilbench.data.chitchat", "no.such.module"),
        "loader not a function": task_file.replace("load_chitchat", "nothing_here"),
        "bad eval split": task_file + "eval_splits: [{name: x, distribution: mid}]\n",
        "defaults unknown key": task_file + "defaults: {rl.stepz: 4}\n",
        "defaults bad value": task_file + "defaults: {rl.steps: 0}\n",
        "defaults method_args": task_file + "defaults: {method_args.n_groups: 4}\n",
        "defaults bad type": task_file + "defaults: {rl.steps: many}\n",
        "options not loader params": task_file + "options: {colour: red}\n",
    }
    for name, content in tasks.items():
        path = f() / "task.yaml"
        if content == "DIR":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        c("task-file", f"validate: task file {name}", ["validate", str(path)])
    c("task-file", "validate with nothing to check", ["validate"])
    c("task-file", "validate --task nope", ["validate", "--task", "nope"])
    c(
        "task-file",
        "validate --limit -1",
        ["validate", "--task", "audit-toy", "--include", str(audit.plugin), "--limit", "-1"],
    )
    for task in ("audit-latin", "audit-bytes", "audit-empty", "audit-emptysplit", "audit-notdata"):
        c("task-file", f"plugin task {task}", ["validate", "--include", str(audit.plugin), "--task", task])
    c("task-file", "run a plugin task with non-UTF-8 prompts", run(f(), task="audit-latin"))

    # ---------------------------------------------------------------- data files (hh with --data-dir)
    data = {
        "empty harmless-base train": b"",
        "non-UTF-8 bytes": b"\xff\xfe\xfa bad\n",
        "garbage JSON line": b'{"chosen": "x"\n',
        "a JSON list line": b"[1, 2]\n",
        "missing field": json.dumps({"chosen": transcript([("Human", "q"), ("Assistant", "a")])}).encode() + b"\n",
        "not a transcript": json.dumps({"chosen": "hello", "rejected": "bye"}).encode() * 1 + b"\n",
    }
    for name, content in data.items():
        root = write_hh(f() / "data", content)
        c("data-file", f"hh: {name}", ["validate", "--task", "hh", "--data-dir", str(root)])
    root = f() / "data"
    root.mkdir()
    c("data-file", "hh: --data-dir without the files", ["validate", "--task", "hh", "--data-dir", str(root)])
    c(
        "cli-flag",
        "--model hub id, hub unreachable",
        run(f(), "--model", "someorg/somemodel"),
        env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://127.0.0.1:9"},
    )
    c("cli-flag", "--model missing local folder", run(f(), "--model", "/nonexistent/model"))
    c(
        "data-file",
        "hh: hub unreachable, no --data-dir",
        ["validate", "--task", "hh"],
        env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "https://127.0.0.1:9"},
    )

    # ---------------------------------------------------------------- judge options (compare / judge-curve) on finished runs
    store = finished_store(audit)
    key_env = {"AUDIT_JUDGE_KEY": "sk-audit-0000"}
    compare = [
        "compare",
        "ppo-kl",
        "sft",
        "--task",
        "audit-toy",
        "--include",
        str(audit.plugin),
        "--output-dir",
        str(store),
    ]
    openai = [*compare, "--judge", "openai:m", "--api-key-env", "AUDIT_JUDGE_KEY"]
    judge_cases = [
        ("--n-boot 0", ["--n-boot", "0"]),
        ("--n-boot -5", ["--n-boot", "-5"]),
        ("--concurrency 0", ["--concurrency", "0"]),
        ("--max-cost -1", ["--max-cost", "-1"]),
        ("--max-cost nan", ["--max-cost", "nan"]),
        ("--limit 0", ["--limit", "0"]),
        ("--limit -1", ["--limit", "-1"]),
        ("--max-tokens 0", ["--max-tokens", "0"]),
        ("--tie-margin -1", ["--tie-margin", "-1"]),
        ("--price-per-1k abc", ["--price-per-1k", "abc"]),
        ("--price-per-1k -1", ["--price-per-1k", "-1"]),
        ("--price-per-1k 1,2,3", ["--price-per-1k", "1,2,3"]),
        ("--judge-arg timeout=abc", ["--judge-arg", "timeout=abc"]),
        ("--judge-arg timeout=0", ["--judge-arg", "timeout=0"]),
        ("--judge-arg max_retries=-1", ["--judge-arg", "max_retries=-1"]),
        ("--judge-arg without =", ["--judge-arg", "timeout"]),
        ("--judge-arg unknown option", ["--judge-arg", "colour=red"]),
        ("--base-url htp:/nowhere", ["--base-url", "htp:/nowhere"]),
        ("--base-url nowhere", ["--base-url", "nowhere"]),
        ("--base-url ftp://x", ["--base-url", "ftp://x/v1"]),
        ("--base-url bad port", ["--base-url", "http://127.0.0.1:99999/v1"]),
        ("--template nope", ["--template", "nope"]),
        ("--policy nope", ["--policy", "nope"]),
        ("--seed 3-1", ["--seed", "3-1"]),
        ("--seed 7 (no such run)", ["--seed", "7"]),
        ("--max-cost with no price", ["--max-cost", "1"]),
    ]
    for name, extra in judge_cases:
        c("judge-option", f"compare {name}", [*openai, *extra], env=key_env)
    c(
        "judge-option",
        "compare --api-key-env unset",
        [*compare, "--judge", "openai:m", "--api-key-env", "AUDIT_UNSET_KEY_VAR"],
    )
    c("judge-option", "compare --judge nope:x", [*compare, "--judge", "nope:x"])
    c("judge-option", "compare --judge openai: (no model)", [*compare, "--judge", "openai:"], env=key_env)
    c(
        "judge-option",
        "compare a method with itself",
        ["compare", "sft", "sft", "--task", "audit-toy", "--judge", "gold", "--output-dir", str(store)],
    )
    c(
        "judge-option",
        "compare a missing method",
        ["compare", "dpo", "sft", "--task", "audit-toy", "--judge", "gold", "--output-dir", str(store)],
    )
    c("judge-option", "compare --judge gold on a task without one", [*compare, "--judge", "gold"])
    c("judge-option", "compare --judge gold:abc", [*compare, "--judge", "gold:abc"])
    c("judge-option", "compare --judge gold:-1", [*compare, "--judge", "gold:-1"])
    c("judge-option", "compare --judge rm:/nonexistent", [*compare, "--judge", "rm:/nonexistent/rm"])
    c("judge-option", "compare --judge hf:/nonexistent", [*compare, "--judge", "hf:/nonexistent/model"])
    ppo_run = str(store / "audit-toy" / "ppo-kl" / "seed0")
    curve = ["judge-curve", ppo_run, "--include", str(audit.plugin), "--output-dir", str(store)]
    c("judge-option", "judge-curve --window 0", [*curve, "--judge", "rm:auto", "--window", "0"])
    c("judge-option", "judge-curve --window -3", [*curve, "--judge", "rm:auto", "--window", "-3"])
    c("judge-option", "judge-curve --concurrency 0", [*curve, "--judge", "rm:auto", "--concurrency", "0"])
    c("judge-option", "judge-curve a missing run folder", ["judge-curve", "/nonexistent/run", "--judge", "rm:auto"])
    c(
        "judge-option",
        "judge-curve --base-url htp:/nowhere",
        [*curve, "--judge", "openai:m", "--api-key-env", "AUDIT_JUDGE_KEY", "--base-url", "htp:/nowhere"],
        env=key_env,
    )

    # ---------------------------------------------------------------- reports and sweeps
    c("report", "table on a missing store", ["table", "--spec", "main", "--output-dir", "/nonexistent/store"])
    c("report", "table --spec nope", ["table", "--spec", "nope", "--output-dir", str(store)])
    c("report", "table --format nope", ["table", "--spec", "main", "--format", "nope", "--output-dir", str(store)])
    c("report", "plot on a missing store", ["plot", "--task", "audit-toy", "--output-dir", "/nonexistent/store"])
    c("report", "plot --task nope", ["plot", "--task", "nope", "--output-dir", str(store)])
    sweep = [
        "sweep",
        "--include",
        str(audit.plugin),
        "--tasks",
        "audit-toy",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--dry-run",
    ]
    c("sweep", "sweep --seeds 3-1", [*sweep, "--methods", "sft", "--seeds", "3-1", "--output-dir", str(f())])
    c("sweep", "sweep --workers 0", [*sweep, "--methods", "sft", "--workers", "0", "--output-dir", str(f())])
    c("sweep", "sweep --methods nope", [*sweep, "--methods", "nope", "--output-dir", str(f())])
    c("sweep", "sweep --methods ''", [*sweep, "--methods", "", "--output-dir", str(f())])
    c(
        "sweep",
        "sweep --set rl.steps=0",
        [*sweep, "--methods", "ppo-kl", "--set", "rl.steps=0", "--output-dir", str(f())],
    )
    dst, _ = copy_store(audit, store)
    c(
        "sweep",
        "sweep over a finished run under another config",
        [
            *sweep,
            "--methods",
            "sft",
            "--set",
            "sft.lr=1e-4",
            *set_flags(TINY),
            "--output-dir",
            str(dst),
        ],
    )

    # ---------------------------------------------------------------- damaged or mismatched run state
    def damaged(name, damage, *extra, method="ppo-kl"):
        dst, out = copy_store(audit, store)
        damage(out)
        c("run-state", name, run(dst, *extra, "--set", "rl.keep_checkpoint=true", method=method))

    def torn_metrics(out):
        with (out / "metrics.jsonl").open("a") as fh:
            fh.write('{"step": 3, "obj')

    def unfinished(out):
        shutil.rmtree(out / "policy")
        (out / "summary.json").unlink()

    damaged("torn last line of metrics.jsonl", torn_metrics)
    damaged(
        "middle row of metrics.jsonl deleted",
        lambda o: (o / "metrics.jsonl").write_text((o / "metrics.jsonl").read_text().splitlines()[1] + "\n"),
    )
    damaged(
        "torn generations file",
        lambda o: (o / "generations" / "id_test.jsonl").write_text(
            (o / "generations" / "id_test.jsonl").read_text()[:-15]
        ),
    )
    damaged(
        "generations file missing a row",
        lambda o: (o / "generations" / "id_test.jsonl").write_text(
            (o / "generations" / "id_test.jsonl").read_text().splitlines()[0] + "\n"
        ),
    )
    damaged(
        "policy weights cut",
        lambda o: (o / "policy" / "model.safetensors").write_bytes(
            (o / "policy" / "model.safetensors").read_bytes()[:999]
        ),
    )
    damaged("policy weights garbage", lambda o: (o / "policy" / "model.safetensors").write_bytes(b"garbage" * 100))
    damaged("policy config.json garbage", lambda o: (o / "policy" / "config.json").write_text("{"))
    damaged("config.yaml garbage", lambda o: (o / "config.yaml").write_text("rl: {steps: [\n"))
    damaged("config.yaml binary", lambda o: (o / "config.yaml").write_bytes(b"\xff\xfe\x00"))
    damaged(
        "checkpoint cut",
        lambda o: (
            unfinished(o),
            (o / "checkpoints/step_2/trainer.pt").write_bytes(
                (o / "checkpoints/step_2/trainer.pt").read_bytes()[:5000]
            ),
        ),
    )
    damaged(
        "checkpoint garbage",
        lambda o: (unfinished(o), (o / "checkpoints/step_2/trainer.pt").write_bytes(b"not a pickle")),
    )
    damaged(
        "checkpoint of another shape",
        lambda o: (unfinished(o), __import__("torch").save({"step": 2}, o / "checkpoints/step_2/trainer.pt")),
    )
    damaged(
        "cached SFT weights cut",
        lambda o: (
            [p.write_bytes(p.read_bytes()[:999]) for p in (o.parents[2] / "cache" / "sft").glob("*/model.safetensors")]
            and unfinished(o)
        ),
    )
    damaged(
        "cached reward model stats garbage",
        lambda o: [p.write_text("{") for p in (o.parents[2] / "cache" / "rm").glob("*/stats.json")],
    )
    damaged("rerun with rl.steps changed", lambda o: None, "--set", "rl.steps=3")
    damaged("rerun with rl.lr changed", lambda o: None, "--set", "rl.lr=3.0e-5")
    damaged("rerun with --limit changed (new reward model)", lambda o: None, "--limit", "12")
    damaged("rerun with generate.max_prompts changed", lambda o: None, "--set", "generate.max_prompts=1")
    damaged(
        "rerun with checkpoint discarded and rl.steps changed",
        lambda o: shutil.rmtree(o / "checkpoints"),
        "--set",
        "rl.steps=5",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write every case and its outcome as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folder")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="gilbench-audit-"))
    audit = Audit(root)
    t0 = time.time()
    try:
        all_cases(audit, None)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    counts: dict = {}
    for r in audit.results:
        counts.setdefault(r["category"], {"clean": 0, "traceback": 0, "silent": 0})[r["outcome"]] += 1
    total = {k: sum(c[k] for c in counts.values()) for k in ("clean", "traceback", "silent")}
    print(f"\n{len(audit.results)} bad inputs in {time.time() - t0:.0f} s")
    for category, c in counts.items():
        print(f"  {category:<13} clean {c['clean']:>3}  traceback {c['traceback']:>3}  silent {c['silent']:>3}")
    print(f"  {'all':<13} clean {total['clean']:>3}  traceback {total['traceback']:>3}  silent {total['silent']:>3}")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"counts": counts, "total": total, "cases": audit.results}, indent=1) + "\n"
        )
    return 0 if total["traceback"] == total["silent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
