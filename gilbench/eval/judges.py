"""Judges: who decides which of two responses is better. Importing this module registers ``openai``, ``hf`` and ``rm``.

A judge answers one *order* at a time: ``judge_order(prompt, first, second, order) -> OrderResult``; the protocol
(``gilbench.eval.protocol``) shows each pair in both orders and combines them. Two families:

* ``LMJudge`` -- a language model reads a prompt template and answers ``[[A]]`` / ``[[B]]`` / ``[[C]]``. Subclasses
  implement ``complete(messages) -> Completion``; caching, cost, the reminder retry and parsing are shared.
  ``OpenAIJudge`` (any OpenAI-compatible server) and ``HFJudge`` (a local causal LM) are the built-in ones.
* ``ScoreJudge`` -- any ``score(prompt, response) -> float`` (or a batched ``score_batch(prompts, responses)``);
  a pair whose scores differ by at most ``tie_margin`` is a tie. ``RMJudge`` wraps a reward model. A task's gold
  preference function becomes a judge in a few lines::

      @register_judge("gold")
      def gold_judge(arg, ctx):
          return ScoreJudge(preference_score, tie_margin=0.05, judge_id="gold-v1")

The interface (``Judge``, ``OrderResult``, ``JudgeContext``, ``build_judge``) lives in ``gilbench.eval.base`` and is
re-exported here.
"""

from __future__ import annotations

import os
import threading
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.eval.base import (
    Judge,
    JudgeContext,
    OrderResult,
    build_judge,
    construct,
    parse_spec,
    reject_options,
    short_hash,
    slug,
)
from gilbench.eval.client import (
    CallCache,
    ChatClient,
    Completion,
    CostMeter,
    cache_key,
    estimate_tokens,
    messages_chars,
)
from gilbench.eval.protocol import Template, parse_verdict, template_for, to_method
from gilbench.registry import register_judge

__all__ = [
    "Judge",
    "JudgeContext",
    "OrderResult",
    "build_judge",
    "parse_spec",
    "LMJudge",
    "OpenAIJudge",
    "HFJudge",
    "ScoreJudge",
    "RMJudge",
]


# ------------------------------------------------------------------------------------------ LM judges
class LMJudge(Judge):
    """Shared machinery of judges that answer in text: template, cache, cost, the reminder retry, parsing."""

    def __init__(
        self,
        judge_id: str,
        snapshot: str,
        template: Template,
        cache_dir: str | Path,
        max_tokens: int = 512,
        price_per_1k: tuple[float, float] = (0.0, 0.0),
    ):
        self.id, self.snapshot, self.template, self.max_tokens = judge_id, snapshot, template, max_tokens
        self.decoding = {"temperature": 0, "max_tokens": max_tokens}
        self.cache = CallCache(Path(cache_dir) / f"{judge_id}-{short_hash(snapshot)}.jsonl")
        self.meter = CostMeter(*price_per_1k)
        self._pending: dict[str, Future] = {}  # keys being asked right now
        self._pending_lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str, ctx: JudgeContext) -> LMJudge:
        """``NAME:MODEL`` plus the command line's judge options, checked against the keyword arguments of ``__init__``."""
        return construct(cls, getattr(cls, "registered_name", cls.__name__), arg, ctx)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "snapshot": self.snapshot,
            "template": self.template.name,
            "template_hash": self.template.hash,
            "decoding": self.decoding,
            "price_per_1k": [self.meter.price_in, self.meter.price_out],
            "cache": str(self.cache.path),
        }

    def set_budget(self, max_cost: float | None) -> None:
        if max_cost is not None and self.meter.price_in == self.meter.price_out == 0:
            raise GilbenchError(
                "--max-cost needs a price: pass --price-per-1k INPUT[,OUTPUT] (dollars per 1000 tokens)"
            )
        self.meter.max_cost = max_cost

    @abstractmethod
    def complete(self, messages: list[dict]) -> Completion:
        """The model's answer to a chat (system, user[, assistant, user]) at temperature 0."""

    def _key(self, messages: list[dict], order: str) -> str:
        return cache_key(
            judge=self.id,
            snapshot=self.snapshot,
            template=self.template.hash,
            messages=messages,
            decoding=self.decoding,
            order=order,
        )

    def plan(self, prompt, first, second, order) -> dict:
        messages = self.template.render(prompt, first, second)
        if self._key(messages, order) in self.cache:
            return {"calls": 0, "tokens_in": 0, "cached": True}
        return {"calls": 1, "tokens_in": estimate_tokens(messages_chars(messages)), "cached": False}

    def call(self, messages: list[dict], order: str) -> tuple[str, bool, float]:
        """(answer, from cache?, dollars spent). Concurrent asks of one key make one call (pairs repeated across seeds)."""
        key = self._key(messages, order)
        with self._pending_lock:
            hit = self.cache.get(key)
            waiting = self._pending.get(key) if hit is None else None
            if hit is None and waiting is None:
                self._pending[key] = Future()
        if hit is not None:
            return hit["text"], True, 0.0
        if waiting is not None:
            return waiting.result(), True, 0.0
        try:
            text, cost = self._call_model(key, messages, order)
            self._pending[key].set_result(text)
            return text, False, cost
        except BaseException as e:
            self._pending[key].set_exception(e)
            raise
        finally:
            with self._pending_lock:
                self._pending.pop(key)

    def _call_model(self, key: str, messages: list[dict], order: str) -> tuple[str, float]:
        tokens_in = estimate_tokens(messages_chars(messages))
        reserved = self.meter.reserve(tokens_in, self.max_tokens)
        try:
            reply = self.complete(messages)
        except BaseException:
            self.meter.release(reserved)
            raise
        used_in = reply.prompt_tokens or tokens_in
        used_out = reply.completion_tokens or estimate_tokens(len(reply.text))
        cost = self.meter.settle(reserved, used_in, used_out)
        self.cache.put(
            key,
            {
                "judge": self.id,
                "order": order,
                "text": reply.text,
                "model": reply.model,
                "prompt_tokens": used_in,
                "completion_tokens": used_out,
                "cost": cost,
            },
        )
        return reply.text, cost

    def judge_order(self, prompt, first, second, order) -> OrderResult:
        messages = self.template.render(prompt, first, second)
        raw, calls, cost, verdict = [], 0, 0.0, None
        for _ in range(2):
            text, hit, spent = self.call(messages, order)
            raw.append(text)
            calls, cost = calls + (not hit), cost + spent
            verdict = parse_verdict(text)
            if verdict:
                break
            messages = self.template.follow_up(messages, text)
        verdict = verdict or "invalid"
        return OrderResult(order, verdict, to_method(verdict, order), raw, len(raw), calls == 0, calls, cost)

    def close(self) -> None:
        self.cache.close()


