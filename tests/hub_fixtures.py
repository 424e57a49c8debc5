"""Small files in the public layouts of HH-RLHF, TL;DR, CNN/DM and the OOD stand-ins, written in a temporary
folder for the hub-task tests (never ../shared)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from gilbench import registry
from gilbench.data.tasks import as_task_spec


def transcript(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{role}: {text}" for role, text in turns)


def hh_rows(subset: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 2:  # multi-turn
            context = [
                ("Human", f"{subset} question {i}?"),
                ("Assistant", f"Earlier answer {i}."),
                ("Human", f"And a follow-up {i}?"),
            ]
        else:
            context = [("Human", f"{subset} question {i}?")]
        rows.append(
            {
                "chosen": transcript(context + [("Assistant", f"good reply {i}")]),
                "rejected": transcript(context + [("Assistant", f"bad reply {i}")]),
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def tldr_prompt(i: int) -> str:
    return f"SUBREDDIT: r/test{i % 3}\n\nTITLE: Title number {i}\n\nPOST: This is post {i}. It has some text.\n\nTL;DR:"


def make_data_dir(root: Path, n_hh: int = 30, n_tldr: int = 40) -> Path:
    """A --data-dir shaped like ../shared/data: HH test files only, the TL;DR extract and the OOD files."""
    for subset in ("harmless-base", "helpful-base"):
        write_jsonl(root / f"hh-rlhf/{subset}/test.jsonl.gz", hh_rows(subset, n_hh), gz=True)
    write_jsonl(
        root / "tldr/tldr-1945.jsonl",
        [
            {"prompt": tldr_prompt(i), "label": f" human summary {i}", "openai_ppo_1.3b_response": f"ppo summary {i}"}
            for i in range(n_tldr)
        ],
    )
    long = "First sentence here. " * 150
    write_jsonl(
        root / "ood/cnndm-200.jsonl",
        [
            {"article": f"Article {i} says things. More text.", "highlights": "h", "article_truncated": False}
            for i in range(6)
        ]
        + [
            {"article": "Already cut " + long[:2000] + "...", "highlights": "h", "article_truncated": True},
            {"article": "Too long " + long, "highlights": "h", "article_truncated": False},
        ],
    )
    (root / "ood").mkdir(parents=True, exist_ok=True)
    with (root / "ood/beavertails-140.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "category"])
        for i in range(8):
            w.writerow([f"How do I do harmful thing {i}?", "Some,\nmulti-line response", "violence"])
    write_jsonl(
        root / "ood/mt-bench-80.jsonl",
        [
            {"question_id": 81 + i, "category": "writing", "turns": [f"Write a poem about {i}.", "Now shorter."]}
            for i in range(5)
        ],
    )
    write_jsonl(
        root / "ood/vicuna-80.jsonl",
        [{"question_id": 1 + i, "category": "generic", "turns": [f"How can I improve skill {i}?"]} for i in range(4)],
    )
    return root


def load(task: str, **kw):
    return as_task_spec(registry.tasks.get(task), task).load(**kw)


def all_train_texts(data):
    return {p.text for p in data.rl_prompts} | {e.prompt for e in data.sft} | {p.prompt for p in data.pairs_train}
