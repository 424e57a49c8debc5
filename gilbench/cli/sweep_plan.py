"""``gilbench sweep --plan FILE``: a study written down as an ordered list of grids, made and resumed by one command.

    # results/qa-chat-study.yaml
    output_dir: results/runs            # as --output-dir (relative to the folder the command runs in)
    common:                             # what every grid starts from
      tasks: qa-chat
      set: {mixed_precision: bf16}
      judge_curve: qa-chat-gold
      judge_window: 10
    grids:
      - {methods: "ppo,ppo-kl", seeds: 0-2}
      - {methods: ppo-kl, seeds: 0-2, set: {rl.kl_coef: 0.01, variant: kl0.01}}

A grid takes the keys of the sweep's grid flags (GRID_KEYS). Its ``set`` and ``include`` add to the common ones (its
``set`` keys win); any other key replaces the common value. The sweep runs the grids' runs in the file's order, each
run once, skipping finished ones; a run that two grids would make with different configs is refused before anything
runs. ``--output-dir`` on the command line replaces the file's (to replay a study into another store).

``waves``: the order runs start in when several run at once (locally or on Slurm), so that runs sharing a (task, seed)'s
SFT and reward-model caches do not build them twice.
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from gilbench.cli.flags import parse_seeds, split_names
from gilbench.config import read_yaml_mapping
from gilbench.errors import GilbenchError

GRID_KEYS = (
    "methods",
    "tasks",
    "seeds",
    "model",
    "set",
    "limit",
    "config",
    "device",
    "data_dir",
    "include",
    "judge_curve",
    "judge_window",
)
PLAN_KEYS = ("output_dir", "common", "grids")


@dataclass
class Grid:
    """One grid of a sweep: methods x tasks x seeds with the options every one of its runs shares."""

    methods: list[str]
    tasks: list[str]
    seeds: list[int]
    model: str | None = None
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE
    limit: int | None = None
    config: str | None = None
    device: str | None = None
    data_dir: str | None = None
    includes: list[str] = field(default_factory=list)
    judge_curve: str | None = None
    judge_window: int | None = None
    where: str = "the command line"  # for error messages: "grid 2 of results/study.yaml"


def grid_from_args(args: argparse.Namespace) -> Grid:
    if not (args.methods and args.tasks):
        raise GilbenchError("sweep needs --methods and --tasks (or --plan FILE)")
    return Grid(
        split_names(args.methods),
        split_names(args.tasks),
        parse_seeds(args.seeds or "0", "--seeds"),
        args.model,
        list(args.overrides),
        args.limit,
        args.config,
        args.device,
        args.data_dir,
        list(args.include),
        args.judge_curve,
        args.judge_window,
    )


def refuse_grid_flags(args: argparse.Namespace) -> None:
    """With --plan the file holds the grids: a grid flag on the command line would be ambiguous."""
    given = [
        flag
        for flag, value in (
            ("--methods", args.methods),
            ("--tasks", args.tasks),
            ("--seeds", args.seeds),
            ("--model", args.model),
            ("--set", args.overrides),
            ("--limit", args.limit),
            ("--config", args.config),
            ("--device", args.device),
            ("--data-dir", args.data_dir),
            ("--include", args.include),
            ("--judge-curve", args.judge_curve),
            ("--judge-window", args.judge_window),
        )
        if value not in (None, [])
    ]
    if given:
        raise GilbenchError(
            f"--plan {args.plan} holds the grids: drop {', '.join(given)} from the command line (or write them in the "
            "plan's common: or grids:)"
        )


def load_plan(path: str | Path) -> tuple[list[Grid], str | None]:
    """The grids of a plan file, in order, and its output_dir (None if it names none)."""
    path = Path(path)
    doc = read_yaml_mapping(path, "--plan", "pass a plan YAML file (see gilbench sweep --help)")
    if not isinstance(doc.get("grids"), list) or not doc["grids"]:
        raise GilbenchError(f"--plan {path} needs a non-empty list under grids: (see gilbench sweep --help)")
    check_keys(doc, PLAN_KEYS, f"{path}")
    common = doc.get("common") or {}
    if not isinstance(common, dict):
        raise GilbenchError(f"{path}: common: must be a mapping of grid keys ({', '.join(GRID_KEYS)})")
    check_keys(common, GRID_KEYS, f"common: of {path}")
    grids = []
    for n, entry in enumerate(doc["grids"], 1):
        where = f"grid {n} of {path}"
        if not isinstance(entry, dict):
            raise GilbenchError(f"{where} must be a mapping of grid keys ({', '.join(GRID_KEYS)}), got {entry!r}")
        check_keys(entry, GRID_KEYS, where)
        grids.append(grid_from_mapping(merged(common, entry), where))
    output_dir = doc.get("output_dir")
    if output_dir is not None and not isinstance(output_dir, str):
        raise GilbenchError(f"{path}: output_dir must be a folder path, got {output_dir!r}")
    return grids, output_dir


def check_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else f"allowed: {', '.join(allowed)}"
            raise GilbenchError(f"{where}: unknown key {key!r}; {hint}")


def merged(common: dict, grid: dict) -> dict:
    """``set`` and ``include`` add up (the grid's ``set`` keys win); other keys of the grid replace the common ones."""
    out = dict(common) | dict(grid)
    if "set" in common and "set" in grid:
        out["set"] = set_items(common["set"], "common: set") + set_items(grid["set"], "set")
    if "include" in common and "include" in grid:
        out["include"] = text_list(common["include"], "include") + text_list(grid["include"], "include")
    return out


def set_items(value, where: str) -> list[str]:
    """``{key: value}`` or ``["key=value", ...]`` -> ``--set`` arguments (values written as YAML scalars)."""
    if isinstance(value, dict):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(x, str) and "=" in x for x in value):
        return list(value)
    raise GilbenchError(f"{where} must be a mapping of config fields ({{rl.steps: 200}}) or a list of KEY=VALUE")