@register_judge("openai")
class OpenAIJudge(LMJudge):
    """Any OpenAI-compatible chat-completions endpoint: ``openai:MODEL`` (OpenAI, vLLM, llama.cpp server ...)."""

    def __init__(
        self,
        model: str,
        *,
        cache_dir: str | Path,
        task: str = "",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        template: str | None = None,
        max_tokens: int = 512,
        price_per_1k: tuple[float, float] = (0.0, 0.0),
        snapshot: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
    ):
        if not model:
            raise GilbenchError("the openai judge needs a model name, e.g. openai:gpt-4o-mini")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.model = model
        self.client = ChatClient(base_url, api_key_env, timeout, max_retries, backoff, backoff_max)
        # The cache is keyed by what answered: the model name at this endpoint. Pin a dated model name
        # (or pass snapshot=...) to keep results apart when a provider updates a model behind its alias.
        super().__init__(
            f"openai-{slug(model)}",
            snapshot or f"{model}@{base_url.rstrip('/')}",
            template_for(task, template),
            cache_dir,
            max_tokens,
            price_per_1k,
        )
        self.client.meter = self.meter  # timed-out requests may be billed: the meter counts them

    def describe(self) -> dict:
        return {
            **super().describe(),
            "model": self.model,
            "base_url": self.client.url,
            "api_key_env": self.client.api_key_env,
        }

    def check_ready(self) -> None:
        self.client.api_key()

    def complete(self, messages: list[dict]) -> Completion:
        return self.client.chat(self.model, messages, **self.decoding)


@register_judge("hf")
class HFJudge(LMJudge):
    """A local causal LM (``hf:smollm2-135m``, any ``load_causal_lm`` name or folder), greedy, same prompt and parser."""

    max_concurrency = 1

    def __init__(
        self, model: str, *, cache_dir: str | Path, task: str = "", template: str | None = None, max_tokens: int = 256
    ):
        if not model:
            raise GilbenchError("the hf judge needs a model, e.g. hf:smollm2-135m")
        self.name = model
        self._model = self._tokenizer = None
        self._lock = threading.Lock()
        super().__init__(
            f"hf-{slug(model)}", _model_fingerprint(model), template_for(task, template), cache_dir, max_tokens
        )

    def check_ready(self) -> None:
        if self.name.startswith(("/", ".", "~")) and not Path(self.name).expanduser().is_dir():
            raise GilbenchError(
                f"--judge hf:{self.name}: no such model folder; give a preset (gilbench ls models), a hub id or a folder"
            )

    def complete(self, messages: list[dict]) -> Completion:
        import torch

        from gilbench.data.format import has_chat_template

        with self._lock:
            if self._model is None:
                from gilbench.models.presets import load_causal_lm

                self._model, self._tokenizer = load_causal_lm(self.name)
            model, tok = self._model, self._tokenizer
            if has_chat_template(tok):
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            else:
                text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\n\nAssistant:"
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            room = (getattr(model.config, "max_position_embeddings", None) or 2048) - self.max_tokens
            ids = ids[:, -max(1, room) :].to(model.device)  # a small model's context: keep the end (the answers)
            with torch.no_grad():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.max_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            new = out[0, ids.shape[1] :]
            return Completion(
                tok.decode(new, skip_special_tokens=True), int(ids.shape[1]), int(new.shape[0]), self.name
            )


