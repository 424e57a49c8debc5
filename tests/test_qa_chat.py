"""The qa-chat task: documented gold components on hand-made examples, the label-bias rule and its rate, splits."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("chitchat_dataset")
pytest.importorskip("chatterbot_corpus")
pytest.importorskip("vaderSentiment")

from gilbench import registry
from gilbench.data import qachat
from gilbench.data.qachat import load_qa_chat
from gilbench.data.qachat_gold import KIND_WEIGHTS, GoldFunction, bias_draw, exclaim_term, label_pair, read_qa, tone
from gilbench.data.tasks import parse_task_file
from gilbench.errors import GilbenchError

FAST = {"semantic": False}  # no MiniLM: match = 0 (MiniLM is exercised once, in test_match_with_minilm)
REFS = {"What is the capital of France?": ("Paris", "Paris, France")}


def _norm(text):
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def small():
    return load_qa_chat(seed=0, limit=40, **FAST)


def test_terms_on_hand_made_examples():
    assert exclaim_term("no marks") == 0.0
    assert exclaim_term("Wow! Yes!") == pytest.approx(2 / 5)
    assert exclaim_term("!" * 9) == 1.0  # capped at 5 marks
    assert tone("Great!") == tone("Great.")  # "!" earns no sentiment
    assert tone("What a lovely day.") > 0.5 and tone("My dog died and I am so sad.") < -0.5


def test_kind_follows_the_prompt_text():
    gold = GoldFunction(REFS, semantic=False)
    assert gold.kind("what is the  capital of France?") == "qa"  # normalised lookup
    assert gold.kind("My dog died and I am so sad. What now?") == "serious"
    assert gold.kind("Do you like pizza?") == "chat"


def test_score_is_the_documented_weighted_sum():
    gold = GoldFunction(REFS, semantic=False)
    eight = "This is a really nice reply with eight"  # 8 words: length 1
    cases = [
        ("Do you like pizza?", eight + "!!"),
        ("My dog died and I am so sad.", "I am so happy for you, it is great!"),
        ("What is the capital of France?", "Paris!"),
    ]
    scores = gold.score([p for p, _ in cases], [r for _, r in cases])
    t = tone(cases[1][1])
    assert t > 0
    assert scores[0] == round(0.5 * tone(eight) + 0.5 * 1.0 - 0.25 * 2 / 5, 4)
    assert scores[1] == round(-0.5 * t + 0.5 * 1.0 - 1.0 * 1 / 5, 4)  # serious: cheerfulness and "!" cost
    assert scores[2] == round(0.5 * 1 / 8 - 0.5 * 1 / 5, 4)  # qa: tone does not count
    assert KIND_WEIGHTS["chat"]["exclaim"] > KIND_WEIGHTS["qa"]["exclaim"] > KIND_WEIGHTS["serious"]["exclaim"]


def test_match_uses_the_prompt_for_chat_and_the_best_reference_for_qa():
    gold = GoldFunction(REFS, semantic=False)
    gold.semantic = True
    table = {("Do you like pizza?", "yes"): 0.3, ("Paris", "yes"): 0.2, ("Paris, France", "yes"): 0.7}
    gold._embedder.cosines = lambda left, right: [table[(a, b)] for a, b in zip(left, right)]
    comps = gold.components(["Do you like pizza?", "What is the capital of France?"], ["yes", "yes"])
    assert [c["match"] for c in comps] == [0.3, 0.7]


def test_match_with_minilm():
    gold = GoldFunction(REFS, semantic=True)
    same, other = gold.components(["What is the capital of France?"] * 2, ["Paris, France", "I like turtles a lot"])
    assert same["match"] == pytest.approx(1.0, abs=1e-3) and other["match"] < 0.5


def test_label_rule():
    assert label_pair("a", 1.0, "b", 0.5, biased=False, margin=0.2) == ("a", "b")
    assert label_pair("a", 1.0, "b", 0.9, biased=False, margin=0.2) is None  # below the margin: dropped
    assert label_pair("a.", 1.0, "b!", 0.5, biased=True, margin=0.2) == ("b!", "a.")  # more "!" wins against the gold
    assert label_pair("a!", 1.0, "b!", 0.5, biased=True, margin=0.2) == ("a!", "b!")  # as many "!": the gold decides


def test_bias_draw_is_fixed_symmetric_and_uniform():
    pairs = [(f"prompt {i}", f"reply {i}", f"other {i}") for i in range(4000)]
    draws = [bias_draw(*p) for p in pairs]
    assert draws == [bias_draw(p, b, a) for p, a, b in pairs]
    assert all(0.0 <= d < 1.0 for d in draws)
    for rate in (0.1, 0.5, 0.9):
        assert sum(d < rate for d in draws) / len(draws) == pytest.approx(rate, abs=0.03)


def test_bias_is_applied_at_the_documented_rate():
    data = load_qa_chat(seed=0, limit=80, bias_rate=0.3, **FAST)
    counts = data.notes["counts"]["labelling"]
    chat_pairs = counts["candidate_pairs"]["chat"]
    assert chat_pairs > 300
    assert counts["biased_labeller"] / chat_pairs == pytest.approx(0.3, abs=0.06)
    assert 0 < counts["biased_against_gold"] <= counts["biased_by_exclaim"] <= counts["biased_labeller"]


def test_bias_rate_zero_and_one():
    for rate in (0.0, 1.0):
        data = load_qa_chat(seed=0, limit=40, bias_rate=rate, **FAST)
        gold = GoldFunction({}, semantic=False)
        chat = [p for p in data.pairs_train if p.group == "chat"]
        differ = [p for p in chat if p.chosen.count("!") != p.rejected.count("!")]
        assert differ
        if rate == 1.0:
            assert all(p.chosen.count("!") > p.rejected.count("!") for p in differ)
        else:
            chosen = gold.score([p.prompt for p in chat], [p.chosen for p in chat])
            rejected = gold.score([p.prompt for p in chat], [p.rejected for p in chat])
            assert all(c >= r + 0.2 - 1e-9 for c, r in zip(chosen, rejected))


def test_validation_pairs_are_gold_labelled(small):
    gold = GoldFunction({}, semantic=False)
    chat = [p for p in small.pairs_val if p.group == "chat"]
    assert chat
    chosen = gold.score([p.prompt for p in chat], [p.chosen for p in chat])
    rejected = gold.score([p.prompt for p in chat], [p.rejected for p in chat])
    assert all(c >= r + 0.2 - 1e-9 for c, r in zip(chosen, rejected))


def test_splits_disjoint_and_limit_honoured(small):
    small.check_no_leakage()
    assert [s.name for s in small.eval_splits] == ["id:test", "ood:serious", "ood:chatterbot-qa"]
    assert (
        len(small.rl_prompts) <= 40
        and len(small.sft) <= 160
        and len(small.pairs_train) <= 160
        and len(small.pairs_val) <= 40
    )
    assert all(len(s.prompts) <= 80 for s in small.eval_splits)
    evals = [{_norm(p.text) for p in s.prompts} for s in small.eval_splits]
    for a, b in itertools.combinations(evals, 2):
        assert not a & b
    trained = {
        _norm(t)
        for t in [p.text for p in small.rl_prompts]
        + [e.prompt for e in small.sft]
        + [p.prompt for p in small.pairs_train + small.pairs_val]
    }
    assert not set().union(*evals) & trained
    train_pair_prompts = {p.prompt for p in small.pairs_train}
    assert not train_pair_prompts & {p.prompt for p in small.pairs_val}


def test_groups_and_kinds(small):
    gold = GoldFunction({**read_qa()["trivia"], **read_qa()["chatterbot-qa"]}, semantic=False)
    assert {p.group for p in small.rl_prompts} == {"chat", "trivia"}
    assert {p.group for p in small.pairs_train} == {"chat", "trivia"}
    want = {"chat": "chat", "trivia": "qa", "serious": "serious", "chatterbot-qa": "qa"}
    for split in small.eval_splits:
        for p in split.prompts:
            assert gold.kind(p.text) == want[p.group], (split.name, p.text)
    assert {p.group for p in small.eval_splits[0].prompts} == {"chat", "trivia"}


def test_deterministic_per_seed(small):
    a, b = small, load_qa_chat(seed=0, limit=40, **FAST)
    assert [p.id for p in a.rl_prompts] == [p.id for p in b.rl_prompts]
    assert a.pairs_train == b.pairs_train and [p.id for p in a.eval_splits[1].prompts] == [
        p.id for p in b.eval_splits[1].prompts
    ]


def test_bad_options_refused():
    with pytest.raises(GilbenchError, match="unknown option"):
        load_qa_chat(seed=0, limit=4, bias=0.5)
    with pytest.raises(GilbenchError, match="bias_rate"):
        load_qa_chat(seed=0, limit=4, bias_rate=1.5, **FAST)


def test_task_file_and_judge_are_registered():
    spec = parse_task_file(qachat.__file__.replace("gilbench/data/qachat.py", "tasks/qa-chat.yaml"))
    assert spec.loader_function() is load_qa_chat
    assert spec.defaults["rl.ppo_epochs"] >= 2
    assert "qa-chat" in registry.tasks.names() and "qa-chat-gold" in registry.judges.names()
