"""The judge client never leaks the API key, meters what may have been billed, and fails fast on a bad URL."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gilbench.errors import GilbenchError
from gilbench.eval.client import BudgetExceeded, ChatClient, CostMeter, JudgeUnavailable
from gilbench.eval.judges import JudgeContext, build_judge

sys.path.insert(0, str(Path(__file__).parent))
from judge_server import JudgeServer  # noqa: E402

KEY = "sk-test-leak-51a8c0de"
FAST = {"backoff": 0.001, "backoff_max": 0.01}
MESSAGES = [{"role": "user", "content": "Which answer is better?"}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GILBENCH_TEST_KEY", KEY)


class Capture:
    """An HTTP server that answers every request with ``reply(handler)`` and records each request's headers."""

    def __init__(self, reply):
        self.headers: list[dict] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                capture.headers.append(dict(self.headers))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, headers, body = reply(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_reply(text: str, model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "choices": [{"message": {"content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
    ).encode()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_refused_and_the_key_never_reaches_the_other_origin(status):
    with Capture(lambda h: (200, {}, chat_reply("[[A]]", "m"))) as other:
        with Capture(lambda h: (status, {"Location": other.url + "/chat/completions"}, b"")) as first:
            client = ChatClient(first.url, "GILBENCH_TEST_KEY", **FAST)
            with pytest.raises(JudgeUnavailable, match="redirect"):
                client.chat("m", MESSAGES)
            assert len(first.headers) == 1  # refused at once, not retried
        assert other.headers == []  # before the fix, 301/302/303 were followed with "Authorization: Bearer <key>"


def test_a_key_echoed_in_any_field_is_scrubbed_before_the_cache(tmp_path):
    def echo(h):
        auth = h.headers.get("Authorization", "")
        return 200, {"Content-Type": "application/json"}, chat_reply(f"You sent {auth}. [[A]]", f"model-for-{auth}")

    with Capture(echo) as server:
        opts = {"base_url": server.url, "api_key_env": "GILBENCH_TEST_KEY", **FAST}
        judge = build_judge("openai:judge-model", JudgeContext(task="toy", output_dir=tmp_path / "runs", options=opts))
        judge.call(MESSAGES, "ab")
        judge.close()
    stored = "".join(p.read_text() for p in (tmp_path / "runs").rglob("*.jsonl"))
    assert stored and KEY not in stored and "***" in stored


def test_timeouts_are_counted_as_possibly_billed():
    meter = CostMeter(1.0, 1.0)
    with JudgeServer(slow_seconds=0.6) as server:
        server.script(["slow", "slow"])
        client = ChatClient(server.url, "GILBENCH_TEST_KEY", timeout=0.2, **FAST)
        client.meter = meter
        client.chat("m", MESSAGES, max_tokens=100)
    assert meter.unanswered == 2 and meter.unanswered_cost == pytest.approx(2 * meter.price(6, 100))


def test_budget_message_reports_what_the_calls_in_flight_finally_cost():
    meter = CostMeter(1.0, 1.0, max_cost=1.0)
    reserved = meter.reserve(100, 400)  # $0.5 worst case, in flight
    with pytest.raises(BudgetExceeded) as stop:
        meter.reserve(100, 600)  # could pass $1
    meter.settle(reserved, 100, 300)  # the call in flight finishes after the stop
    assert "spent $0.4000 on 1 calls" in str(stop.value)  # before the fix: "spent $0.0000 on 0 calls"


@pytest.mark.parametrize(
    "url", ["htp:/nowhere", "nowhere", "http://", "ftp://example.com/v1", "http://127.0.0.1:99999/v1", ""]
)
def test_malformed_base_url_fails_at_once(url):
    t0 = time.time()
    with pytest.raises(GilbenchError, match="base-url"):
        ChatClient(url, "GILBENCH_TEST_KEY").chat("m", MESSAGES)
    assert time.time() - t0 < 1


def test_unknown_host_is_not_retried():
    t0 = time.time()
    with pytest.raises(JudgeUnavailable, match="resolve"):
        ChatClient("http://no-such-host.invalid/v1", "GILBENCH_TEST_KEY", backoff=1.0).chat("m", MESSAGES)
    assert time.time() - t0 < 10


@pytest.mark.parametrize(
    "option", [{"timeout": "abc"}, {"timeout": 0}, {"max_retries": -1}, {"max_retries": 1.5}, {"backoff": float("nan")}]
)
def test_bad_client_options_are_refused(option):
    with pytest.raises(GilbenchError, match="judge option"):
        ChatClient("http://127.0.0.1:1/v1", "GILBENCH_TEST_KEY", **option)
