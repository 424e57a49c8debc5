"""``gilbench export``: a run's generations in the layouts other evaluators read.

    gilbench export --run results/runs/chitchat-ood/gil/seed0 --name alpaca_eval --format alpaca-eval
    gilbench export --run results/runs/chitchat-ood/gil/seed0 --name arena_questions --format arena-hard

* ``alpaca-eval``: ``model_outputs.json``, a JSON list of ``{"instruction", "output", "generator", "dataset"}``
  (``dataset`` from the prompt file's own field, else the group, else the split), in the prompt file's order;
* ``arena-hard``: ``<generator>.jsonl``, one answer per line: ``{"question_id", "answer_id", "model_id",
  "choices": [{"index": 0, "turns": [{"content"}]}], "tstamp"}``; ``tstamp`` is the generation file's
  modification time, ``answer_id`` a hash of (model, question, answer), so the export is reproducible.

Default output folder: ``RUN_DIR/exports/<NAME>/``. The generator name defaults to ``<method>-seed<k>``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.files import atomic_write_text

FORMATS = ("alpaca-eval", "arena-hard")


def read_generation_file(run: Path, name: str) -> tuple[Path, list[dict]]:
    path = run / "generations" / f"{name.replace(':', '_')}.jsonl"
    if not path.exists():
        have = sorted(p.stem for p in (run / "generations").glob("*.jsonl"))
        raise GilbenchError(
            f"{path} does not exist; this run has generations {', '.join(have) or 'none'} "
            f"(make one with `gilbench generate --run {run} --prompts FILE`)"
        )
    return path, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def alpaca_eval_outputs(rows: list[dict], generator: str) -> list[dict]:
    out = []
    for r in rows:
        dataset = (r.get("source") or {}).get("dataset") or r.get("group") or r["split"]
        out.append({"instruction": r["prompt"], "output": r["response"], "generator": generator, "dataset": dataset})
    return out


def arena_hard_answers(rows: list[dict], generator: str, tstamp: float) -> list[dict]:
    out = []
    for r in rows:
        answer_id = hashlib.sha256(json.dumps([generator, r["id"], r["response"]]).encode()).hexdigest()[:22]
        out.append(
            {
                "question_id": r["id"],
                "answer_id": answer_id,
                "model_id": generator,
                "choices": [{"index": 0, "turns": [{"content": r["response"]}]}],
                "tstamp": tstamp,
            }
        )
    return out


def export(
    run: str | Path, name: str, fmt: str, out_dir: str | Path | None = None, generator: str | None = None
) -> Path:
    """Write the export of ``run/generations/NAME.jsonl`` in ``fmt``; returns the file written."""
    if fmt not in FORMATS:
        raise GilbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    run = Path(run).expanduser()
    path, rows = read_generation_file(run, name)
    if not rows:
        raise GilbenchError(f"{path} is empty; nothing to export")
    generator = generator or f"{rows[0].get('method') or run.parent.name}-seed{rows[0].get('seed', 0)}"
    out_dir = Path(out_dir) if out_dir else run / "exports" / name.replace(":", "_")
    if fmt == "alpaca-eval":
        target = out_dir / "model_outputs.json"
        atomic_write_text(target, json.dumps(alpaca_eval_outputs(rows, generator), indent=2, ensure_ascii=False) + "\n")
    else:
        target = out_dir / f"{generator}.jsonl"
        answers = arena_hard_answers(rows, generator, path.stat().st_mtime)
        atomic_write_text(target, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
    return target
