"""Talking to a judge model: an OpenAI-compatible HTTP client, an on-disk call cache and a cost meter.

* ``ChatClient`` posts to ``{base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp server all speak it) with the
  standard library only; it retries 429, 5xx, timeouts and dropped connections with exponential backoff and
  jitter (a ``Retry-After`` header is honoured, capped by ``backoff_max``). The API key is read from the
  environment variable the caller names, sent only in the Authorization header, and scrubbed from every
  error message and every stored field of a reply; it is never stored. Redirects are refused (never
  followed), so the key cannot reach another address; a URL that is not http(s)://HOST fails at once.
* ``CallCache`` is content-addressed: ``key = sha256`` of the judge id, model snapshot, template hash, rendered
  messages, decoding parameters and order. Entries are JSON lines appended with one ``write`` on an
  ``O_APPEND`` descriptor, so concurrent threads and processes never interleave and a killed run leaves at
  worst one torn last line, which is skipped on load. A rerun makes zero calls; a killed run resumes.
* ``CostMeter`` prices tokens (from the server's ``usage``, else estimated as characters / 4) and refuses a call
  that could push the total past ``max_cost``, counting its worst case (``max_tokens`` of output). A request
  that timed out may still have been billed: it is counted at its worst case too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.files import dumps

CHARS_PER_TOKEN = 4.0


class JudgeUnavailable(GilbenchError):
    """The judge endpoint kept failing after every retry, or refused the request outright."""


class BudgetExceeded(GilbenchError):
    """The next call could pass ``--max-cost``; judging stopped before it.

    The message reads the meter when shown, so it reports what the calls in flight at the stop finally cost."""

    def __init__(self, meter: CostMeter, worst: float):
        super().__init__()
        self.meter, self.worst = meter, worst

    def __str__(self) -> str:
        m = self.meter
        unanswered = (
            f" and up to ${m.unanswered_cost:.4f} on {m.unanswered} timed-out requests the server may have billed"
            if m.unanswered
            else ""
        )
        return (
            f"stopped before passing --max-cost ${m.max_cost:g}: spent ${m.spent:.4f} on {m.calls} calls{unanswered}, and the next "
            f"could cost up to ${self.worst:.4f}. Finished calls are cached; rerun with a larger --max-cost to continue."
        )


class _Redirected(Exception):
    pass


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect with the Authorization header, to any host: refuse instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise _Redirected(f"HTTP {code} to {newurl}")


def check_base_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GilbenchError(
            f"--base-url {base_url!r} is not an http(s) URL with a host; write e.g. https://api.openai.com/v1 "
            f"or http://127.0.0.1:8000/v1"
        )
    try:
        _ = parts.port  # reading it checks the port
    except ValueError:
        raise GilbenchError(
            f"--base-url {base_url!r} has an invalid port; write e.g. http://127.0.0.1:8000/v1"
        ) from None
    return base_url


def estimate_tokens(chars: int) -> int:
    """Tokens of a text of ``chars`` characters, for servers that report no usage and for dry runs."""
    return max(1, round(chars / CHARS_PER_TOKEN))


def messages_chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def cache_key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str = ""  # the model name the server reports (a dated snapshot on OpenAI)


# ------------------------------------------------------------------------------------------- HTTP
class ChatClient:
    RETRY_STATUS = {408, 409, 425, 429}

    def __init__(
        self,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        seed: int | None = None,
    ):
        self.url = check_base_url(base_url).rstrip("/") + "/chat/completions"
        for name, value, lowest in (
            ("timeout", timeout, 1e-3),
            ("max_retries", max_retries, 0),
            ("backoff", backoff, 0),
            ("backoff_max", backoff_max, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= lowest or value != value:
                raise GilbenchError(
                    f"judge option {name}={value!r}: expected a number >= {lowest}; e.g. --judge-arg {name}=30"
                )
        if not isinstance(max_retries, int):
            raise GilbenchError(
                f"judge option max_retries={max_retries!r}: expected a whole number; e.g. --judge-arg max_retries=3"
            )
        self.meter: CostMeter | None = None  # set by the judge: timed-out requests are charged to it
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.backoff_max = backoff, backoff_max
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests sent, retries included
        # A server on this machine (vLLM, llama.cpp) is reached directly, whatever proxy the environment names.
        local = urllib.parse.urlsplit(self.url).hostname in ("127.0.0.1", "localhost", "::1")
        self._opener = urllib.request.build_opener(
            _RefuseRedirects, *([urllib.request.ProxyHandler({})] if local else [])
        )

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise GilbenchError(
                f"the judge needs an API key in the environment variable {self.api_key_env}, which is not set "
                f"(export {self.api_key_env}=...; for a local server without auth any non-empty value works)"
            )
        return key

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "")
        return text.replace(key, "***") if key else text

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Exponential backoff with equal jitter: half fixed, half random; a server's Retry-After wins if given."""
        if retry_after:
            try:
                return min(self.backoff_max, max(0.0, float(retry_after)))
            except ValueError:
                pass
        d = min(self.backoff_max, self.backoff * 2**attempt)
        return d / 2 + self._rng.uniform(0, d / 2)

    def chat(self, model: str, messages: list[dict], **decoding) -> Completion:
        body = json.dumps({"model": model, "messages": messages, **decoding}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key()}"}
        problem, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.delay(attempt - 1, retry_after))
                retry_after = None
            with self._lock:
                self.requests += 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with self._opener.open(request, timeout=self.timeout) as response:
                    payload = response.read()
                return self._parse(payload, model)
            except _Redirected as e:
                raise JudgeUnavailable(
                    f"judge endpoint {self.url} answered with a redirect ({self._scrub(str(e))}); redirects are not "
                    f"followed so the API key goes nowhere else: set --base-url to the final address"
                ) from None
            except urllib.error.HTTPError as e:
                detail = self._scrub(e.read()[:300].decode("utf-8", "replace"))
                if e.code not in self.RETRY_STATUS and e.code < 500:
                    hint = f" (check the key in ${self.api_key_env})" if e.code in (401, 403) else ""
                    raise JudgeUnavailable(
                        f"judge endpoint {self.url} refused the request: HTTP {e.code}{hint}: {detail}"
                    ) from None
                problem, retry_after = f"HTTP {e.code}: {detail}", e.headers.get("Retry-After")
            except TimeoutError as e:
                problem = f"timed out after {self.timeout} s ({e})"
                if self.meter is not None:  # the server may have answered, and billed, after we stopped waiting
                    self.meter.charge_unanswered(
                        estimate_tokens(messages_chars(messages)), int(decoding.get("max_tokens") or 0)
                    )
            except urllib.error.URLError as e:
                if isinstance(e.reason, socket.gaierror):
                    raise JudgeUnavailable(
                        f"judge endpoint {self.url}: cannot resolve the host name ({e.reason}); check --base-url"
                    ) from None
                if isinstance(e.reason, (TimeoutError, socket.timeout)):
                    problem = f"timed out after {self.timeout} s while connecting"
                else:
                    problem = f"connection failed: {self._scrub(str(e.reason))}"
            except (ConnectionError, OSError) as e:
                problem = f"connection failed: {self._scrub(str(getattr(e, 'reason', e)))}"
            except _BadPayload as e:
                problem = str(e)
        raise JudgeUnavailable(f"judge endpoint {self.url} failed {self.max_retries + 1} times; last: {problem}")

    def _parse(self, payload: bytes, model: str) -> Completion:
        try:
            data = json.loads(payload)
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise _BadPayload(
                f"not a chat-completions reply: {self._scrub(payload[:200].decode('utf-8', 'replace'))}"
            ) from None
        usage = data.get("usage") or {}
        try:
            tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (TypeError, ValueError, AttributeError):
            tokens_in = tokens_out = 0  # usage unreadable: the meter estimates from characters
        return Completion(self._scrub(str(text)), tokens_in, tokens_out, self._scrub(str(data.get("model") or model)))


