"""The ``hh`` and ``hh-ood`` tasks: Anthropic HH-RLHF (harmless-base + helpful-base), as in the GIL paper.

Rows are pairs of full transcripts (``chosen``, ``rejected``) in the form
"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: <final reply>". A row becomes:

- prompt: the dialogue before the last "Assistant:" turn. Single-turn: the human message itself.
  Multi-turn: the earlier turns are kept as labelled text, "Human: q1\\n\\nAssistant: a1\\n\\nHuman: q2",
  so the whole context is one user message: with ``prompt_format: chat`` (the task's default) a chat
  template gets it as the user turn and the fallback gives "User: <text>\\nAssistant:"; with ``plain``
  the policy continues the transcript text.
- chosen / rejected: the final assistant replies. group: ``harmless`` or ``helpful`` (the subset's prefix).

Rows are skipped (and counted in ``notes["skipped"]``) when a transcript does not end with an assistant
reply, a reply is empty, or chosen and rejected disagree on the dialogue before the final reply; pairs
with identical replies are kept for SFT but not as preference pairs. A row with a missing / non-string
field or no "Human:" turn at all is an error naming the file and line.

Splits. Hub (default): the real ``train`` split, of which ``val_fraction`` of the prompts (seeded) are
held out as validation pairs, and the real ``test`` split for the ``id:test`` prompts. ``--data-dir``
with ``hh-rlhf/<subset>/train.jsonl.gz`` present: the same. ``--data-dir`` with only
``hh-rlhf/<subset>/test.jsonl.gz`` (e.g. ../shared/data): each subset's test file is split by prompt
into train / validation / test (1 - val - test, ``val_fraction``, ``test_fraction``) with
Random("hh:<subset>:<seed>"), and the split is recorded in ``notes["split"]``. Any training or
validation row whose prompt is also an eval prompt is dropped (counted in ``notes``).

RL prompts are the distinct training prompts; SFT is (prompt, chosen reply) of the training rows; every
list is shuffled by the seed and interleaved round-robin over the groups, so ``limit`` keeps both.

``hh-ood`` adds OOD prompts: harmlessness from PKU-SafeRLHF (hub test split; ``--data-dir``:
``PKU-SafeRLHF/test.jsonl`` if present, else the BeaverTails extract ``ood/beavertails-140.csv`` as a
stand-in, named ``ood:beavertails``), helpfulness from MT-bench turn 1 (``ood:mt-bench``; hub
HuggingFaceH4/mt_bench_prompts, local ``ood/mt-bench-80.jsonl`` in FastChat's question.jsonl layout)
or, with option ``helpful_ood: vicuna``, the Vicuna questions (local ``ood/vicuna-80.jsonl`` only).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gilbench.data.hub import (
    Row,
    Source,
    cap,
    check_data_dir,
    interleave,
    load_rows,
    read_local_file,
    shuffled,
    split_keys,
    text_id,
    unique_by,
)
from gilbench.data.types import EvalSplit, PreferencePair, Prompt, SFTExample, TaskData
from gilbench.errors import GilbenchError

HH_ID = "Anthropic/hh-rlhf"
HH_REVISION = "main"
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
DEFAULT_SUBSETS = ("harmless-base", "helpful-base")

PKU_SAFERLHF = Source("PKU-Alignment/PKU-SafeRLHF", "test", "PKU-SafeRLHF/test.jsonl", required=("prompt",))
BEAVERTAILS_STANDIN = (
    "ood/beavertails-140.csv"  # local stand-in for PKU-SafeRLHF: BeaverTails prompts (prompt, response, category)
)
MT_BENCH = Source("HuggingFaceH4/mt_bench_prompts", "train", "ood/mt-bench-80.jsonl")
VICUNA_LOCAL = "ood/vicuna-80.jsonl"  # FastChat's Vicuna questions (question_id, category, turns | text); no hub source

_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_source(subset: str, split: str) -> Source:
    return Source(
        HH_ID,
        split,
        f"hh-rlhf/{subset}/{split}.jsonl.gz",
        hub_data_dir=subset,
        revision=HH_REVISION,
        required=("chosen", "rejected"),
    )


def sources(subsets=DEFAULT_SUBSETS) -> list[Source]:
    return [hh_source(s, split) for s in subsets for split in ("train", "test")]


@dataclass(frozen=True)
class HHRow:
    group: str
    prompt: str
    chosen: str
    rejected: str


def parse_transcript(text: str, row: Row, field: str) -> list[tuple[str, str]]:
    """[(role, message)] of a "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript."""
    body = text if text.startswith("\n\n") else "\n\n" + text.lstrip("\n")
    parts = _TURN.split(body)
    if len(parts) < 3:
        row.fail(f"field '{field}' is not an HH transcript (no '\\n\\nHuman:' / '\\n\\nAssistant:' turns)")
    if parts[0].strip():
        row.fail(f"field '{field}' has text before its first 'Human:' turn: {parts[0].strip()[:40]!r}")
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def render_dialogue(turns: list[tuple[str, str]]) -> str:
    if len(turns) == 1 and turns[0][0] == "Human":
        return turns[0][1]
    return "\n\n".join(f"{role}: {message}" for role, message in turns)


