"""The openai judge against a real OpenAI-compatible server: ``transformers serve`` on 127.0.0.1 (extra
``transformers[serving]``), serving a tiny model saved to a temp folder. Its generation config biases decoding so
that it always answers ``[[A]]`` -- a judge with total position bias -- which makes every number checkable.

Checked: HTTP transport end to end, usage accounting (the server's token counts price the calls), the call cache
(a rerun makes zero calls), and invalid verdicts (answers cut by --max-tokens) counted as invalid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from judge_server import make_runs  # noqa: E402

pytest.importorskip("fastapi", reason="needs transformers[serving] (pip install 'gilbench[test]')")
pytest.importorskip("uvicorn", reason="needs transformers[serving] (pip install 'gilbench[test]')")

N = 8  # prompts per split; every 4th pair is identical (no call)
PRICE_IN, PRICE_OUT = 1.0, 2.0  # dollars per 1000 tokens


def always_a_model(folder: Path) -> Path:
    """A 1-layer GPT-2 built from a config in code, with the tiny preset's byte-level tokenizer (and chat template), room
    for a judge prompt of a few thousand bytes, and a greedy answer that is always ``[[A]]`` then EOS."""
    import torch
    from transformers import GPT2LMHeadModel

    from gilbench.models.presets import tiny_gpt2_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = 8192
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(tokenizer, n_positions=8192, n_embd=32, n_layer=1, n_head=2))
    left, a, right, eos = ord("["), ord("A"), ord("]"), tokenizer.eos_token_id  # byte-level: token id == byte
    model.generation_config.sequence_bias = [
        [[left], 10.0],
        [[left, left], 20.0],
        [[left, left, a], 100.0],
        [[left, left, a, right], 200.0],
        [[a, right, right], 300.0],
        [[right, right, eos], 400.0],
    ]
    model.generation_config.do_sample = False
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = always_a_model(tmp_path_factory.mktemp("judge_model") / "always-a")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "transformers.cli.transformers",
                "serve",
                str(folder),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--device",
                "cpu",
                "--log-level",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        while True:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://127.0.0.1:{port}/health", timeout=2
                ):
                    break
            except OSError:
                if proc.poll() is not None or time.time() - t0 > 120:
                    pytest.fail(f"transformers serve did not come up: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield {"url": f"http://127.0.0.1:{port}/v1", "model": str(folder), "log": log, "startup_s": time.time() - t0}
    finally:
        if proc.poll() is None:  # still running (one that never came up has exited: the failure above says why)
            os.kill(proc.pid, signal.SIGTERM)  # by its PID, and only the one we started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def compare(root: Path, server: dict, *extra: str) -> dict:
    from gilbench.cli import main

    out = root / "out"
    assert (
        main(
            [
                "compare",
                "gil",
                "ppo",
                "--task",
                "toy",
                "--output-dir",
                str(root / "runs"),
                "--judge",
                f"openai:{server['model']}",
                "--base-url",
                server["url"],
                "--api-key-env",
                "GILBENCH_TEST_LOCAL_KEY",
                "--price-per-1k",
                f"{PRICE_IN},{PRICE_OUT}",
                "--concurrency",
                "2",
                "--n-boot",
                "200",
                "--judge-arg",
                "timeout=120",
                *extra,
            ]
        )
        == 0
    )
    results = sorted(
        (root / "runs" / "toy" / "compare" / "gil_vs_ppo").glob("*/results.json"), key=lambda p: p.stat().st_mtime
    )
    assert results and out is not None
    return json.loads(results[-1].read_text())


def posts(server: dict) -> int:
    return server["log"].read_text().count("POST /v1/chat/completions")


def test_openai_judge_against_transformers_serve(tmp_path, server, monkeypatch):
    monkeypatch.setenv("GILBENCH_TEST_LOCAL_KEY", "local-no-auth")
    make_runs(tmp_path / "runs", methods=("gil", "ppo"), n=N)
    judged = 2 * (N - N // 4)  # pairs that are not identical, over both splits
    before = posts(server)
    t0 = time.time()
    r = compare(tmp_path, server)
    first_s = time.time() - t0
    # transport: one real HTTP request per judged order, all answered
    assert r["calls"]["made"] == 2 * judged and posts(server) - before == 2 * judged
    # a judge that always says A: each pair's orders disagree, so every pair is a tie; all verdicts valid
    for s in r["splits"]:
        h = s["health"]
        assert (s["tie"], s["n_invalid"], h["invalid_rate"], h["first_position_win_rate"], h["position_flip_rate"]) == (
            1.0,
            0,
            0.0,
            1.0,
            1.0,
        )
    # usage accounting: tokens come from the server's usage (6 completion tokens: "[[A]]" + EOS; an estimate would say 1)
    cache = [
        json.loads(line)
        for line in next((tmp_path / "runs" / "cache" / "judge").glob("*.jsonl")).read_text().splitlines()
    ]
    assert len(cache) == 2 * judged and {e["completion_tokens"] for e in cache} == {6}
    assert all(e["prompt_tokens"] > 100 and e["text"] == "[[A]]" for e in cache)
    expected = sum(e["prompt_tokens"] / 1000 * PRICE_IN + e["completion_tokens"] / 1000 * PRICE_OUT for e in cache)
    assert r["calls"]["cost"] == pytest.approx(expected)
    # the cache: a rerun makes zero calls and reaches the same verdicts
    before = posts(server)
    again = compare(tmp_path, server)
    assert again["calls"]["made"] == 0 and again["calls"]["cost"] == 0 and posts(server) == before
    assert [s["tie"] for s in again["splits"]] == [s["tie"] for s in r["splits"]]
    # invalid verdicts: answers cut at 3 tokens ("[[A") have no verdict, even after the reminder, and count as invalid
    before = posts(server)
    cut = compare(tmp_path, server, "--max-tokens", "3")
    assert (
        cut["calls"]["made"] == 2 * 2 * judged and posts(server) - before == 2 * 2 * judged
    )  # each order: the ask and the reminder
    for s in cut["splits"]:
        # every judged pair is invalid; only the identical pairs (a tie without a call) remain valid
        assert (s["n_invalid"], s["n"], s["tie"], s["health"]["invalid_rate"]) == (N - N // 4, N // 4, 1.0, 1.0)
    print(f"\ntransformers serve up in {server['startup_s']:.1f} s; first compare ({2 * judged} calls) {first_s:.1f} s")
