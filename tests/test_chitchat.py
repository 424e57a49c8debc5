"""The embedded chitchat tasks: real PyPI data, deterministic splits, no leakage, documented preference pairs."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

pytest.importorskip("chitchat_dataset")
pytest.importorskip("vaderSentiment")

from gilbench.data import chitchat, chitchat_source
from gilbench.data.chitchat import PreferenceScorer, load_chitchat, load_chitchat_ood, preference_score
from gilbench.data.chitchat_source import THEMES
from gilbench.errors import GilbenchError

FAST = {"relevance": False}  # MiniLM is exercised once, in test_registry_spec_loads_with_minilm


def _key(data):
    return (
        [p.id for p in data.rl_prompts],
        [(e.prompt, e.response) for e in data.sft],
        [(p.prompt, p.chosen, p.rejected) for p in data.pairs_train + data.pairs_val],
        [(s.name, [p.id for p in s.prompts]) for s in data.eval_splits],
    )


@pytest.fixture(scope="module")
def small():
    return load_chitchat(seed=0, limit=64, **FAST)


@pytest.fixture(scope="module")
def small_ood():
    return load_chitchat_ood(seed=0, limit=64, **FAST)


def test_themes_cover_every_opening_question():
    questions = {c.question for c in chitchat_source.read_conversations(chitchat_source.dataset_path())}
    assert questions == set(THEMES)
    assert set(THEMES.values()) == {"computers", "hypotheticals", "personal"}


def test_deterministic_per_seed_and_seeds_differ(small):
    assert _key(load_chitchat(seed=0, limit=64, **FAST)) == _key(small)
    other = _key(load_chitchat(seed=1, limit=64, **FAST))
    assert all(a != b for a, b in zip(other, _key(small)))


def test_no_leakage(small, small_ood):
    for data in (small, small_ood):
        data.check_no_leakage()
        held_out = {" ".join(p.text.lower().split()) for s in data.eval_splits for p in s.prompts}
        trained = (
            [p.prompt for p in data.pairs_train + data.pairs_val]
            + [p.text for p in data.rl_prompts]
            + [e.prompt for e in data.sft]
        )
        assert not held_out & {" ".join(t.lower().split()) for t in trained}
        assert not {p.prompt for p in data.pairs_train} & {p.prompt for p in data.pairs_val}


def test_groups_and_splits(small, small_ood):
    full = load_chitchat(seed=0, limit=None, **FAST)
    assert {p.group for p in full.rl_prompts} == {"computers", "hypotheticals", "personal"}
    assert len({p.text for p in full.rl_prompts}) == len(full.rl_prompts) > 1000
    assert {p.group for p in full.pairs_train} == {"computers", "hypotheticals", "personal"}
    assert [(s.name, s.distribution) for s in small.eval_splits] == [("id:test", "id")]
    names = [(s.name, s.distribution) for s in small_ood.eval_splits]
    assert names == [("id:test", "id"), ("ood:hypotheticals", "ood"), ("ood:chatterbot", "ood")]
    assert {p.group for p in small_ood.rl_prompts} <= {"computers", "personal"}
    assert {p.group for p in small_ood.eval_splits[0].prompts} <= {"computers", "personal"}
    assert {p.group for p in small_ood.eval_splits[1].prompts} == {"hypotheticals"}
    assert len({p.group for p in small_ood.eval_splits[2].prompts}) > 5  # chatterbot file names, round-robin
    assert all(len(p.id) == 12 for s in small_ood.eval_splits for p in s.prompts)
    assert small.notes["preference_function"] == chitchat.PREFERENCE_VERSION and small.notes["seed"] == 0


def test_limit_is_honoured(small):
    assert (
        len(small.rl_prompts) == 64
        and len(small.sft) <= 256
        and 0 < len(small.pairs_train) + len(small.pairs_val) <= 256
    )
    assert small.pairs_val and all(len(s.prompts) == 64 for s in small.eval_splits)
    tiny = load_chitchat_ood(seed=3, limit=5, **FAST)
    assert len(tiny.rl_prompts) == 5 and len(tiny.sft) <= 20 and len(tiny.pairs_train) + len(tiny.pairs_val) <= 20
    assert all(len(s.prompts) == 5 for s in tiny.eval_splits)


def test_chosen_beats_rejected_on_real_pairs(small):
    pairs = small.pairs_train + small.pairs_val
    scorer = PreferenceScorer(relevance=False)
    chosen = scorer.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = scorer.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    # without the chats' ratings (a +-0.25 term) the order holds for nearly all pairs
    assert sum(c > r for c, r in zip(chosen, rejected)) >= 0.9 * len(pairs)


def _synthetic(tmp_path, n=40):
    rng = random.Random(0)
    words = [
        "sun",
        "happy",
        "great",
        "love",
        "terrible",
        "awful",
        "sad",
        "fine",
        "dogs",
        "music",
        "pizza",
        "robots",
        "books",
    ]
    conv = {}
    for i in range(n):
        question = list(THEMES)[i % len(THEMES)]
        turns = []
        for t in range(8):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
            turns.append([{"sender": "ab"[t % 2], "text": text + ("?" if t % 2 == 0 else "."), "timestamp": ""}])
        conv[f"conv-{i}"] = {"messages": turns, "ratings": None, "prompt": question, "start": ""}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(conv))
    return path


def test_pairs_respect_the_margin_exactly_without_ratings(tmp_path):
    data = load_chitchat(seed=0, limit=None, path=str(_synthetic(tmp_path)), n_eval=4, **FAST)
    pairs = data.pairs_train + data.pairs_val
    assert pairs
    for p in pairs:
        gap = preference_score(p.prompt, p.chosen, relevance=False) - preference_score(
            p.prompt, p.rejected, relevance=False
        )
        assert gap >= 0.2 - 1e-9


def test_malformed_records_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "good": {"messages": [[{"text": "hi", "sender": "a"}]], "prompt": "Can computers fall in love?"},
                "broken-7": {"ratings": None, "prompt": "Mozart or Beethoven?"},
            }
        )
    )
    with pytest.raises(GilbenchError, match=r"bad\.json.*'broken-7'.*messages"):
        load_chitchat(seed=0, limit=4, path=str(bad), **FAST)
    bad.write_text(json.dumps({"k-1": {"messages": [[{"sender": "a"}]], "prompt": "Mozart or Beethoven?"}}))
    with pytest.raises(GilbenchError, match=r"bad\.json.*'k-1'.*text"):
        load_chitchat(seed=0, limit=4, path=str(bad), **FAST)
    bad.write_text("{not json")
    with pytest.raises(GilbenchError, match=r"bad\.json"):
        load_chitchat(seed=0, limit=4, path=str(bad), **FAST)
    with pytest.raises(GilbenchError, match="unknown option"):
        load_chitchat(seed=0, limit=4, n_evals=3)


def test_preference_score_terms():
    assert (
        chitchat.length_term("a " * 20) == 1.0
        and chitchat.length_term("a b") == 0.25
        and chitchat.length_term("a " * 100) == 0.0
    )
    assert chitchat.rating_term(None) == 0.0 and chitchat.rating_term(10) == 1.0
    happy = preference_score(
        "How was your day?", "It was a really wonderful day, I loved the sunshine at the beach", relevance=False
    )
    sad = preference_score(
        "How was your day?", "It was a terrible awful day, I hated the rain and felt sick all day", relevance=False
    )
    assert happy > sad


def test_registry_spec_loads_with_minilm(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    from gilbench.registry import tasks

    monkeypatch.setenv("GILBENCH_CACHE", str(tmp_path))
    spec = tasks.get("chitchat")
    assert spec.options.get("relevance", True) is True and spec.source["pypi"] == "chitchat-dataset"
    data = spec.load(seed=0, limit=32)
    assert len(data.rl_prompts) == 32 and data.pairs_train and data.eval_splits[0].name == "id:test"
    assert list((tmp_path / "data").glob("chitchat-minilm-*.npz"))  # embeddings cached on disk
    on_topic = preference_score("What's your favorite smell?", "Fresh coffee in the morning, and rain on hot pavement.")
    off_topic = preference_score(
        "What's your favorite smell?", "The new tax rules for small businesses change next year."
    )
    assert on_topic > off_topic
    ood = replace(tasks.get("chitchat-ood"), options={**tasks.get("chitchat-ood").options, "relevance": False})
    assert [s.name for s in ood.load(seed=0, limit=8).eval_splits] == ["id:test", "ood:hypotheticals", "ood:chatterbot"]