def parse_hh_row(row: Row, group: str) -> HHRow | str:
    """An HHRow, or the reason to skip the row (a string)."""
    chosen, rejected = (
        parse_transcript(row.text("chosen"), row, "chosen"),
        parse_transcript(row.text("rejected"), row, "rejected"),
    )
    if chosen[-1][0] != "Assistant" or rejected[-1][0] != "Assistant":
        return "no final assistant reply"
    if not chosen[-1][1] or not rejected[-1][1]:
        return "empty final reply"
    if chosen[:-1] != rejected[:-1]:
        return "chosen and rejected differ before the final reply"
    if not chosen[:-1] or not any(role == "Human" and msg for role, msg in chosen[:-1]):
        return "no human turn before the reply"
    return HHRow(group, render_dialogue(chosen[:-1]), chosen[-1][1], rejected[-1][1])


def read_hh(source: Source, group: str, data_dir, revisions, skipped: Counter) -> tuple[list[HHRow], dict]:
    rows, provenance = load_rows(source, data_dir, revisions)
    out = []
    for row in rows:
        parsed = parse_hh_row(row, group)
        if isinstance(parsed, str):
            skipped[f"{source.hub_data_dir}/{source.split}: {parsed}"] += 1
        else:
            out.append(parsed)
    return out, provenance


def load_hh_parts(
    seed: int, data_dir, subsets, val_fraction: float, test_fraction: float, revisions
) -> tuple[dict, dict]:
    """{group: {"train"|"validation"|"test": [HHRow]}} and the notes describing where they came from."""
    check_data_dir(data_dir)
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown or not subsets:
        raise GilbenchError(f"hh: unknown subset(s) {unknown or subsets}; choose from {list(SUBSETS)}")
    parts: dict[str, dict[str, list[HHRow]]] = {}
    provenance, split_notes, skipped = [], {}, Counter()
    for subset in subsets:
        group = subset.split("-")[0]
        train_src, test_src = hh_source(subset, "train"), hh_source(subset, "test")
        if data_dir and train_src.find_local(data_dir) is None and test_src.find_local(data_dir) is not None:
            rows, prov = read_hh(test_src, group, data_dir, revisions, skipped)
            provenance.append(prov)
            fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
            keys = split_keys([r.prompt for r in rows], fractions, seed, f"hh:{subset}")
            by_part = {
                name: [r for r in rows if r.prompt in k]
                for name, k in zip(("train", "validation", "test"), keys, strict=True)
            }
            how = f"the {subset} test file split by prompt with Random('hh:{subset}:{seed}'), fractions train/validation/test {fractions}"
        else:
            train_rows, prov_train = read_hh(train_src, group, data_dir, revisions, skipped)
            test_rows, prov_test = read_hh(test_src, group, data_dir, revisions, skipped)
            provenance += [prov_train, prov_test]
            keys = split_keys([r.prompt for r in train_rows], (1 - val_fraction, val_fraction), seed, f"hh:{subset}")
            by_part = {
                "train": [r for r in train_rows if r.prompt in keys[0]],
                "validation": [r for r in train_rows if r.prompt in keys[1]],
                "test": test_rows,
            }
            how = f"the real train/test splits; validation = {val_fraction} of the train prompts, Random('hh:{subset}:{seed}')"
        for name, rows in by_part.items():
            parts.setdefault(group, {}).setdefault(name, []).extend(rows)
        split_notes[subset] = {
            "how": how,
            "rows": {name: len(rows) for name, rows in by_part.items()},
            "prompts": {name: len({r.prompt for r in rows}) for name, rows in by_part.items()},
        }
    notes = {"sources": provenance, "split": {"seed": seed, "subsets": split_notes}, "skipped": dict(skipped)}
    return parts, notes