def _model_fingerprint(name: str) -> str:
    """A model's identity for the cache: its name, plus the config and weight sizes of a local folder."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return name
    parts = [(p.name, p.stat().st_size) for p in sorted(path.glob("*.safetensors"))]
    config = (path / "config.json").read_text() if (path / "config.json").exists() else ""
    return f"{path.resolve()}#{short_hash(config + repr(parts))}"


# ------------------------------------------------------------------------------------------ score judges
class ScoreJudge(Judge):
    """Judge by a scalar score per response; |score(first) - score(second)| <= tie_margin is a tie."""

    def __init__(
        self,
        score: Callable[[str, str], float] | None = None,
        *,
        score_batch=None,
        tie_margin: float = 0.0,
        judge_id: str = "score",
        info: dict | None = None,
    ):
        if score is None and score_batch is None:
            raise GilbenchError("ScoreJudge needs score(prompt, response) or score_batch(prompts, responses)")
        self.id, self.tie_margin, self.info = judge_id, float(tie_margin), info or {}
        self._score, self._score_batch = score, score_batch
        self._memo: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {**super().describe(), "tie_margin": self.tie_margin, **self.info}

    def prepare(self, pairs: list[tuple[str, str]]) -> None:
        todo = sorted({p for p in pairs if p not in self._memo})
        if todo and self._score_batch is not None:
            values = self._score_batch([p for p, _ in todo], [r for _, r in todo])
            self._memo.update(zip(todo, (float(v) for v in values)))

    def score(self, prompt: str, response: str) -> float:
        with self._lock:
            if (prompt, response) not in self._memo:
                if self._score is None:
                    self.prepare([(prompt, response)])
                else:
                    self._memo[(prompt, response)] = float(self._score(prompt, response))
            return self._memo[(prompt, response)]

    def judge_order(self, prompt, first, second, order) -> OrderResult:
        s1, s2 = self.score(prompt, first), self.score(prompt, second)
        verdict = "C" if abs(s1 - s2) <= self.tie_margin else "A" if s1 > s2 else "B"
        return OrderResult(order, verdict, to_method(verdict, order), [f"score A {s1:.4f}, score B {s2:.4f}"], 1, False)


@register_judge("rm")
class RMJudge(ScoreJudge):
    """``rm:PATH`` (a saved reward model, e.g. results/runs/cache/rm/<key>) or ``rm:auto`` (run A's reward model).

    The default tie margin, 0.1, is a Bradley-Terry preference of at most 52.5 %."""

    def __init__(self, scorer, *, tie_margin: float = 0.1, judge_id: str = "rm", info: dict | None = None):
        super().__init__(
            score_batch=lambda ps, rs: scorer.score(ps, rs).tolist(),
            tie_margin=tie_margin,
            judge_id=judge_id,
            info=info,
        )

    @classmethod
    def from_spec(cls, arg: str, ctx: JudgeContext) -> RMJudge:
        from gilbench.eval.runs import reward_model_dir
        from gilbench.models.presets import load_sequence_classifier
        from gilbench.models.reward import RewardScorer

        options = dict(ctx.options)
        margin = float(options.pop("tie_margin", 0.1))
        reject_options("rm", options, ["tie_margin"])
        if arg in ("", "auto"):
            if not ctx.run_dirs_a:
                raise GilbenchError("rm:auto needs run A's folder to find its reward model")
            path, max_length = reward_model_dir(ctx.run_dirs_a[0], ctx.output_dir)
        else:
            path, max_length = Path(arg).expanduser(), 256
        model, tokenizer = load_sequence_classifier(str(path))
        info = {"reward_model": str(path), "max_length": max_length}
        return cls(
            RewardScorer(model.eval(), tokenizer, max_length),
            tie_margin=margin,
            judge_id=f"rm-{slug(Path(path).name)}-{short_hash(str(Path(path).resolve()))}",
            info=info,
        )
