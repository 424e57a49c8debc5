"""The bad-input audit's cases on finished runs: judge options (compare, judge-curve), reports and sweeps, and
damaged or mismatched run state (called by benchmarks/audit_bad_inputs.py, which holds the other categories)."""

from __future__ import annotations

import shutil

from audit_harness import TINY, Audit, copy_store, finished_store
from tiny_run import set_flags  # tests/tiny_run.py: audit_harness puts tests/ on the path


def run_state_cases(audit: Audit) -> None:
    f = audit.folder
    run = audit.run_args
    c = audit.case

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
    broken = {"a folder": None, "non-UTF-8 bytes": b"\x89PNG\x00\xff", "bad YAML": b"kind: [winrate\n"}
    broken_plans = broken | {"empty": b"", "a list": b"- ppo\n"}
    for name, content in broken.items():
        spec = f() / "mine.yaml"
        spec.mkdir() if content is None else spec.write_bytes(content)
        c("report", f"table --spec file: {name}", ["table", "--spec", str(spec), "--output-dir", str(store)])
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
    for name, content in broken_plans.items():
        plan = f() / "plan.yaml"
        plan.mkdir() if content is None else plan.write_bytes(content)
        c("sweep", f"sweep --plan file: {name}", ["sweep", "--plan", str(plan), "--dry-run"])
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