class _BadPayload(Exception):
    pass


# ------------------------------------------------------------------------------------------- cache
class CallCache:
    """Append-only JSONL of ``{"key": ..., **entry}``; loaded once, then kept in memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    row = json.loads(line)
                    self._entries[row.pop("key")] = row
                except (ValueError, KeyError, AttributeError):
                    continue  # a line torn by a kill
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        line = (dumps({"key": key, **entry}, sort_keys=True) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, line)
            self._entries[key] = entry

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# ------------------------------------------------------------------------------------------- cost
class CostMeter:
    """Dollars per 1k input / output tokens; ``reserve`` before a call, ``settle`` after it."""

    def __init__(self, price_in: float = 0.0, price_out: float = 0.0, max_cost: float | None = None):
        self.price_in, self.price_out, self.max_cost = price_in, price_out, max_cost
        self.spent = 0.0
        self.calls = 0
        self.unanswered = 0  # requests that timed out: maybe billed, counted at their worst case
        self.unanswered_cost = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()

    def price(self, tokens_in: float, tokens_out: float) -> float:
        return tokens_in / 1000 * self.price_in + tokens_out / 1000 * self.price_out

    def reserve(self, tokens_in: int, max_tokens_out: int) -> float:
        worst = self.price(tokens_in, max_tokens_out)
        with self._lock:
            if self.max_cost is not None and self.spent + self.unanswered_cost + self._reserved + worst > self.max_cost:
                raise BudgetExceeded(self, worst)
            self._reserved += worst
        return worst

    def settle(self, reserved: float, tokens_in: int, tokens_out: int) -> float:
        cost = self.price(tokens_in, tokens_out)
        with self._lock:
            self._reserved -= reserved
            self.spent += cost
            self.calls += 1
        return cost

    def charge_unanswered(self, tokens_in: int, max_tokens_out: int) -> None:
        with self._lock:
            self.unanswered += 1
            self.unanswered_cost += self.price(tokens_in, max_tokens_out)

    def release(self, reserved: float) -> None:
        with self._lock:
            self._reserved -= reserved