def text_list(value, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return list(value)
    raise GilbenchError(f"{key} must be a path or a list of paths, got {value!r}")


def grid_from_mapping(m: dict, where: str) -> Grid:
    def names(key: str) -> list[str]:
        value = m.get(key)
        items = split_names(value) if isinstance(value, str) else value
        if not items or not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise GilbenchError(f"{where}: {key} must name at least one, as a,b or a list; got {value!r}")
        return items

    def seeds() -> list[int]:
        value = m.get("seeds", 0)
        if isinstance(value, bool):
            raise GilbenchError(f"{where}: seeds must be like 0, 0,1,2 or 0-4; got {value!r}")
        if isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            value = ",".join(map(str, value))
        return parse_seeds(str(value), f"seeds in {where}")

    def optional(key: str, kind: type):
        value = m.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise GilbenchError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
        return value

    return Grid(
        names("methods"),
        names("tasks"),
        seeds(),
        optional("model", str),
        set_items(m["set"], f"{where}: set") if "set" in m else [],
        optional("limit", int),
        optional("config", str),
        optional("device", str),
        optional("data_dir", str),
        text_list(m["include"], f"{where}: include") if "include" in m else [],
        optional("judge_curve", str),
        optional("judge_window", int),
        where,
    )


def waves(jobs: list, primed: set[tuple[str, int]] = frozenset()) -> list[list]:
    """[first run of each (task, seed) not yet primed, the rest]: runs of a (task, seed) share the SFT/RM caches."""
    first, rest, seen = [], [], set(primed)
    for job in jobs:
        key = (job.task, job.seed)
        (rest if key in seen else first).append(job)
        seen.add(key)
    if primed:  # groups with a finished run have their caches: their runs need not wait
        first += [j for j in rest if (j.task, j.seed) in primed]
        rest = [j for j in rest if (j.task, j.seed) not in primed]
    return [w for w in (first, rest) if w]
