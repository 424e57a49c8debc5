"""Tasks are YAML files (tasks/*.yaml, or any file given to --include / `validate`) naming a loader function.

A task file looks like::

    name: chitchat
    description: one line
    loader: gilbench.data.chitchat:load_chitchat   # "module:function" returning TaskData
    options: {n_rl_prompts: 512}                     # keyword arguments for the loader
    source: {pypi: chitchat-dataset}                 # where the data comes from (hub / local / pypi)
    license: ...
    eval_splits: [{name: "id:test", distribution: id}]   # what the loader will return, for `ls tasks`
    groups: [computers, hypotheticals, personal]         # known group labels, if any
    defaults: {rl.steps: 24, model.policy: smollm2-135m}  # run-config fields sized for the task (before the method's)
    include: _shared-defaults.yaml                       # optional: fields shared by several task files (path relative
                                                         # to this file); mapping fields merge key by key, this file wins

Files whose name starts with ``_`` are such shared parts, not tasks.

The loader is called as ``loader(seed=..., limit=..., data_dir=..., **options)``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gilbench.config import RunConfig, nest, read_yaml_mapping, update_dataclass
from gilbench.data.types import TaskData
from gilbench.errors import GilbenchError
from gilbench.registry import register_task
from gilbench.validation import validate_config

REQUIRED_FIELDS = {"name": str, "description": str, "loader": str}
OPTIONAL_FIELDS = {
    "options": dict,
    "source": dict,
    "license": str,
    "eval_splits": list,
    "groups": list,
    "prompt_format": str,
    "defaults": dict,
}


@dataclass
class TaskSpec:
    name: str
    description: str
    loader: Any  # "module:function", or the function itself for tasks registered in code
    options: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    license: str = ""
    eval_splits: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    prompt_format: str = "chat"
    defaults: dict = field(
        default_factory=dict
    )  # run-config fields sized for this task (dotted keys), before the method's
    path: str = ""

    def loader_function(self) -> Callable[..., TaskData]:
        if callable(self.loader):
            return self.loader
        module_name, _, func_name = self.loader.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise GilbenchError(f"task {self.name}: cannot import loader module '{module_name}': {e}") from e
        func = getattr(module, func_name, None)
        if not callable(func):
            raise GilbenchError(f"task {self.name}: loader '{self.loader}' is not a function in {module_name}")
        return func

    def load(self, seed: int = 0, limit: int | None = None, data_dir: str | None = None) -> TaskData:
        func = self.loader_function()
        accepted = inspect.signature(func).parameters
        unknown = [
            k for k in self.options if k not in accepted and not any(p.kind == p.VAR_KEYWORD for p in accepted.values())
        ]
        if unknown:
            raise GilbenchError(
                f"task {self.name} ({self.path}): option(s) {unknown} are not parameters of {self.loader}; it takes {list(accepted)}"
            )
        data = func(seed=seed, limit=limit, data_dir=data_dir, **self.options)
        if not isinstance(data, TaskData):
            raise GilbenchError(
                f"task {self.name}: loader {self.loader} returned {type(data).__name__}, expected TaskData"
            )
        data.prompt_format = self.prompt_format
        check_task_data(data, self.name)
        data.check_no_leakage()
        return data


def _texts(data: TaskData):
    """(where, text) of every text field of a task, for the checks below."""
    for i, p in enumerate(data.rl_prompts):
        yield f"rl_prompts[{i}].text", p.text
    for i, ex in enumerate(data.sft):
        yield from ((f"sft[{i}].prompt", ex.prompt), (f"sft[{i}].response", ex.response))
    for part, pairs in (("pairs_train", data.pairs_train), ("pairs_val", data.pairs_val)):
        for i, pair in enumerate(pairs):
            yield from ((f"{part}[{i}].{k}", getattr(pair, k)) for k in ("prompt", "chosen", "rejected"))
    for split in data.eval_splits:
        for i, p in enumerate(split.prompts):
            yield f"{split.name}[{i}].text", p.text


def check_task_data(data: TaskData, name: str) -> None:
    """What a loader returns must be usable: text everywhere (valid UTF-8), prompts to train on and pairs to learn from."""
    for where, text in _texts(data):
        if not isinstance(text, str):
            raise GilbenchError(
                f"task {name}: {where} is {type(text).__name__}, not text; make the loader return str "
                f"(decode bytes with .decode('utf-8', errors='replace'))"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise GilbenchError(
                f"task {name}: {where} is not valid UTF-8 text (undecodable bytes, e.g. from errors='surrogateescape'); "
                f"make the loader decode its files with the right encoding or errors='replace'"
            ) from None
    if not (data.rl_prompts or data.sft or data.pairs_train):
        raise GilbenchError(
            f"task {name}: the loader returned no prompts, SFT examples or preference pairs; check its data files"
        )
    for split in data.eval_splits:
        if split.distribution not in ("id", "ood") or not split.prompts:
            raise GilbenchError(
                f"task {name}: eval split {split.name!r} has distribution {split.distribution!r} and {len(split.prompts)} "
                f"prompts; it needs id | ood and at least one prompt"
            )


def _read_yaml_mapping(path: Path) -> dict:
    return read_yaml_mapping(path, "task file", "see tasks/*.yaml for the layout")


def with_include(raw: dict, path: Path) -> dict:
    """Task fields with those of its ``include:`` file underneath: this file's fields win, mappings merge key by key."""
    if "include" not in raw:
        return raw
    name = raw.pop("include")
    if not isinstance(name, str):
        raise GilbenchError(f"{path}: include must be the path of a YAML file of shared task fields, got {name!r}")
    shared = _read_yaml_mapping(path.parent / name)
    if "include" in shared:
        raise GilbenchError(f"{path.parent / name}: an included file may not include another; merge them into one")
    merged = dict(shared)
    for key, value in raw.items():
        merged[key] = (
            {**shared[key], **value} if isinstance(value, dict) and isinstance(shared.get(key), dict) else value
        )
    return merged


