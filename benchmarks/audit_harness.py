"""The fixtures of the bad-input audit (audit_bad_inputs.py): a toy task plugin, data files good and bad, the tiny
run settings, and ``Audit``, which runs one case through ``gilbench.cli.main`` and classifies its outcome."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_run import TINY_SETTINGS, tiny_flags  # noqa: E402

PLUGIN = """
import dataclasses
from gilbench import register_task
from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData

THINGS = ["cats", "dogs", "fish", "bread", "soup", "tea"]


@register_task("audit-toy")
def audit_toy(seed=0, limit=None, data_dir=None):
    prompts = [Prompt(f"p{i}", f"Tell me about {t}.", "a" if i % 2 else "b") for i, t in enumerate(THINGS * 3)]
    sft = [SFTExample(p.text, "They are lovely!") for p in prompts]
    pairs = [PreferencePair(p.text, "They are lovely!", "no.", p.group) for p in prompts]
    held = [Prompt("h0", "What about cheese?", "a"), Prompt("h1", "What about mice?", "b")]
    return TaskData("audit-toy", prompts, sft, pairs[:-4], pairs[-4:], [EvalSplit("id:test", "id", held)])


@register_task("audit-latin")
def audit_latin(seed=0, limit=None, data_dir=None):
    data = audit_toy(seed, limit, data_dir)
    data.rl_prompts[0] = dataclasses.replace(data.rl_prompts[0], text=b"caf\\xe9".decode("utf-8", "surrogateescape"))
    return data


@register_task("audit-bytes")
def audit_bytes(seed=0, limit=None, data_dir=None):
    data = audit_toy(seed, limit, data_dir)
    data.sft[0] = SFTExample(b"caf\\xe9", "x")
    return data


@register_task("audit-empty")
def audit_empty(seed=0, limit=None, data_dir=None):
    return TaskData("audit-empty", [], [], [], [], [])


@register_task("audit-emptysplit")
def audit_empty_split(seed=0, limit=None, data_dir=None):
    data = audit_toy(seed, limit, data_dir)
    data.eval_splits = [EvalSplit("ood:none", "ood", [])]
    return data


@register_task("audit-notdata")
def audit_not_data(seed=0, limit=None, data_dir=None):
    return {"prompts": []}
"""

TINY = [*TINY_SETTINGS, "rl.steps=2", "rl.checkpoint_every=1"]


def transcript(turns):
    return "".join(f"\n\n{role}: {text}" for role, text in turns)


def hh_rows(n: int) -> list[dict]:
    return [
        {
            "chosen": transcript([("Human", f"question {i}?"), ("Assistant", f"good {i}")]),
            "rejected": transcript([("Human", f"question {i}?"), ("Assistant", f"bad {i}")]),
        }
        for i in range(n)
    ]


def write_hh(root: Path, harmless_train: bytes | None) -> Path:
    """An HH-RLHF copy in its public layout; ``harmless_train`` replaces that one file's bytes."""
    for subset in ("harmless-base", "helpful-base"):
        for split in ("train", "test"):
            path = root / "hh-rlhf" / subset / f"{split}.jsonl.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = "".join(json.dumps(r) + "\n" for r in hh_rows(12)).encode()
            if subset == "harmless-base" and split == "train" and harmless_train is not None:
                data = harmless_train
            with gzip.open(path, "wb") as f:
                f.write(data)
    return root


class Audit:
    def __init__(self, root: Path):
        self.root = root
        self.plugin = root / "audit_tasks.py"
        self.plugin.write_text(PLUGIN)
        self.results: list[dict] = []
        self.n = 0

    def folder(self) -> Path:
        self.n += 1
        path = self.root / "cases" / str(self.n)
        path.mkdir(parents=True)
        return path

    def run_args(self, out: Path, *extra: str, method: str = "ppo-kl", task: str = "audit-toy") -> list[str]:
        return [
            "run",
            "--include",
            str(self.plugin),
            "--method",
            method,
            "--task",
            task,
            *tiny_flags(out, TINY),
            *extra,
        ]

    def case(self, category: str, name: str, argv: list[str], env: dict | None = None) -> dict:
        from gilbench.cli import main

        err, out = io.StringIO(), io.StringIO()
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        t0 = time.time()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse
                    rc = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001  (the audit records it)
            rc, tb = None, traceback.format_exc()
        else:
            tb = ""
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        stderr = err.getvalue()
        error_lines = [line for line in stderr.splitlines() if "error:" in line]
        if tb or "Traceback" in stderr or rc not in (0, 2):
            outcome = "traceback"
        elif rc == 0:
            outcome = "silent"
        else:
            outcome = "clean" if len(error_lines) == 1 else "traceback"
        message = tb.strip().splitlines()[-1] if tb else (error_lines[-1] if error_lines else stderr.strip()[-200:])
        record = {
            "category": category,
            "case": name,
            "outcome": outcome,
            "rc": rc,
            "seconds": round(time.time() - t0, 2),
            "message": message,
        }
        self.results.append(record)
        print(f"{outcome:<9} {category:<13} {name:<48} {message[:110]}", flush=True)
        return record


def finished_store(audit: Audit) -> Path:
    """One finished ppo-kl and one sft run on audit-toy (checkpoint kept), the source of the damaged-state copies."""
    store = audit.root / "finished"
    from gilbench.cli import main

    for method in ("ppo-kl", "sft"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = main(audit.run_args(store, "--set", "rl.keep_checkpoint=true", method=method))
        if rc != 0:
            raise SystemExit(f"audit setup: the {method} run failed (exit {rc})")
    return store


def copy_store(audit: Audit, store: Path) -> tuple[Path, Path]:
    dst = audit.folder() / "store"
    shutil.copytree(store, dst)
    return dst, dst / "audit-toy" / "ppo-kl" / "seed0"
