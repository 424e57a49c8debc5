"""Flags and their parsing shared by several commands: seed lists, name lists, the judge options, error handling."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable

from gilbench.config import parse_cli_value
from gilbench.errors import GilbenchError
from gilbench.store import DEFAULT_OUTPUT_DIR

SEED_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
OUTPUT_DIR_HELP = f"run store root (default {DEFAULT_OUTPUT_DIR}; the committed store is results/runs)"


def parse_seeds(text: str, flag: str = "--seed") -> list[int]:
    """Strict: ``0``, ``0,1,2`` or ``0-4`` (non-negative, ascending ranges, no empty parts, no repeats)."""
    seeds: list[int] = []
    usage = f"{flag} expects non-negative integers like 0, 0,1,2 or 0-4"
    for part in text.split(","):
        match = SEED_PART.match(part.strip())
        if not match:
            raise GilbenchError(f"{usage}; got {text!r}")
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if hi < lo:
            raise GilbenchError(f"{usage}; the range {part.strip()!r} in {text!r} runs backwards (write {hi}-{lo})")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise GilbenchError(f"{usage}; {text!r} names a seed twice")
    return seeds


def split_names(text: str) -> list[str]:
    """``a,b, c`` -> [a, b, c] (empty parts dropped)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def add_include(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help=f"plugin .py file or folder to import first{what}",
    )


def add_judge_options(p: argparse.ArgumentParser) -> None:
    """Flags of every command that judges pairs: how many requests at once, how the two orders combine, the judge's own."""
    p.add_argument("--concurrency", type=int, default=8, help="judge requests in flight at once (default 8)")
    p.add_argument(
        "--policy",
        choices=["conservative", "average"],
        default="conservative",
        help="combining the two orders: conservative (disagreement is a tie) or average (each order counts half)",
    )
    j = p.add_argument_group("judge options")
    j.add_argument(
        "--base-url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL or https://api.openai.com/v1)"
    )
    j.add_argument("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    j.add_argument("--price-per-1k", help="dollars per 1000 tokens: INPUT[,OUTPUT] (for --dry-run and --max-cost)")
    j.add_argument("--max-tokens", type=int, help="longest judge answer in tokens")
    j.add_argument("--template", choices=["dialogue", "summary"], help="judge prompt (default: by task family)")
    j.add_argument("--tie-margin", type=float, help="score judges: a score difference at most this is a tie")
    j.add_argument(
        "--judge-arg", action="append", default=[], metavar="KEY=VALUE", help="any other judge option, e.g. timeout=30"
    )


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse impossible numeric options before any judge call is made (so no paid call is wasted on them)."""
    rules = [
        ("concurrency", 1, "--concurrency"),
        ("n_boot", 1, "--n-boot"),
        ("limit", 1, "--limit"),
        ("max_tokens", 1, "--max-tokens"),
        ("window", 1, "--window"),
        ("max_cost", 0, "--max-cost"),
        ("tie_margin", 0, "--tie-margin"),
    ]
    for attr, lowest, flag in rules:
        value = getattr(args, attr, None)
        if value is not None and (not math.isfinite(value) or value < lowest):
            raise GilbenchError(f"{flag} {value}: must be a number of at least {lowest}")


def judge_options(args: argparse.Namespace) -> dict:
    options = {
        k: getattr(args, k)
        for k in ("base_url", "api_key_env", "max_tokens", "template", "tie_margin")
        if getattr(args, k) is not None
    }
    if args.price_per_1k is not None:
        try:
            prices = [float(x) for x in args.price_per_1k.split(",")]
        except ValueError:
            prices = []
        if len(prices) not in (1, 2) or min(prices) < 0 or not all(p < float("inf") for p in prices):
            raise GilbenchError(
                f"--price-per-1k expects INPUT[,OUTPUT] dollars, e.g. 0.00015,0.0006; got {args.price_per_1k!r}"
            )
        options["price_per_1k"] = (prices[0], prices[-1])
    for item in args.judge_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GilbenchError(f"--judge-arg expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = parse_cli_value(value.strip())
    return options


def run_command(args: argparse.Namespace, command: Callable[[argparse.Namespace], int]) -> int:
    """Import ``--include`` plugins, run the command; a user-facing failure is one line on stderr and exit code 2."""
    from gilbench import registry

    try:
        for path in getattr(args, "include", []):
            registry.include(path)
        return command(args)
    except GilbenchError as e:
        print(f"gilbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "gilbench: interrupted; completed stages and the last checkpoint are kept, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
