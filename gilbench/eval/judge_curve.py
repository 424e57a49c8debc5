"""``gilbench judge-curve RUN...``: a judge's view of the policy while it trained, for the "score up, judge down" flag.

    gilbench judge-curve results/runs/chitchat-ood/*/seed* --judge gold
    gilbench judge-curve results/runs/hh-ood/gil/seed0 --judge openai:gpt-4o-mini --window 20

Every RL run logs what its policy said at each step (``rollouts.jsonl``, see ``rl.log_rollouts_every``). This pairs
each logged response with a response of the run's *starting* policy (its SFT model) to the same prompt, sampled with
the training settings, judges each pair in both orders, and writes one point per window of logged steps to
``<run>/judge_curve.jsonl``: win / tie / lose of the policy against its starting point, the reward-model score the
policy was trained on, and for score judges (gold, rm) the judge's own mean score (overall, for the starting
policy's responses, and per prompt group). A reward model being gamed shows
as the score rising while the win rate falls; ``gilbench table --spec stability`` flags it and ``gilbench plot``
draws it. The starting policy's responses are generated once per (starting model, prompts, sampling settings) and
cached under ``<output-dir>/cache/reference/<task>-<key>.jsonl`` (small: the committed store keeps them, so judging
a committed run again samples nothing). A run whose stored curve already has this judge, tie policy and
windows over every logged step is skipped (``--overwrite`` judges it again), so a glob over a growing grid only
judges the new runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.files import atomic_write_text, dumps, is_done
from gilbench.store import DEFAULT_OUTPUT_DIR, JUDGE_CURVE, ROLLOUTS


def read_rollouts(run: Path) -> list[dict]:
    path = Path(run) / ROLLOUTS
    if not path.exists():
        raise GilbenchError(
            f"{run} has no {ROLLOUTS}: only RL runs log their samples (runs made before gilbench logged them, "
            f"or with rl.log_rollouts_every=0, have none; rerun them to get a judge curve)"
        )
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise GilbenchError(f"{path}, line {n}: not JSON ({e.msg})") from None
    if not rows:
        raise GilbenchError(f"{path} is empty")
    return rows


def windows(steps: list[int], size: int) -> list[list[int]]:
    """Consecutive logged steps in groups of ``size``; a point is labelled by the last step of its group."""
    if size < 1:
        raise GilbenchError(f"--window must be at least 1, got {size}")
    return [steps[i : i + size] for i in range(0, len(steps), size)]


def window_size(steps: list[int], window: int | None) -> int:
    return window or max(1, math.ceil(len(steps) / 8))  # default: about 8 points a run


def curve_is_current(run: Path, judge_id: str, window: int | None, policy: str) -> bool:
    """A stored curve of this judge and tie policy, with these windows, covering every logged step: nothing to redo
    (a run still training has logged more steps since, and gets a new curve)."""
    path = Path(run) / JUDGE_CURVE
    if not path.exists():
        return False
    try:
        points = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError:
        return False  # a damaged curve is judged again
    steps = sorted({r["step"] for r in read_rollouts(run)})
    expected = [group[-1] for group in windows(steps, window_size(steps, window))]
    return [p.get("step") for p in points] == expected and all(
        p.get("judge") == judge_id and p.get("policy") == policy for p in points
    )


def reference_responses(
    cfg, prompts: list, output_dir: str | Path, log: Callable[[str], None] = print
) -> dict[str, str]:
    """{prompt id: the starting policy's response}, sampled as during training (temperature, top-p, length)."""
    from gilbench import registry
    from gilbench.config import stable_hash
    from gilbench.data.tasks import as_task_spec
    from gilbench.models.presets import load_causal_lm
    from gilbench.pipeline import make_accelerator
    from gilbench.stages.cache import sft_stage, sft_stage_dir
    from gilbench.stages.generate import generate_split, rollout_sampling

    cfg = dataclasses.replace(cfg, output_dir=str(output_dir))
    prompts = sorted(prompts, key=lambda p: p.id)
    rl = cfg.rl
    start = sft_stage_dir(cfg)
    key = stable_hash(
        start.name,
        [(p.id, p.text) for p in prompts],
        rl.max_new_tokens,
        rl.temperature,
        rl.top_p,
        rl.max_prompt_length,
        cfg.seed,
    )
    cache = Path(output_dir) / "cache" / "reference" / f"{cfg.task}-{key}.jsonl"
    if cache.exists():
        return {r["id"]: r["response"] for r in map(json.loads, cache.read_text().splitlines())}
    spec = as_task_spec(registry.tasks.get(cfg.task), cfg.task)
    accelerator = make_accelerator(cfg)
    if not is_done(start):  # the SFT cache is gone (e.g. a fresh clone): rebuild it exactly as the run did
        task = spec.load(seed=cfg.split_seed, limit=cfg.limit or None, data_dir=cfg.data_dir or None)
        sft_stage(cfg, task, accelerator, log)
    log(f"[gilbench] starting policy ({start}) answers {len(prompts)} training prompts")
    policy, tokenizer = load_causal_lm(str(start))
    rows = generate_split(
        policy.to(accelerator.device),
        tokenizer,
        prompts,
        rollout_sampling(rl),
        spec.prompt_format,
        accelerator.device,
        rl.max_prompt_length,
        cfg.seed,
    )
    atomic_write_text(cache, "".join(json.dumps({"id": r["id"], "response": r["response"]}) + "\n" for r in rows))
    return {r["id"]: r["response"] for r in rows}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def judge_curve(
    run: Path,
    judge,
    *,
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    window: int | None = None,
    policy: str = "conservative",
    concurrency: int = 8,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> list[dict]:
    """Judge a run's logged responses against its starting policy's; writes and returns the curve (one dict per window)."""
    from gilbench.data.types import Prompt
    from gilbench.eval.compare import run_judging
    from gilbench.eval.judges import ScoreJudge
    from gilbench.eval.runs import load_run_config

    run = Path(run)
    rows, cfg = read_rollouts(run), load_run_config(run)
    steps = sorted({r["step"] for r in rows})
    size = window_size(steps, window)
    prompts = {r["prompt_id"]: Prompt(r["prompt_id"], r["prompt"], r.get("group")) for r in rows}
    refs = reference_responses(cfg, list(prompts.values()), output_dir, log)
    items = []
    for r in rows:
        mine, theirs = r["response"].strip(), refs[r["prompt_id"]]
        items.append(
            {
                "id": r["prompt_id"],
                "step": r["step"],
                "prompt": r["prompt"],
                "response_a": mine,
                "response_b": theirs,
                "identical": mine == theirs,
                "split": "train",
                "seed": cfg.seed,
                "rm_score": r["score"],
                "group": r.get("group"),
            }
        )
    records = run_judging(judge, items, policy, concurrency, progress=progress)
    curve = []
    for group in windows(steps, size):
        recs = [r for r in records if r["step"] in group]
        point = {
            "step": group[-1],
            "first_step": group[0],
            "n": len(recs),
            "invalid": sum(r["outcome"] == "invalid" for r in recs),
            "win": _mean([r["win"] for r in recs]),
            "tie": _mean([r["tie"] for r in recs]),
            "lose": _mean([r["lose"] for r in recs]),
            "rm_score": _mean([r["rm_score"] for r in recs]),
            "judge": judge.id,
            "policy": policy,
        }
        if isinstance(judge, ScoreJudge):
            point["judge_score"] = _mean([judge.score(r["prompt"], r["response_a"]) for r in recs])
            point["reference_judge_score"] = _mean([judge.score(r["prompt"], r["response_b"]) for r in recs])
            groups = sorted({r["group"] for r in recs if r.get("group")})
            if len(groups) > 1:  # the gold per prompt group: does the gap between easy and hard groups persist?
                point["judge_score_groups"] = {
                    g: _mean([judge.score(r["prompt"], r["response_a"]) for r in recs if r.get("group") == g])
                    for g in groups
                }
        curve.append(point)
    atomic_write_text(run / JUDGE_CURVE, "".join(dumps(p, sort_keys=True) + "\n" for p in curve))
    return curve