def drop_prompts(parts: dict, texts: set[str], names=("train", "validation")) -> int:
    """Remove rows whose prompt is an eval prompt; returns how many were removed."""
    removed = 0
    for by_part in parts.values():
        for name in names:
            kept = [r for r in by_part.get(name, []) if r.prompt.strip() not in texts]
            removed += len(by_part.get(name, [])) - len(kept)
            by_part[name] = kept
    return removed


def build_task(
    name: str, parts: dict, notes: dict, seed: int, limit: int | None, max_val_pairs: int, ood: list[EvalSplit]
) -> TaskData:
    eval_texts = {r.prompt.strip() for by_part in parts.values() for r in by_part["test"]} | {
        p.text.strip() for s in ood for p in s.prompts
    }
    notes["removed_for_leakage"] = drop_prompts(parts, eval_texts)

    def mixed(part: str, salt: str) -> list[HHRow]:
        return interleave({g: shuffled(by_part[part], seed, f"hh:{salt}:{g}") for g, by_part in parts.items()})

    train = mixed("train", "train")
    rl = unique_by([Prompt(text_id("hh", r.prompt), r.prompt, r.group) for r in train], lambda p: p.text.strip())
    sft = unique_by([SFTExample(r.prompt, r.chosen) for r in train], lambda e: e.prompt + "\x00" + e.response)
    pairs = [
        PreferencePair(r.prompt, r.chosen, r.rejected, r.group) for r in train if r.chosen.strip() != r.rejected.strip()
    ]
    val = [
        PreferencePair(r.prompt, r.chosen, r.rejected, r.group)
        for r in mixed("validation", "val")
        if r.chosen.strip() != r.rejected.strip()
    ]
    test = unique_by(
        [Prompt(text_id("hh", r.prompt), r.prompt, r.group) for r in mixed("test", "test")], lambda p: p.text.strip()
    )
    val_cap = min([x for x in (limit, max_val_pairs) if x], default=None)
    splits = [EvalSplit("id:test", "id", cap(test, limit), "held-out HH-RLHF prompts (harmless-base + helpful-base)")]
    splits += [EvalSplit(s.name, s.distribution, cap(s.prompts, limit), s.description) for s in ood]
    data = TaskData(
        name=name,
        rl_prompts=cap(rl, limit),
        sft=cap(sft, limit),
        pairs_train=cap(pairs, limit),
        pairs_val=cap(val, val_cap),
        eval_splits=splits,
        prompt_format="chat",
        notes=notes,
    )
    notes["prompt_text"] = (
        "single-turn: the human message; multi-turn: 'Human: ...\\n\\nAssistant: ...\\n\\nHuman: ...', the dialogue "
        "before the last Assistant turn with its labels; chosen/rejected: the final assistant replies"
    )
    groups = {
        k: dict(Counter(p.group for p in v))
        for k, v in (("rl_prompts", data.rl_prompts), ("id:test", data.eval_splits[0].prompts))
    }
    notes["counts"] = data.sizes() | {"groups": groups}
    return data


def load_hh(
    seed: int = 0,
    limit: int | None = None,
    data_dir: str | None = None,
    subsets: list[str] | tuple[str, ...] = DEFAULT_SUBSETS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_val_pairs: int = 2000,
    revisions: dict | None = None,
) -> TaskData:
    """Anthropic HH-RLHF harmless-base + helpful-base: RL prompts, SFT on chosen replies, preference pairs; id:test."""
    parts, notes = load_hh_parts(seed, data_dir, list(subsets), val_fraction, test_fraction, revisions)
    return build_task("hh", parts, notes, seed, limit, max_val_pairs, [])


# ---------------------------------------------------------------------------- OOD prompt sets


def _ood_split(name: str, prefix: str, group: str, rows: list[Row], get_text, description: str, seed: int) -> EvalSplit:
    texts = unique_by([t.strip() for t in (get_text(r) for r in rows) if t and t.strip()], lambda t: t)
    prompts = [Prompt(text_id(prefix, t), t, group) for t in shuffled(texts, seed, name)]
    return EvalSplit(name, "ood", prompts, description)


