"""``gilbench generate``: sample a finished run's policy (or a baseline model) on any prompt file.

    gilbench generate --run results/runs/chitchat-ood/gil/seed0 --prompts my_prompts.jsonl
    gilbench generate --model tiny --like results/runs/chitchat-ood/gil/seed0 --run results/runs/chitchat-ood/base-tiny/seed0 --prompts my_prompts.jsonl

Writes ``RUN_DIR/generations/NAME.jsonl`` (NAME: ``--name``, default the prompt file's stem), one row per prompt in the
layout of the eval stage's files (``split`` = NAME), so ``gilbench compare`` pairs it with every other run that answered
the same file. Rows are appended to ``NAME.jsonl.partial`` batch by batch (each batch seeded on its own), so a killed
call resumes where it stopped and gives the same samples; the finished file is renamed into place and reused.

Prompt files: jsonl (one object a line with ``prompt`` or ``instruction``, or Arena-Hard's ``turns``), csv (a
``prompt`` or ``instruction`` column), parquet, or json (a list of such objects: AlpacaEval's layout). Optional fields: ``id``
(or ``question_id``), ``group`` (or ``category`` / ``dataset``); other fields are kept under ``source``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.files import atomic_write_json, atomic_write_text, read_json

TEXT_FIELDS = ("prompt", "instruction")
ID_FIELDS = ("id", "question_id")
GROUP_FIELDS = ("group", "category", "dataset")


def _prompt_text(record: dict) -> str | None:
    for key in TEXT_FIELDS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    turns = record.get("turns")  # Arena-Hard question files: the first user turn
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and isinstance(turns[0].get("content"), str):
        return turns[0]["content"]
    return None


def read_prompt_file(path: str | Path) -> list[dict]:
    """``[{"id", "text", "group", "source"}]`` from a jsonl, csv or json prompt file, or a one-line error."""
    from gilbench.data.hub import Row, read_local_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise GilbenchError(f"--prompts {path}: no such file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GilbenchError(f"--prompts {path}: not valid JSON ({e})") from None
        if not isinstance(data, list):
            raise GilbenchError(
                f"--prompts {path}: a .json prompt file must hold a list of objects (AlpacaEval's layout)"
            )
        records = [Row(obj if isinstance(obj, dict) else {}, f"{path} item {i}") for i, obj in enumerate(data, 1)]
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".csv", ".parquet")):
        records = list(read_local_file(path))  # the reader task files use: errors name the file and line
    else:
        raise GilbenchError(
            f"--prompts {path}: unknown extension {path.suffix!r}; use .jsonl, .json (AlpacaEval), .csv or .parquet"
        )
    prompts, seen = [], set()
    for row in records:
        record = row.data
        text = _prompt_text(record)
        if text is None:
            raise GilbenchError(f"--prompts {row.where}: no 'prompt' or 'instruction' text field")
        pid = next((str(record[k]) for k in ID_FIELDS if record.get(k) not in (None, "")), str(len(prompts)))
        if pid in seen:
            raise GilbenchError(f"--prompts {row.where}: id {pid!r} appears twice; ids must be unique")
        seen.add(pid)
        group = next((str(record[k]) for k in GROUP_FIELDS if record.get(k) not in (None, "")), None)
        source = {k: v for k, v in record.items() if k not in TEXT_FIELDS + ID_FIELDS + ("turns",)}
        prompts.append({"id": pid, "text": text, "group": group, "source": source})
    if not prompts:
        raise GilbenchError(f"--prompts {path}: no prompts in it")
    return prompts


def prompts_digest(prompts: list[dict]) -> str:
    return hashlib.sha256(json.dumps([[p["id"], p["text"]] for p in prompts]).encode()).hexdigest()[:16]


def _settings(run: Path, like: Path | None, model: str | None, seed: int | None) -> dict:
    """Policy folder, generation config, prompt format, seed, method name and reward model of this call."""
    from gilbench import registry
    from gilbench.config import RunConfig
    from gilbench.data.tasks import as_task_spec
    from gilbench.eval.runs import load_run_config
    from gilbench.lm_eval_bridge import policy_folder

    reference = like or (None if model else run)
    cfg = load_run_config(reference) if reference else RunConfig()
    if model:
        policy, method = model, run.parent.name
    else:
        policy, method = str(policy_folder(run).resolve()), cfg.method
    prompt_format = as_task_spec(registry.tasks.get(cfg.task), cfg.task).prompt_format if reference else "chat"
    return {
        "policy": policy,
        "method": method,
        "cfg": cfg,
        "prompt_format": prompt_format,
        "seed": cfg.seed if seed is None else seed,
        "reward_run": reference,
    }


def _reward_scorer(reward_run: Path | None, output_dir: str, device):
    if reward_run is None:
        return None
    from gilbench.eval.runs import reward_model_dir
    from gilbench.models.presets import load_sequence_classifier
    from gilbench.models.reward import RewardScorer

    path, max_length = reward_model_dir(reward_run, output_dir)
    model, tokenizer = load_sequence_classifier(str(path))
    return RewardScorer(model.to(device).eval(), tokenizer, max_length)


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def generate(
    run: str | Path,
    prompts_file: str | Path,
    name: str | None = None,
    model: str | None = None,
    like: str | Path | None = None,
    seed: int | None = None,
    device: str = "auto",
    limit: int | None = None,
    log=print,
) -> Path:
    """Sample, score and write ``run/generations/NAME.jsonl``; returns its path (cached: returned at once)."""
    from gilbench.data.types import Prompt
    from gilbench.models.presets import load_causal_lm
    from gilbench.pipeline import quiet_transformers
    from gilbench.stages.generate import generate_split

    run = Path(run).expanduser()
    like = Path(like).expanduser() if like else None
    name = name or Path(prompts_file).stem
    if not name or "/" in name or name.startswith(".") or ":" in name:
        raise GilbenchError(f"--name {name!r}: use a plain file name (letters, digits, - and _)")
    prompts = read_prompt_file(prompts_file)[: limit or None]
    if not model and not (run / "config.yaml").exists():
        raise GilbenchError(
            f"--run {run}: not a gilbench run folder (no config.yaml); to sample a baseline model give --model PRESET_OR_FOLDER"
        )
    settings = _settings(run, like, model, seed)
    cfg = settings["cfg"]
    out = run / "generations" / f"{name}.jsonl"
    meta_path = run / "generations" / f".{name}.meta.json"
    eval_stage_file = out.exists() and not meta_path.exists()
    if (
        eval_stage_file
        or settings["reward_run"] is not None
        and name in {s.replace(":", "_") for s in _eval_split_names(cfg)}
    ):
        raise GilbenchError(
            f"--name {name}: the task's eval split already writes generations/{name}.jsonl; pick another --name"
        )
    meta = {
        "prompts_file": str(Path(prompts_file).expanduser().resolve()),
        "prompts_sha": prompts_digest(prompts),
        "policy": settings["policy"],
        "seed": settings["seed"],
        "generate": vars(cfg.generate) | {"max_prompt_length": cfg.rl.max_prompt_length},
        "prompt_format": settings["prompt_format"],
        "reward_run": str(settings["reward_run"]) if settings["reward_run"] else None,
    }
    if meta_path.exists() and read_json(meta_path) != meta:
        raise GilbenchError(
            f"{out} was made from other prompts or settings ({meta_path}); pass another --name or delete both files"
        )
    if out.exists():
        log(f"[gilbench] generations cached: {out}")
        return out
    atomic_write_json(meta_path, meta)
    partial = out.with_name(out.name + ".partial")
    rows = _read_rows(partial)
    done = {r["id"] for r in rows}
    todo = [p for p in prompts if p["id"] not in done]
    if rows:
        log(f"[gilbench] resuming {out.name}: {len(rows)} of {len(prompts)} prompts already sampled")
    quiet_transformers()
    from gilbench.pipeline import make_accelerator

    cfg.device = device
    device_ = make_accelerator(cfg).device
    policy, tokenizer = load_causal_lm(settings["policy"])
    policy.to(device_)
    scorer = _reward_scorer(settings["reward_run"], cfg.output_dir, device_)
    by_id = {p["id"]: p for p in prompts}
    batch = cfg.generate.batch_size
    order = {p["id"]: i for i, p in enumerate(prompts)}
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        batch_seed = settings["seed"] * 1_000_003 + order[chunk[0]["id"]]  # the same samples whether resumed or not
        new = generate_split(
            policy,
            tokenizer,
            [Prompt(p["id"], p["text"], p["group"]) for p in chunk],
            cfg.generate,
            settings["prompt_format"],
            device_,
            cfg.rl.max_prompt_length,
            batch_seed,
        )
        if scorer is not None:
            for row, score in zip(new, scorer.score([r["prompt"] for r in new], [r["response"] for r in new]).tolist()):
                row["rm_score"] = score
        for row in new:
            row.update(
                split=name,
                distribution="custom",
                method=settings["method"],
                seed=settings["seed"],
                source=by_id[row["id"]]["source"],
            )
        with partial.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in new))
        rows.extend(new)
        log(f"[gilbench] {len(rows)}/{len(prompts)} prompts sampled")
    rows.sort(key=lambda r: order[r["id"]])
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
    partial.unlink(missing_ok=True)
    return out


def _eval_split_names(cfg) -> list[str]:
    from gilbench import registry
    from gilbench.data.tasks import as_task_spec

    return [s["name"] for s in as_task_spec(registry.tasks.get(cfg.task), cfg.task).eval_splits]


def summarise_file(path: Path) -> str:
    rows = _read_rows(path)
    scores = [r["rm_score"] for r in rows if r.get("rm_score") is not None]
    mean_len = sum(r["length"] for r in rows) / max(1, len(rows))
    score = (
        f", reward-model score {sum(scores) / len(scores):+.3f}"
        if scores
        else " (no reward model: give --like RUN to score)"
    )
    return f"{len(rows)} generations, mean length {mean_len:.1f} tokens{score}; written to {path}"
