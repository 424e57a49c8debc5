"""Judges against a real HTTP server on 127.0.0.1: retries, cache, resume, order swapping, invalid answers, cost cap, keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gilbench.errors import GilbenchError
from gilbench.eval.client import BudgetExceeded, CallCache, ChatClient, JudgeUnavailable
from gilbench.eval.compare import compare
from gilbench.eval.judges import JudgeContext, ScoreJudge, build_judge
from gilbench.eval.protocol import combine, parse_verdict, template_for, to_method

sys.path.insert(0, str(Path(__file__).parent))
from judge_server import JudgeServer, always, make_runs, prefer  # noqa: E402

KEY = "sk-test-7f3c9a1e5b2d"
FAST = {"backoff": 0.001, "backoff_max": 0.01, "timeout": 2.0}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GILBENCH_TEST_KEY", KEY)


def openai_judge(tmp_path, server, **options):
    opts = {"base_url": server.url, "api_key_env": "GILBENCH_TEST_KEY", **FAST, **options}
    return build_judge("openai:judge-model", JudgeContext(task="toy", output_dir=tmp_path / "runs", options=opts))


def test_parse_verdict_and_mapping():
    assert parse_verdict("Reasons.\n[[A]]") == "A"
    assert parse_verdict("[[ b ]]") is None and parse_verdict("[[ B ]]") == "B"
    assert parse_verdict("Not [[A]] but\n[[B]]") == "B"  # the last line decides
    assert (
        parse_verdict("[[A]] or [[B]]") is None and parse_verdict("no verdict") is None and parse_verdict(None) is None
    )
    assert [to_method(v, "ab") for v in "ABC"] == ["a", "b", "tie"]
    assert [to_method(v, "ba") for v in "ABC"] == ["b", "a", "tie"]
    assert to_method("invalid", "ab") == "invalid"
    assert combine(["a", "a"], "conservative") == {"outcome": "a", "win": 1.0, "tie": 0.0, "lose": 0.0}
    assert combine(["a", "b"], "conservative")["outcome"] == "tie"
    assert combine(["a", "tie"], "conservative")["tie"] == 1.0
    assert combine(["a", "tie"], "average") == {"outcome": "a", "win": 0.5, "tie": 0.5, "lose": 0.0}
    assert combine(["a", "b"], "average") == {"outcome": "tie", "win": 0.5, "tie": 0.0, "lose": 0.5}
    assert combine(["a", "invalid"], "average")["outcome"] == "invalid"
    assert template_for("tldr").name == "summary" and template_for("chitchat-ood").name == "dialogue"


def test_retries_on_429_500_and_timeouts():
    with JudgeServer(slow_seconds=0.6) as server:
        client = ChatClient(server.url, "GILBENCH_TEST_KEY", timeout=0.3, max_retries=4, backoff=0.001)
        server.script(["429", "500", "slow"])
        reply = client.chat(
            "m", [{"role": "user", "content": "Answer A:\n<<<\nGOOD\n>>>\n\nAnswer B:\n<<<\nx\n>>>"}], temperature=0
        )
        assert parse_verdict(reply.text) == "A" and reply.model == "m-2024-01-01"
        assert server.count == 4 and client.requests == 4
        assert server.auth[-1] == f"Bearer {KEY}"
        server.script(["500"] * 3)
        client.max_retries = 2
        with pytest.raises(JudgeUnavailable, match="failed 3 times; last: HTTP 500"):
            client.chat("m", [{"role": "user", "content": "hi"}])


def test_backoff_is_exponential_with_jitter():
    client = ChatClient("http://127.0.0.1:9", backoff=1.0, backoff_max=10.0, seed=0)
    for attempt in range(6):
        d = min(10.0, 2.0**attempt)
        delays = [client.delay(attempt) for _ in range(50)]
        assert all(d / 2 <= x <= d for x in delays) and len(set(delays)) > 1
    assert client.delay(3, retry_after="0.5") == 0.5


def test_client_error_is_not_retried_and_hides_the_key(tmp_path):
    with JudgeServer() as server:
        client = ChatClient(server.url.replace("/v1", "/nope"), "GILBENCH_TEST_KEY", backoff=0.001)
        with pytest.raises(JudgeUnavailable, match="HTTP 404"):
            client.chat("m", [{"role": "user", "content": "hi"}])
        assert server.count == 1
        client = ChatClient(server.url, "GILBENCH_TEST_KEY", backoff=0.001)
        server.script(["401"])
        with pytest.raises(JudgeUnavailable, match=r"HTTP 401 \(check the key in \$GILBENCH_TEST_KEY\)") as e:
            client.chat("m", [{"role": "user", "content": "hi"}])
        assert server.count == 2 and KEY not in str(e.value) and "Bearer ***" in str(e.value)


def test_missing_api_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("GILBENCH_TEST_KEY")
    a, b = make_runs(tmp_path / "runs")
    with JudgeServer() as server:
        judge = openai_judge(tmp_path, server)
        with pytest.raises(GilbenchError, match="GILBENCH_TEST_KEY"):
            compare(a, b, judge, progress=False, log=lambda m: None)
        assert compare(a, b, judge, dry_run=True)["calls"] == 24  # a dry run needs no key
        assert server.count == 0


def test_both_orders_are_asked_and_mapped_back(tmp_path):
    a, b = make_runs(tmp_path / "runs", n=4)
    with JudgeServer(rule=prefer("GOOD")) as server:
        res = compare(a, b, openai_judge(tmp_path, server), progress=False)
        records = [json.loads(x) for x in Path(res["out_dir"], "judgments.jsonl").read_text().splitlines()]
        first = {r["item"]: r for r in records}["id:test/p0/seed0"]  # A has the marker
        assert [o["verdict"] for o in first["orders"]] == ["A", "B"] and [o["outcome"] for o in first["orders"]] == [
            "a",
            "a",
        ]
        assert first["outcome"] == "a" and first["win"] == 1.0
        shown = [
            b["messages"][1]["content"] for b in server.bodies if "Question 0 of id:test" in b["messages"][1]["content"]
        ]
        ab, ba = sorted(shown, key=lambda text: text.index("GOOD"))  # order ab shows A's answer (with GOOD) first
        assert (
            len(shown) == 2
            and ab.index("GOOD") < ab.index("another plain")
            and ba.index("GOOD") > ba.index("another plain")
        )
        assert {r["item"]: r["outcome"] for r in records}["id:test/p1/seed0"] == "b"
        assert server.bodies[0]["temperature"] == 0
    with JudgeServer(rule=always("A")) as server:  # a judge that only looks at the position
        res = compare(a, b, openai_judge(tmp_path / "biased", server), progress=False)
        split = res["splits"][0]
        assert split["tie"] == 1.0 and split["health"]["position_flip_rate"] == 1.0
        assert split["health"]["first_position_win_rate"] == 1.0
        res = compare(a, b, openai_judge(tmp_path / "biased", server), policy="average", progress=False)
        assert server.count == 12  # the second policy reuses the cache
        assert res["splits"][0]["win"] == pytest.approx(3 / 8) and res["splits"][0]["tie"] == pytest.approx(2 / 8)


def test_garbage_gets_a_reminder_then_counts_invalid(tmp_path):
    a, b = make_runs(tmp_path / "runs", n=4, splits=(("id:test", "id"),))
    with JudgeServer() as server:
        server.script(["garbage", "ok"])  # p0 in order ab: garbage, then a verdict after the reminder
        res = compare(a, b, openai_judge(tmp_path, server), concurrency=1, progress=False)
        second = server.bodies[1]["messages"]
        assert [m["role"] for m in second] == ["system", "user", "assistant", "user"] and "[[C]]" in second[-1][
            "content"
        ]
        record = json.loads(Path(res["out_dir"], "judgments.jsonl").read_text().splitlines()[0])
        assert (
            record["orders"][0]["attempts"] == 2 and record["orders"][0]["verdict"] == "A" and record["outcome"] == "a"
        )
        assert res["splits"][0]["n_invalid"] == 0
    with JudgeServer() as server:
        server.script(["garbage", "garbage"])
        res = compare(a, b, openai_judge(tmp_path / "again", server), concurrency=1, progress=False)
        s = res["splits"][0]
        assert s["n_invalid"] == 1 and s["n"] == 3 and s["health"]["invalid_rate"] == pytest.approx(1 / 6)
        assert server.count == 7  # 6 orders + one reminder
    assert not any(KEY in p.read_text() for p in tmp_path.rglob("*") if p.is_file())  # garbage echoed the header


def test_cache_second_run_makes_no_calls(tmp_path):
    a, b = make_runs(tmp_path / "runs", seeds=(0, 1))
    with JudgeServer() as server:
        first = compare(a, b, openai_judge(tmp_path, server), progress=False)
        assert server.count == 48 and first["calls"]["made"] == 48
        second = compare(a, b, openai_judge(tmp_path, server), progress=False)
        assert server.count == 48 and second["calls"] == {"made": 0, "cached": 48, "cost": 0.0}
        assert second["splits"] == first["splits"]
        assert compare(a, b, openai_judge(tmp_path, server), dry_run=True)["calls"] == 0
        compare(a, b, openai_judge(tmp_path, server, template="summary"), progress=False)  # another prompt, another key
        assert server.count == 96
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(KEY.encode() in p.read_bytes() for p in files)


def test_resume_after_an_error_mid_run(tmp_path):
    a, b = make_runs(tmp_path / "runs")
    seen = []

    def crash(record):
        seen.append(record)
        if len(seen) == 5:
            raise RuntimeError("killed")

    with JudgeServer() as server:
        with pytest.raises(RuntimeError):
            compare(a, b, openai_judge(tmp_path, server), concurrency=2, on_item=crash, progress=False)
        done = server.count
        assert 0 < done < 24
        res = compare(a, b, openai_judge(tmp_path, server), concurrency=2, progress=False)
        assert server.count == 24 and res["calls"]["made"] == 24 - done


CHILD = """
import sys
from gilbench.eval.compare import compare
from gilbench.eval.judges import JudgeContext, build_judge
url, out, a, b = sys.argv[1:5]
opts = dict(base_url=url, api_key_env="GILBENCH_TEST_KEY", backoff=0.001)
judge = build_judge("openai:judge-model", JudgeContext(task="toy", output_dir=out, options=opts))
compare([a], [b], judge, concurrency=2, progress=False)
"""


def test_resume_after_the_process_is_killed(tmp_path):
    (a,), (b,) = make_runs(tmp_path / "runs", n=16)
    with JudgeServer(delay=0.05) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.url, str(tmp_path / "runs"), str(a), str(b)], env=os.environ.copy()
        )
        deadline = time.time() + 30
        while server.count < 12 and time.time() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert 12 <= server.count < 48
        cached = len(CallCache(next((tmp_path / "runs" / "cache" / "judge").glob("*.jsonl"))))
        before = server.count
        res = compare([a], [b], openai_judge(tmp_path, server), progress=False)
        assert server.count - before == 48 - cached and res["calls"]["cached"] == cached


def test_cost_cap_stops_before_the_budget(tmp_path):
    a, b = make_runs(tmp_path / "runs")
    with JudgeServer() as server:
        judge = openai_judge(tmp_path, server, price_per_1k=(1.0, 1.0), max_tokens=200)
        plan = compare(a, b, judge, dry_run=True)
        assert plan["calls"] == 24 and 0 < plan["cost"] < plan["cost_upper"]
        with pytest.raises(BudgetExceeded, match="max-cost"):
            compare(a, b, judge, max_cost=plan["cost_upper"] / 3, concurrency=1, progress=False)
        assert 0 < server.count < 24 and judge.meter.spent <= plan["cost_upper"] / 3
        made = server.count
        res = compare(
            a,
            b,
            openai_judge(tmp_path, server, price_per_1k=(1.0, 1.0), max_tokens=200),
            max_cost=100.0,
            progress=False,
        )
        assert server.count == 24 and res["calls"]["made"] == 24 - made and res["calls"]["cost"] > 0
        with pytest.raises(GilbenchError, match="price"):
            compare(a, b, openai_judge(tmp_path, server), max_cost=1.0)


def test_concurrency_limit_is_respected(tmp_path):
    a, b = make_runs(tmp_path / "runs", n=16)
    with JudgeServer(delay=0.2) as server:  # long enough replies that requests overlap on a busy 2-core machine
        compare(a, b, openai_judge(tmp_path, server), concurrency=4, progress=False)
        assert 1 < server.max_in_flight <= 4


def test_score_judge_and_registry(tmp_path):
    a, b = make_runs(tmp_path / "runs")
    judge = ScoreJudge(lambda p, r: len(r), tie_margin=5, judge_id="length")
    res = compare(a, b, judge, progress=False)
    assert res["splits"][0]["health"]["position_flip_rate"] == 0.0
    records = [json.loads(x) for x in Path(res["out_dir"], "judgments.jsonl").read_text().splitlines()]
    for r in records:
        diff = len(r["response_a"]) - len(r["response_b"])
        assert r["outcome"] == ("tie" if abs(diff) <= 5 else "a" if diff > 0 else "b")
    with pytest.raises(GilbenchError, match="unknown judge 'opneai'. Did you mean 'openai'"):
        build_judge("opneai:x", JudgeContext())
    with pytest.raises(GilbenchError, match="does not take option"):
        build_judge("openai:x", JudgeContext(options={"tie_margin": 1}))


def test_rm_judge_batches_scores(tmp_path):
    import torch

    from gilbench.eval.judges import RMJudge

    calls = []

    class FakeScorer:
        def score(self, prompts, responses):
            calls.append(len(prompts))
            return torch.tensor([float("GOOD" in r) for r in responses])

    a, b = make_runs(tmp_path / "runs")
    res = compare(a, b, RMJudge(FakeScorer(), tie_margin=0.5), progress=False)
    assert calls == [28]  # every distinct (prompt, response) once, in one batch
    assert res["splits"][0]["win"] == pytest.approx(2 / 8) and res["splits"][0]["lose"] == pytest.approx(2 / 8)


def test_hf_judge_runs_a_local_model(tmp_path):
    a, b = make_runs(tmp_path / "runs", n=2, splits=(("id:test", "id"),))
    ctx = JudgeContext(task="toy", output_dir=tmp_path / "runs", options={"max_tokens": 4})
    res = compare(a, b, build_judge("hf:tiny", ctx), progress=False)  # random weights: no verdict
    assert res["splits"][0]["n_invalid"] == 2 and res["calls"]["made"] == 8
    again = compare(a, b, build_judge("hf:tiny", ctx), progress=False)
    assert again["calls"]["made"] == 0 and again["calls"]["cached"] == 4
