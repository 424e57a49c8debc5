"""The tldr and tldr-ood tasks on small local files in the public layouts (never ../shared)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hub_fixtures import load, make_data_dir, tldr_prompt, write_jsonl

from gilbench.data import tldr
from gilbench.data.format import format_example
from gilbench.errors import GilbenchError


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data")


def test_tldr_local_extract(data_dir):
    data = load("tldr", seed=0, data_dir=str(data_dir))
    assert data.prompt_format == "plain"
    assert (
        len(data.rl_prompts),
        len(data.sft),
        len(data.pairs_train),
        len(data.pairs_val),
        len(data.eval_splits[0].prompts),
    ) == (32, 32, 32, 4, 4)
    assert "LOCAL STAND-IN" in data.notes["pairs"] and "Random('tldr:0')" in data.notes["split"]["how"]
    pair = data.pairs_train[0]
    i = pair.prompt.split("post ")[1].split(".")[0]
    assert pair.prompt == tldr_prompt(int(i)) and (pair.chosen, pair.rejected) == (
        f"human summary {i}",
        f"ppo summary {i}",
    )
    head, tail = format_example(
        SimpleNamespace(chat_template=None, eos_token="<e>"), pair.prompt, pair.chosen, data.prompt_format
    )
    assert head.endswith("TL;DR:") and tail == f" human summary {i}<e>"
    again = load("tldr", seed=0, data_dir=str(data_dir))
    assert again.pairs_train == data.pairs_train and again.eval_splits[0].prompts == data.eval_splits[0].prompts
    assert {p.text for p in load("tldr", seed=2, data_dir=str(data_dir)).eval_splits[0].prompts} != {
        p.text for p in data.eval_splits[0].prompts
    }
    assert len(load("tldr", seed=0, limit=5, data_dir=str(data_dir)).rl_prompts) == 5


def test_tldr_full_local_copy_uses_human_comparisons(data_dir):
    # trl-lib/tldr layout (prompt + completion, single-newline spacing) and summarize_from_feedback comparisons
    write_jsonl(
        data_dir / "tldr/train.jsonl",
        [
            {"prompt": f"SUBREDDIT: r/a\nTITLE: T{i}\nPOST: Post {i}\nTL;DR:", "completion": f" sum {i}"}
            for i in range(10)
        ],
    )
    write_jsonl(data_dir / "tldr/test.jsonl", [{"prompt": tldr_prompt(100 + i), "completion": " s"} for i in range(3)])

    def comparison(i, choice, post=True):
        info = {
            "id": str(i),
            "post": f"Post {i}" if post else None,
            "title": f"T{i}",
            "subreddit": "a",
            "article": None if post else "news",
        }
        return {
            "info": info,
            "summaries": [{"text": f" first {i}", "policy": "p"}, {"text": f" second {i}", "policy": "q"}],
            "choice": choice,
            "worker": "w",
        }

    write_jsonl(
        data_dir / "summarize_from_feedback/comparisons/train.jsonl",
        [comparison(i, i % 2) for i in range(6)] + [comparison(50, 0, post=False)],
    )
    write_jsonl(
        data_dir / "summarize_from_feedback/comparisons/validation.jsonl",
        [comparison(7, 1), {"info": {}, "summaries": [], "choice": 0}],
    )
    with pytest.raises(GilbenchError, match=r"validation.jsonl line 2: field 'summaries' must be a list of two"):
        load("tldr", data_dir=str(data_dir))
    write_jsonl(data_dir / "summarize_from_feedback/comparisons/validation.jsonl", [comparison(7, 1)])
    data = load("tldr", seed=0, data_dir=str(data_dir))
    assert data.notes["skipped"] == {"comparisons/train: not a Reddit post (CNN/DM article)": 1}
    assert len(data.pairs_train) == 6 and len(data.pairs_val) == 1 and len(data.eval_splits[0].prompts) == 3
    pair = next(p for p in data.pairs_train if p.prompt.startswith("SUBREDDIT: r/a\n\nTITLE: T1\n\n"))
    assert (pair.chosen, pair.rejected) == ("second 1", "first 1")
    # SFT prompts are re-rendered in the canonical layout, so they match the comparison prompts exactly
    assert (
        pair.prompt in {e.prompt for e in data.sft}
        and pair.prompt == "SUBREDDIT: r/a\n\nTITLE: T1\n\nPOST: Post 1\n\nTL;DR:"
    )


def test_tldr_ood_cnndm_in_tldr_layout(data_dir):
    data = load("tldr-ood", seed=0, data_dir=str(data_dir))
    split = data.eval_splits[1]
    assert split.name == "ood:cnndm" and split.distribution == "ood" and len(split.prompts) == 8
    texts = {p.text for p in split.prompts}
    assert "POST: Article 3 says things. More text.\n\nTL;DR:" in texts
    cut = next(t for t in texts if "Too long" in t)
    assert len(cut) <= 2048 + len("POST: \n\nTL;DR:") and cut.endswith("here.\n\nTL;DR:")  # cut at a sentence end
    already = next(t for t in texts if "Already cut" in t)
    assert already.endswith("...\n\nTL;DR:")  # the extract's own cut is kept
    custom = tldr.load_tldr_ood(seed=0, data_dir=str(data_dir), ood_template="ARTICLE: {article}\nTL;DR:")
    assert all(p.text.startswith("ARTICLE: ") for p in custom.eval_splits[1].prompts)
    with pytest.raises(GilbenchError, match=r"ood_template must contain \{article\}"):
        tldr.load_tldr_ood(seed=0, data_dir=str(data_dir), ood_template="{post}")
