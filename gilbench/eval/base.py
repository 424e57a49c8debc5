"""The judge interface: ``Judge``, what it returns (``OrderResult``), what it is built from (``JudgeContext``), and
``build_judge(spec, ctx)``, which looks a spec like ``openai:gpt-4o-mini`` up in the judge registry (plugins too).

A registered judge is a class with ``from_spec(arg, ctx)`` or a function ``(arg, ctx) -> Judge``; ``arg`` is the
part after the colon of the spec. The built-in judges are in ``gilbench.eval.judges``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from gilbench import registry
from gilbench.errors import GilbenchError


@dataclass
class JudgeContext:
    task: str = ""
    output_dir: Path = Path("results/runs")
    run_dirs_a: list[Path] = field(default_factory=list)  # run A's seed folders, e.g. for rm:auto
    options: dict = field(default_factory=dict)  # judge options from the command line (--base-url, --judge-arg ...)

    @property
    def cache_dir(self) -> Path:
        return Path(self.output_dir) / "cache" / "judge"


@dataclass
class OrderResult:
    order: str  # "ab": a shown first; "ba": b shown first
    verdict: str  # "A" / "B" / "C" or "invalid"
    outcome: str  # mapped back: "a" / "b" / "tie" / "invalid"
    raw: list[str]  # the judge's answer to each attempt (the second one follows the reminder)
    attempts: int
    cached: bool  # every attempt was answered from the cache
    calls: int = 0  # attempts that reached the judge model in this run (not from the cache)
    cost: float = 0.0  # dollars spent in this run (0 when cached)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "judge"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class Judge(ABC):
    """Subclass and implement ``judge_order``; the other methods are optional hooks."""

    id: str = "judge"  # names the results folder and the cache file
    max_concurrency: int | None = None  # a cap on parallel judge_order calls (None: no cap)

    def describe(self) -> dict:
        return {"id": self.id, "class": type(self).__name__}

    def prepare(self, pairs: list[tuple[str, str]]) -> None:
        """Hook: see every (prompt, response) before judging, e.g. to score them in batches."""

    def check_ready(self) -> None:
        """Raise a GilbenchError if judging cannot start (missing key, model ...)."""

    def set_budget(self, max_cost: float | None) -> None:
        """Stop before spending more than ``max_cost`` dollars; judges that cost nothing ignore it."""

    def plan(self, prompt: str, first: str, second: str, order: str) -> dict:
        """Dry run of ``judge_order``: calls to the judge model it needs, their input tokens, whether the cache has it."""
        return {"calls": 0, "tokens_in": 0, "cached": False}

    @abstractmethod
    def judge_order(self, prompt: str, first: str, second: str, order: str) -> OrderResult:
        """Which of ``first`` (shown as A) and ``second`` (B) is better; ``order`` says which method is shown first."""

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ building
def reject_options(name: str, options: dict, accepted) -> None:
    """A clear error for judge options a judge does not take (e.g. --tie-margin for an LM judge)."""
    if options:
        raise GilbenchError(
            f"judge {name} does not take option(s) {', '.join(sorted(options))}; it takes {', '.join(sorted(accepted))}"
        )


def construct(cls, name: str, arg: str, ctx: JudgeContext):
    """``cls(arg, cache_dir=..., task=..., **options)`` after checking the options against its keyword arguments."""
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "model", "cache_dir", "task")]
    options = dict(ctx.options)
    reject_options(name, {k: v for k, v in options.items() if k not in accepted}, accepted)
    return cls(arg, cache_dir=ctx.cache_dir, task=ctx.task, **options)


def parse_spec(spec: str) -> tuple[str, str]:
    name, _, arg = spec.partition(":")
    if not name:
        raise GilbenchError(
            f"--judge expects NAME[:ARG], e.g. openai:gpt-4o-mini, hf:smollm2-135m or rm:auto; got {spec!r}"
        )
    return name, arg


def build_judge(spec: str, ctx: JudgeContext) -> Judge:
    """A judge from a spec string like ``openai:gpt-4o-mini``, looked up in the judge registry (plugins too)."""
    name, arg = parse_spec(spec)
    factory = registry.judges.get(name)
    judge = factory.from_spec(arg, ctx) if hasattr(factory, "from_spec") else factory(arg, ctx)
    if not isinstance(judge, Judge):
        raise GilbenchError(f"judge '{name}' returned {type(judge).__name__}, not a gilbench.eval.base.Judge")
    return judge
