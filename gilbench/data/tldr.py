"""The ``tldr`` and ``tldr-ood`` tasks: Reddit TL;DR summarisation with human comparisons, as in the GIL paper.

Prompts are posts in OpenAI's filtered-TL;DR format, "SUBREDDIT: r/<sub>\\n\\nTITLE: <title>\\n\\nPOST: <post>\\n\\nTL;DR:",
used as plain text (``prompt_format: plain``); the summary follows after a space. Every prompt, from any
source, is parsed and re-rendered in exactly that form, so the same post is the same text everywhere.

Sources, three ways:

- hub (default): SFT text and RL / eval prompts from ``trl-lib/tldr`` (prompt, completion; the filtered
  TL;DR of Stiennon et al. 2020: train 116,722 / validation 6,447 / test 6,553), preference pairs from
  ``openai/summarize_from_feedback`` config ``comparisons`` (train / validation; the human choice between
  two summaries; rows about CNN/DM articles rather than Reddit posts are skipped and counted).
  RL prompts and SFT: the train split; pairs: comparisons train, validation pairs: comparisons validation
  (seeded sample of ``max_val_pairs``); ``id:test``: the test split.
- ``--data-dir`` with a full copy: ``tldr/{train,test}.jsonl`` (prompt + completion or label) and
  ``summarize_from_feedback/comparisons/{train,validation}.jsonl`` (the hub rows: info, summaries, choice).
- ``--data-dir`` with only the extract ``tldr/tldr-1945.jsonl`` (prompt, label, openai_ppo_1.3b_response),
  as in ../shared/data: split by prompt into train / validation / test with Random("tldr:<seed>");
  SFT target = the human ``label``; preference pairs = the human label (chosen) against the 1.3B PPO
  policy's summary (rejected). That pair is a LOCAL STAND-IN for the human comparisons: it prefers human
  summaries over one model's, not one model sample over another as labellers did (see ``notes``).

``tldr-ood`` adds ``ood:cnndm``: CNN/DailyMail 3.0.0 articles (hub ``abisee/cnn_dailymail`` test split, cut
to ``max_article_chars`` at a sentence end; local ``ood/cnndm-200.jsonl``, its ``article_truncated``),
rendered with ``ood_template`` (default "POST: <article>\\n\\nTL;DR:": the TL;DR layout without the Reddit
fields a news article does not have). Training rows whose prompt is an eval prompt are dropped (counted).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from gilbench.data.hub import Row, Source, cap, check_data_dir, load_rows, shuffled, split_keys, text_id, unique_by
from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData
from gilbench.errors import GilbenchError

TLDR_SFT = {
    split: Source(
        "trl-lib/tldr",
        split,
        f"tldr/{split}.jsonl",
        revision="21233da376667088e6eb1ce4ce19ed832c2935d3",
        required=("prompt",),
    )
    for split in ("train", "test")
}
COMPARISONS = {
    split: Source(
        "openai/summarize_from_feedback",
        split,
        f"summarize_from_feedback/comparisons/{split}.jsonl",
        config="comparisons",
        required=("info", "summaries", "choice"),
    )
    for split in ("train", "validation")
}
TLDR_EXTRACT = "tldr/tldr-1945.jsonl"  # local extract: prompt, label, openai_ppo_1.3b_response
CNNDM = Source("abisee/cnn_dailymail", "test", "ood/cnndm-200.jsonl", config="3.0.0", required=("article",))
DEFAULT_OOD_TEMPLATE = "POST: {article}\n\nTL;DR:"

_PROMPT = re.compile(
    r"^\s*SUBREDDIT:\s*(?P<sub>.*?)\s*TITLE:\s*(?P<title>.*?)\s*POST:\s*(?P<post>.*?)\s*TL;DR:\s*$", re.S
)


def sources() -> list[Source]:
    return [*TLDR_SFT.values(), *COMPARISONS.values()]


def render_post(subreddit: str, title: str, post: str) -> str:
    sub = subreddit.strip()
    sub = sub if sub.startswith("r/") else f"r/{sub}"
    return f"SUBREDDIT: {sub}\n\nTITLE: {title.strip()}\n\nPOST: {post.strip()}\n\nTL;DR:"


def normalise_prompt(text: str) -> str:
    """Re-render a TL;DR prompt in the canonical layout (whatever spacing its source used)."""
    m = _PROMPT.match(text)
    return render_post(m["sub"], m["title"], m["post"]) if m else text.strip()


def sft_row(row: Row) -> tuple[str, str]:
    """(prompt, summary) of a TL;DR row: ``completion`` (trl-lib/tldr) or ``label`` (OpenAI / CarperAI layout)."""
    key = "completion" if "completion" in row.data else "label"
    if key not in row.data:
        row.fail("missing field 'completion' (or 'label') with the summary")
    return normalise_prompt(row.text("prompt")), row.text(key).strip()


def comparison_row(row: Row) -> PreferencePair | str:
    """A pair from a summarize_from_feedback comparison, or the reason to skip it."""
    info, summaries, choice = row.get("info"), row.get("summaries"), row.get("choice")
    if not isinstance(info, dict):
        row.fail(f"field 'info' must be a mapping, got {type(info).__name__}")
    if (
        not isinstance(summaries, list)
        or len(summaries) != 2
        or not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in summaries)
    ):
        row.fail("field 'summaries' must be a list of two {text: ...} entries")
    if choice not in (0, 1):
        row.fail(f"field 'choice' must be 0 or 1, got {choice!r}")
    if not info.get("post"):
        return "not a Reddit post (CNN/DM article)"
    chosen, rejected = summaries[choice]["text"].strip(), summaries[1 - choice]["text"].strip()
    if not chosen or not rejected or chosen == rejected:
        return "empty or identical summaries"
    return PreferencePair(
        render_post(info.get("subreddit") or "", info.get("title") or "", info["post"]), chosen, rejected
    )


def truncate_article(text: str, max_chars: int) -> str:
    """Cut an article near ``max_chars`` at the last sentence end (or space) before it."""
    text = " ".join(text.split())
    if not max_chars or len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = max(head.rfind(". "), head.rfind("? "), head.rfind("! "))
    return head[: cut + 1] if cut >= max_chars // 2 else head[: head.rfind(" ")].rstrip() + " ..."


def _pairs_from(rows: list[Row], skipped: Counter, label: str) -> list[PreferencePair]:
    out = []
    for row in rows:
        parsed = comparison_row(row)
        if isinstance(parsed, str):
            skipped[f"{label}: {parsed}"] += 1
        else:
            out.append(parsed)
    return out


def load_parts(seed: int, data_dir, revisions) -> tuple[dict, dict]:
    """{"sft": [(prompt, summary)], "pairs_train", "pairs_val": [PreferencePair], "test": [prompt]} and notes."""
    check_data_dir(data_dir)
    skipped: Counter = Counter()
    if data_dir and TLDR_SFT["train"].find_local(data_dir) is None:
        path = Path(data_dir).expanduser() / TLDR_EXTRACT
        if not path.is_file():
            raise GilbenchError(
                f"--data-dir {data_dir}: found neither {Path(data_dir).expanduser() / TLDR_SFT['train'].local} (full copy of "
                f"{TLDR_SFT['train'].hub_id}) nor the extract {path}; add one, or drop --data-dir to load trl-lib/tldr and "
                "openai/summarize_from_feedback from the hub"
            )
        source = Source(
            "trl-lib/tldr", "extract", TLDR_EXTRACT, required=("prompt", "label", "openai_ppo_1.3b_response")
        )
        rows, prov = load_rows(source, data_dir)
        prov.update(hub="(local extract of the filtered TL;DR)", split="extract", revision=None)
        items = [
            (normalise_prompt(r.text("prompt")), r.text("label").strip(), r.text("openai_ppo_1.3b_response").strip())
            for r in rows
        ]
        fractions = (0.8, 0.1, 0.1)
        train_k, val_k, test_k = split_keys([p for p, _, _ in items], fractions, seed, "tldr")

        def pairs(keys):
            return [PreferencePair(p, label, ppo) for p, label, ppo in items if p in keys and label != ppo]

        parts = {
            "sft": [(p, label) for p, label, _ in items if p in train_k],
            "pairs_train": pairs(train_k),
            "pairs_val": pairs(val_k),
            "test": [p for p, _, _ in items if p in test_k],
        }
        notes = {
            "sources": [prov],
            "split": {
                "seed": seed,
                "how": f"{TLDR_EXTRACT} split by prompt with Random('tldr:{seed}'), "
                f"fractions train/validation/test {fractions}",
                "prompts": {"train": len(train_k), "validation": len(val_k), "test": len(test_k)},
            },
            "pairs": "LOCAL STAND-IN for the human comparisons of openai/summarize_from_feedback: chosen = the human TL;DR (label), "
            "rejected = the openai_ppo_1.3b_response summary of the same post",
        }
    else:
        sft_train, prov_a = load_rows(TLDR_SFT["train"], data_dir, revisions)
        sft_test, prov_b = load_rows(TLDR_SFT["test"], data_dir, revisions)
        cmp_train, prov_c = load_rows(COMPARISONS["train"], data_dir, revisions)
        cmp_val, prov_d = load_rows(COMPARISONS["validation"], data_dir, revisions)
        parts = {
            "sft": [sft_row(r) for r in sft_train],
            "test": [sft_row(r)[0] for r in sft_test],
            "pairs_train": _pairs_from(cmp_train, skipped, "comparisons/train"),
            "pairs_val": _pairs_from(cmp_val, skipped, "comparisons/validation"),
        }
        notes = {
            "sources": [prov_a, prov_b, prov_c, prov_d],
            "split": {
                "seed": seed,
                "how": "the real splits: trl-lib/tldr train (SFT, RL prompts) "
                "and test (id:test); summarize_from_feedback comparisons train (pairs) and validation (held-out pairs)",
            },
            "pairs": "human comparisons of openai/summarize_from_feedback (Reddit posts only)",
        }
    notes["skipped"] = dict(skipped)
    return parts, notes


def load_cnndm(seed: int, data_dir, revisions, max_article_chars: int, template: str) -> tuple[EvalSplit, dict]:
    rows, prov = load_rows(CNNDM, data_dir, revisions)
    if prov["from"] == "local":
        prov["note"] = (
            "the local file's articles as they are, whichever split they were taken from (../shared/data: the first 200 train articles)"
        )
    texts = []
    for row in rows:
        article = row.text("article")
        if (
            row.get("article_truncated") is not True
        ):  # the local extract flags articles it already cut near 2,000 characters
            article = truncate_article(article, max_article_chars)
        try:
            texts.append(template.format(article=" ".join(article.split())))
        except (KeyError, IndexError, ValueError) as e:
            raise GilbenchError(
                f"tldr-ood: ood_template must contain {{article}} and no other fields, got {template!r} ({e})"
            ) from None
    texts = shuffled(unique_by(texts, lambda t: t), seed, "tldr:cnndm")
    prompts = [Prompt(text_id("cnndm", t), t, "cnndm") for t in texts]
    return EvalSplit("ood:cnndm", "ood", prompts, "CNN/DailyMail 3.0.0 news articles in the TL;DR layout"), prov


def build_task(
    name: str, parts: dict, notes: dict, seed: int, limit: int | None, max_val_pairs: int, ood: list[EvalSplit]
) -> TaskData:
    test = unique_by(parts["test"], lambda t: t)
    eval_texts = set(test) | {p.text.strip() for s in ood for p in s.prompts}
    before = len(parts["sft"]) + len(parts["pairs_train"]) + len(parts["pairs_val"])
    sft = [(p, s) for p, s in parts["sft"] if p not in eval_texts and s]
    pairs_train = [x for x in parts["pairs_train"] if x.prompt not in eval_texts]
    pairs_val = [x for x in parts["pairs_val"] if x.prompt not in eval_texts]
    notes["removed_for_leakage"] = before - len(sft) - len(pairs_train) - len(pairs_val)
    sft = shuffled(unique_by(sft, lambda x: x[0] + "\x00" + x[1]), seed, f"{name}:sft")
    rl = unique_by([Prompt(text_id("tldr", p), p) for p, _ in sft], lambda x: x.text)
    val_cap = min([x for x in (limit, max_val_pairs) if x], default=None)
    splits = [
        EvalSplit(
            "id:test",
            "id",
            cap([Prompt(text_id("tldr", t), t) for t in shuffled(test, seed, f"{name}:test")], limit),
            "held-out Reddit TL;DR posts",
        )
    ]
    splits += [EvalSplit(s.name, s.distribution, cap(s.prompts, limit), s.description) for s in ood]
    data = TaskData(
        name=name,
        rl_prompts=cap(rl, limit),
        sft=cap([SFTExample(p, s) for p, s in sft], limit),
        pairs_train=cap(shuffled(pairs_train, seed, f"{name}:pairs"), limit),
        pairs_val=cap(shuffled(pairs_val, seed, f"{name}:val"), val_cap),
        eval_splits=splits,
        prompt_format="plain",
        notes=notes,
    )
    notes["prompt_text"] = (
        "SUBREDDIT: r/<sub>\\n\\nTITLE: <title>\\n\\nPOST: <post>\\n\\nTL;DR: (plain; the summary follows after a space)"
    )
    notes["counts"] = data.sizes()
    return data


def load_tldr(
    seed: int = 0,
    limit: int | None = None,
    data_dir: str | None = None,
    max_val_pairs: int = 2000,
    revisions: dict | None = None,
) -> TaskData:
    """Reddit TL;DR: SFT on human summaries, RL on posts, pairs from summarize-from-feedback comparisons; id:test."""
    parts, notes = load_parts(seed, data_dir, revisions)
    return build_task("tldr", parts, notes, seed, limit, max_val_pairs, [])


def load_tldr_ood(
    seed: int = 0,
    limit: int | None = None,
    data_dir: str | None = None,
    max_val_pairs: int = 2000,
    revisions: dict | None = None,
    max_ood_prompts: int = 1000,
    max_article_chars: int = 2048,
    ood_template: str = DEFAULT_OOD_TEMPLATE,
) -> TaskData:
    """TL;DR training data plus CNN/DailyMail articles as OOD summarisation prompts (ood:cnndm)."""
    parts, notes = load_parts(seed, data_dir, revisions)
    cnndm, prov = load_cnndm(seed, data_dir, revisions, max_article_chars, ood_template)
    cnndm.prompts = cap(cnndm.prompts, max_ood_prompts)
    notes["ood_sources"] = {"ood:cnndm": prov | {"template": ood_template, "max_article_chars": max_article_chars}}
    return build_task("tldr-ood", parts, notes, seed, limit, max_val_pairs, [cnndm])
