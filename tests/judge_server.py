"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for judge tests and benchmarks.

    with JudgeServer(rule=prefer("GOOD")) as server:       # a real HTTP server on a free port, in a thread
        server.script(["429", "500", "slow", "garbage"])   # how the next requests are answered, then the rule
        ... OpenAIJudge(..., base_url=server.url) ...
        server.count                                       # requests received

A *rule* maps (first answer, second answer, request body) to the reply text; ``prefer(marker)`` answers like a fair
judge that likes responses containing ``marker``; ``always("A")`` is a judge that always picks one position.
Script steps: ``"429"`` / ``"500"`` (an error status), ``"401"`` (a bad key, echoed back), ``"slow"`` (sleep past the client's timeout, then answer),
``"garbage"`` (an answer without a verdict that also echoes the Authorization header), ``"ok"`` (the rule).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWERS = re.compile(r"Answer A:\n<<<\n(.*?)\n>>>\n\nAnswer B:\n<<<\n(.*?)\n>>>", re.S)


def prefer(marker: str):
    def rule(first: str, second: str, body: dict) -> str:
        f, s = marker in first, marker in second
        return (
            "Both are fine.\n[[C]]"
            if f == s
            else ("The first is better.\n[[A]]" if f else "The second is better.\n[[B]]")
        )

    return rule


def always(letter: str):
    return lambda first, second, body: f"Position bias.\n[[{letter}]]"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # listen() backlog: the default 5 drops connections under a burst (a 1 s SYN retry)


class JudgeServer:
    def __init__(self, rule=None, delay: float = 0.0, slow_seconds: float = 1.0):
        self.rule = rule or prefer("GOOD")
        self.delay, self.slow_seconds = delay, slow_seconds
        self.bodies: list[dict] = []
        self.auth: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._steps: list[str] = []
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def count(self) -> int:
        return len(self.bodies)

    def script(self, steps: list[str]) -> None:
        with self._lock:
            self._steps.extend(steps)

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next(self, body: dict, auth: str) -> str:
        with self._lock:
            self.bodies.append(body)
            self.auth.append(auth)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self._steps.pop(0) if self._steps else "ok"

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()  # headers and body go out as two writes: without this, Nagle + delayed ACK add 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self._leave()  # before the reply goes out: the client may send its next request at once
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                auth = self.headers.get("Authorization", "")
                step = server._next(body, auth)
                self.counted = True
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    if step in ("429", "500", "503"):
                        return self._send(
                            int(step),
                            {"error": {"message": "try later"}},
                            {"Retry-After": "0"} if step == "429" else None,
                        )
                    if step == "slow":
                        time.sleep(server.slow_seconds)
                    if step == "401":
                        return self._send(401, {"error": {"message": f"Incorrect API key provided: {auth}"}})
                    if self.path != "/v1/chat/completions":
                        return self._send(404, {"error": {"message": "no such route"}})
                    if step == "garbage":
                        text = f"I cannot decide. (you sent {auth})"
                    else:
                        last_user = [m["content"] for m in body["messages"] if m["role"] == "user"][0]
                        found = ANSWERS.search(last_user)
                        text = server.rule(found.group(1), found.group(2), body) if found else "??"
                    chars = sum(len(m["content"]) for m in body["messages"])
                    self._send(
                        200,
                        {
                            "id": "cmpl-1",
                            "object": "chat.completion",
                            "model": body["model"] + "-2024-01-01",
                            "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                            ],
                            "usage": {"prompt_tokens": chars // 4, "completion_tokens": max(1, len(text) // 4)},
                        },
                    )
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)
                finally:
                    self._leave()

            def _leave(self):
                if getattr(self, "counted", False):
                    self.counted = False
                    server._done()

        return Handler


SPLITS = (("id:test", "id"), ("ood:space", "ood"))


def response_pair(i: int, seed: int) -> tuple[str, str]:
    """Method A and B answers to prompt i: i % 4 == 0 A has the marker, 1 B has it, 2 neither, 3 identical."""
    kind = i % 4
    plain_a, plain_b = f"plain answer {i} from a, seed {seed}", f"another plain answer {i} by b, seed {seed}"
    if kind == 0:
        return f"GOOD answer {i} seed {seed}", plain_b
    if kind == 1:
        return plain_a, f"GOOD answer {i} seed {seed} and then some more words"
    if kind == 2:
        return plain_a, plain_b
    return f"the same answer {i} seed {seed}", f"the same answer {i} seed {seed}"


def make_runs(root, task: str = "toy", methods=("gil", "ppo"), seeds=(0,), n: int = 8, splits=SPLITS):
    """Fake finished runs: ``root/<task>/<method>/seed<k>/generations/<split>.jsonl`` like the pipeline writes."""
    import pathlib

    dirs = {m: [] for m in methods}
    for seed in seeds:
        for side, method in enumerate(methods):
            d = pathlib.Path(root) / task / method / f"seed{seed}"
            (d / "generations").mkdir(parents=True, exist_ok=True)
            for split, dist in splits:
                rows = []
                for i in range(n):
                    response = response_pair(i, seed)[side]
                    rows.append(
                        {
                            "id": f"p{i}",
                            "prompt": f"Question {i} of {split}?",
                            "group": "g1" if i < n // 2 else "g2",
                            "response": response,
                            "length": len(response.split()),
                            "rm_score": 0.1 * i + side,
                            "split": split,
                            "distribution": dist,
                            "method": method,
                            "seed": seed,
                        }
                    )
                (d / "generations" / f"{split.replace(':', '_')}.jsonl").write_text(
                    "".join(json.dumps(r) + "\n" for r in rows)
                )
            dirs[method].append(d)
    return [dirs[m] for m in methods]
