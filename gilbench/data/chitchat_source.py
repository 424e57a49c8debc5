"""The ``chitchat-dataset`` source and the building blocks the ``chitchat`` and ``qa-chat`` tasks share.

``chitchat-dataset`` (MIT, on PyPI): 7168 two-person chats, each opened by one of 34 questions (THEMES gives each
its theme: computers / hypotheticals / personal), rated 1-10 on witty/upbeat/interesting. ``read_conversations``
reads it: a *turn* is the consecutive messages of one speaker, joined by spaces; chats with no opening question
(243) have no theme and are skipped; a rating is the mean of the three, None when unrated or the 5/5/5 default.

Texts are compared by ``normalise`` (white space folded, lower case); a prompt's id is sha1(text)[:12]
(``prompt_id``). A text *looks like text* when it has no URL, no 5 repeated characters and is mostly letters.

*Contexts* (``find_contexts``): the chat questions, turns that end in "?", have 4-40 words and look like text,
deduplicated by normalised text. Each keeps the themes of the chats it occurs in, its group (the most common
theme, trained themes first) and at most 2 distinct real next turns (3-60 words) from chats of trained themes.

*Units* (``pair_units``), the seed-independent raw material of preference pairs, each a prompt with 4 candidate
replies:
  - context units (one per pool question): the real next turn(s) plus replies of other pool units of the same
    theme (distractors, chosen by Random(prompt id));
  - opening units: per opening question of a trained theme, 16 first turns of its chats (sha1 order) in 4 units
    of 4.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from gilbench.data.chitchat_preference import clean, package_file, text_sha1
from gilbench.errors import GilbenchError

_C, _H, _P = "computers", "hypotheticals", "personal"
THEME_NAMES = (_C, _H, _P)
THEMES = {  # every opening question of the dataset (checked on load)
    "Which intelligent movie computer do you like best? (i.e. Jarvis from Iron Man, HAL from Space Odyssey 2000, the Star Trek Computer, the robot from Interstellar, etc.)": _C,
    "Do you think computers will ever be given the right to vote?": _C,
    "Can computers fall in love?": _C,
    "If a computer becomes indistinguishable from a person, is it murder to turn it off?": _C,
    "What if computers started asking not to be turned off?": _C,
    "Is it still catfishing if it's a computer doing it?": _C,
    "What would happen if two computers chatted with each other?": _C,
    "How would you define true artificial intelligence?": _C,
    "What would happen if the internet just... stopped working?": _C,
    "What if the world was made of peanut butter?": _H,
    "If money were no object, how would you spend your time?": _H,
    "What superpower do you wish you had, and why?": _H,
    "If you were in power for a day, how would you try to improve the country?": _H,
    "If you could relive one day of your life, which would it be and why?": _H,
    "What would you do if you had a flying car?": _H,
    "What if unicorns were real?": _H,
    "What would you do if you had a million dollars?": _H,
    "What if pigs could fly?": _H,
    "What if you woke up tomorrow morning, and everyone had vanished except you?": _H,
    "What would you do if you had a magic wand?": _H,
    "What would happen if humans developed faster-than-light space travel?": _H,
    "How would the world be different if pets could talk?": _H,
    "If you had to give a TED talk tomorrow, what would it be about?": _H,
    "What's the most interesting thing you've learned recently?": _P,
    "What's one thing your best friend doesn't know about you?": _P,
    "Who is your modern-day hero?": _P,
    "What's the last film that truly made an impression on you?": _P,
    "Is there something that you don't know that you're embarrassed about not knowing?": _P,
    "What's your favorite smell?": _P,
    "What's the best thing that happened to you this year?": _P,
    "Mozart or Beethoven?": _P,
    "What's your secret superpower? (i.e. What are you really really good at.)": _P,
    "What charitable or philanthropic cause are you most passionate about?": _P,
    "What's the craziest thing you've ever done?": _P,
}


def dataset_path() -> Path:
    """dataset.json of the installed ``chitchat-dataset`` package."""
    return package_file("chitchat-dataset", "chitchat_dataset/dataset.json")


def normalise(text: str) -> str:
    """The form texts are compared in (deduplication, leakage): white space folded, lower case."""
    return clean(text).lower()


def prompt_id(text: str) -> str:
    return text_sha1(text.strip())[:12]


_NOT_LETTER, _NOT_ASCII, _REPEAT = re.compile(r"[^A-Za-z]"), re.compile(r"[^\x00-\x7f]"), re.compile(r"(.)\1{4,}")


@functools.lru_cache(maxsize=1 << 19)
def looks_like_text(text: str) -> bool:
    """Looks like text: no URL, no 5 repeated characters, >= 60% ASCII letters, <= 10% non-ASCII (spaces aside)."""
    n = len(text) - text.count(" ")
    return (
        n > 0
        and "http" not in text
        and "www." not in text
        and not _REPEAT.search(text)
        and len(_NOT_LETTER.sub("", text)) >= 0.6 * n
        and (text.isascii() or len(_NOT_ASCII.findall(text)) <= 0.1 * n)
    )


@dataclass
class Conversation:
    question: str
    theme: str
    rating: float | None  # mean of witty/upbeat/interesting; None if unrated or the 5/5/5 default
    turns: list[str]


_PARSED: list = []


def read_conversations(path: str | Path) -> list[Conversation]:
    """Parse dataset.json; conversations without an opening question are skipped (no theme)."""
    path = Path(path)
    stat = path.stat() if path.exists() else None
    cache_key = (str(path.resolve()), stat and (stat.st_size, stat.st_mtime_ns))
    if _PARSED and _PARSED[0] == cache_key:  # one parsed file is kept: loading both tasks reads it once
        return _PARSED[1]
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GilbenchError(f"{path}: cannot read the chitchat dataset: {e}") from e
    if not isinstance(raw, dict):
        raise GilbenchError(f"{path}: expected a JSON object of conversations, got {type(raw).__name__}")
    out = []
    for key, conv in raw.items():
        if not isinstance(conv, dict) or not isinstance(conv.get("messages"), list):
            raise GilbenchError(f"{path}: conversation '{key}' has no 'messages' list")
        turns = []
        for i, turn in enumerate(conv["messages"]):
            if not isinstance(turn, list) or any(
                not isinstance(m, dict) or not isinstance(m.get("text"), str) for m in turn
            ):
                raise GilbenchError(f"{path}: conversation '{key}', turn {i}: every message needs a 'text' string")
            turns.append(clean(" ".join(m["text"] for m in turn)))
        question = clean(conv.get("prompt") or "")
        if not question:
            continue
        if question not in THEMES:
            raise GilbenchError(f"{path}: conversation '{key}' opens with a question missing from THEMES: {question!r}")
        r = conv.get("ratings") or {}
        values = [r[k] for k in ("witty", "upbeat", "interesting") if isinstance(r.get(k), (int, float))]
        rating = sum(values) / len(values) if values and set(values) != {5} else None
        out.append(Conversation(question, THEMES[question], rating, turns))
    _PARSED[:] = [cache_key, out]
    return out


# ------------------------------------------------------------------ contexts and pair units
@dataclass
class PairUnit:
    """A prompt with its candidate replies; a task scores them and turns them into preference pairs."""

    prompt: str
    group: str
    candidates: list[tuple[str, float | None]]  # (reply, chat rating)


def usable_text(text: str, lo: int, hi: int) -> bool:
    """A non-empty text of ``lo``-``hi`` words that looks like text (``text`` is clean()ed: words = spaces + 1)."""
    return bool(text) and lo <= text.count(" ") + 1 <= hi and looks_like_text(text)


@dataclass
class Contexts:
    text: dict[str, str]  # normalised question -> its first spelling
    themes: dict[str, Counter]  # themes of all chats it occurs in
    group: dict[str, str]  # most common theme among the trained ones
    replies: dict[str, list]  # up to 2 distinct (next turn, rating), from trained-theme chats only


def find_contexts(convs: list[Conversation], themes: tuple[str, ...]) -> Contexts:
    """The chat questions of all chats; ``themes``: the trained themes, the only ones replies are taken from."""
    ctx = Contexts({}, defaultdict(Counter), {}, defaultdict(list))
    for c in convs:
        for a, b in zip(c.turns, c.turns[1:] + [""]):
            if a.endswith("?") and usable_text(a, 4, 40):
                n = normalise(a)
                ctx.text.setdefault(n, a)
                ctx.themes[n][c.theme] += 1
                if (
                    c.theme in themes
                    and usable_text(b, 3, 60)
                    and len(ctx.replies[n]) < 2
                    and b not in [r for r, _ in ctx.replies[n]]
                ):
                    ctx.replies[n].append((b, c.rating))
    for n, counts in ctx.themes.items():
        ctx.group[n] = min(counts, key=lambda t: (t not in themes, -counts[t], t))
    return ctx


def pair_units(convs: list[Conversation], ctx: Contexts, pool: list[str], themes: tuple[str, ...]) -> list[PairUnit]:
    """Context units for ``pool`` (normalised questions), then opening units of ``themes`` (module docstring)."""
    by_theme = defaultdict(list)
    for n in pool:
        by_theme[ctx.group[n]] += ctx.replies[n]
    units = []
    for n in pool:
        own, text = ctx.replies[n], ctx.text[n]
        others = [r for r in by_theme[ctx.group[n]] if r not in own]
        units.append(
            PairUnit(
                text, ctx.group[n], own + random.Random(prompt_id(text)).sample(others, min(len(others), 4 - len(own)))
            )
        )
    for q, t in THEMES.items():
        if t in themes:
            answers = {
                c.turns[0]: c.rating for c in convs if c.question == q and c.turns and usable_text(c.turns[0], 3, 60)
            }
            answers = sorted(answers.items(), key=lambda kv: prompt_id(kv[0]))[:16]
            units += [PairUnit(q, t, answers[i : i + 4]) for i in range(0, len(answers) - 3, 4)]
    return units
