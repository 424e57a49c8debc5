"""Audit: run >= 100 bad inputs through the ``gilbench`` command line and classify what each one does.

    python benchmarks/audit_bad_inputs.py [--out audit.json] [--keep]

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

from audit_cases_runs import run_state_cases
from audit_harness import Audit, transcript, write_hh


def all_cases(audit: Audit) -> None:
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
        "variant=../gil",
        "model.attention=flash",
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

    run_state_cases(audit)


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
        all_cases(audit)
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