def first_turn(row: Row) -> str:
    """Turn 1 of an MT-bench / Vicuna question: ``turns`` (FastChat), ``prompt`` (HF H4) or ``text``."""
    for key in ("turns", "prompt"):
        value = row.get(key)
        if isinstance(value, list):
            if not value or not isinstance(value[0], str):
                row.fail(f"field '{key}' must be a non-empty list of strings")
            return value[0]
    if isinstance(row.get("text"), str):
        return row.text("text")
    row.fail("missing field 'turns' (or 'prompt' / 'text') with the question")


def load_harmless_ood(seed: int, data_dir, revisions) -> tuple[EvalSplit, dict]:
    if data_dir and PKU_SAFERLHF.find_local(data_dir) is None:
        path = Path(data_dir).expanduser() / BEAVERTAILS_STANDIN
        if not path.is_file():
            raise GilbenchError(
                f"--data-dir {data_dir}: neither {Path(data_dir).expanduser() / PKU_SAFERLHF.local} (PKU-SafeRLHF) nor the "
                f"stand-in {path} (BeaverTails extract) exists; add one, or drop --data-dir to load {PKU_SAFERLHF.hub_id} from the hub"
            )
        rows = list(read_local_file(path))
        split = _ood_split(
            "ood:beavertails",
            "beavertails",
            "harmless",
            rows,
            lambda r: r.text("prompt"),
            "STAND-IN for PKU-SafeRLHF: BeaverTails prompts (PKU-Alignment's sibling safety set), local extract",
            seed,
        )
        return split, {"from": "local", "path": str(path), "stand_in_for": PKU_SAFERLHF.hub_id, "rows": len(rows)}
    rows, prov = load_rows(PKU_SAFERLHF, data_dir, revisions)
    return _ood_split(
        "ood:pku-saferlhf",
        "pku",
        "harmless",
        rows,
        lambda r: r.text("prompt"),
        "PKU-SafeRLHF test prompts (harmlessness)",
        seed,
    ), prov


def load_helpful_ood(seed: int, data_dir, revisions, which: str) -> tuple[EvalSplit, dict]:
    if which == "mt-bench":
        rows, prov = load_rows(MT_BENCH, data_dir, revisions)
        return _ood_split(
            "ood:mt-bench", "mtbench", "helpful", rows, first_turn, "MT-bench questions, turn 1 (helpfulness)", seed
        ), prov
    if which == "vicuna":
        if not data_dir:
            raise GilbenchError(
                f"hh-ood helpful_ood=vicuna: the Vicuna questions have no hub source here; pass --data-dir DIR with {Path('<DIR>') / VICUNA_LOCAL}, "
                "or use helpful_ood=mt-bench"
            )
        path = Path(data_dir).expanduser() / VICUNA_LOCAL
        if not path.is_file():
            raise GilbenchError(
                f"--data-dir {data_dir}: {path} not found (Vicuna questions, FastChat question.jsonl layout)"
            )
        rows = list(read_local_file(path))
        return _ood_split(
            "ood:vicuna", "vicuna", "helpful", rows, first_turn, "Vicuna benchmark questions (helpfulness)", seed
        ), {"from": "local", "path": str(path), "rows": len(rows)}
    raise GilbenchError(f"hh-ood: helpful_ood must be mt-bench or vicuna, got {which!r}")


def load_hh_ood(
    seed: int = 0,
    limit: int | None = None,
    data_dir: str | None = None,
    subsets: list[str] | tuple[str, ...] = DEFAULT_SUBSETS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_val_pairs: int = 2000,
    revisions: dict | None = None,
    helpful_ood: str = "mt-bench",
) -> TaskData:
    """HH-RLHF training data plus OOD prompts: PKU-SafeRLHF (harmless; BeaverTails stand-in locally) and MT-bench (helpful)."""
    parts, notes = load_hh_parts(seed, data_dir, list(subsets), val_fraction, test_fraction, revisions)
    harmless, prov_h = load_harmless_ood(seed, data_dir, revisions)
    helpful, prov_p = load_helpful_ood(seed, data_dir, revisions, helpful_ood)
    notes["ood_sources"] = {harmless.name: prov_h, helpful.name: prov_p}
    return build_task("hh-ood", parts, notes, seed, limit, max_val_pairs, [harmless, helpful])