def parse_task_file(path: str | Path) -> TaskSpec:
    path = Path(path)
    raw = with_include(_read_yaml_mapping(path), path)
    for key, typ in REQUIRED_FIELDS.items():
        if key not in raw:
            raise GilbenchError(f"{path}: missing required field '{key}' ({typ.__name__})")
    for key, value in raw.items():
        typ = REQUIRED_FIELDS.get(key) or OPTIONAL_FIELDS.get(key)
        if typ is None:
            known = sorted(REQUIRED_FIELDS) + sorted(OPTIONAL_FIELDS)
            raise GilbenchError(f"{path}: unknown field '{key}'; task fields are {known}")
        if not isinstance(value, typ):
            raise GilbenchError(f"{path}: field '{key}' must be {typ.__name__}, got {type(value).__name__} ({value!r})")
    if ":" not in raw["loader"]:
        raise GilbenchError(f"{path}: loader must be 'module:function', got {raw['loader']!r}")
    for i, split in enumerate(raw.get("eval_splits", [])):
        if not isinstance(split, dict) or split.get("distribution") not in ("id", "ood") or "name" not in split:
            raise GilbenchError(f"{path}: eval_splits[{i}] needs a name and distribution: id | ood, got {split!r}")
    spec = TaskSpec(path=str(path), **raw)
    check_task_defaults(spec)
    return spec


def check_task_defaults(spec: TaskSpec) -> None:
    """A task's ``defaults:`` must name run-config fields with valid values, checked when the file is read."""
    cfg = RunConfig(task=spec.name)
    for dotted, value in spec.defaults.items():
        if not isinstance(dotted, str) or dotted.startswith("method_args"):
            raise GilbenchError(
                f"{spec.path}: defaults key {dotted!r}: a task's defaults set run-config fields like rl.steps "
                f"(method fields belong in --set or --config)"
            )
        try:
            update_dataclass(cfg, nest(dotted, value))
        except GilbenchError as e:
            raise GilbenchError(f"{spec.path}: defaults: {e}") from None
    try:
        validate_config(cfg)
    except GilbenchError as e:
        raise GilbenchError(f"{spec.path}: defaults: {e}") from None


def register_task_file(path: str | Path) -> TaskSpec:
    spec = parse_task_file(path)
    return register_task(spec.name)(spec)


def _register_builtin_tasks() -> None:
    for entry in sorted(resources.files("gilbench_tasks").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            register_task_file(Path(str(entry)))


def as_task_spec(obj: Any, name: str) -> TaskSpec:
    """Plugins may register a TaskSpec or a bare loader function."""
    if isinstance(obj, TaskSpec):
        return obj
    if callable(obj):
        return TaskSpec(name=name, description=(obj.__doc__ or "").strip().split("\n")[0], loader=obj)
    raise GilbenchError(
        f"task '{name}' is registered as {type(obj).__name__}; expected a TaskSpec or a loader function"
    )


_register_builtin_tasks()
