"""Resolving a run: (method, task, overrides) -> one ``ResolvedRun`` (run config, method class and config, task spec).

Precedence, lowest first: dataclass defaults -> the task's ``defaults`` -> the method's ``defaults`` -> a config
file -> ``fields`` (the command line's flags) -> ``overrides`` (``--set KEY=VALUE``). The CLI, ``sweep``,
``validate`` and the tests build runs only through :func:`resolve_run`, so a method and a task are looked up once,
and the pipeline receives the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gilbench import registry
from gilbench.config import (
    RunConfig,
    build_method_config,
    load_yaml_config,
    nest,
    parse_cli_value,
    resolve_set_key,
    update_dataclass,
)
from gilbench.data.tasks import TaskSpec, as_task_spec
from gilbench.errors import GilbenchError
from gilbench.validation import validate_config


@dataclass(frozen=True)
class ResolvedRun:
    cfg: RunConfig
    method_cls: type
    method_cfg: Any  # an instance of method_cls.Config, or None for a method without one
    task: TaskSpec

    def with_seed(self, seed: int) -> ResolvedRun:
        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, seed=seed))

    def record(self) -> dict:
        """The config as a run folder's config.yaml records it: every field, the method's own config in full."""
        method_args = dataclasses.asdict(self.method_cfg) if self.method_cfg is not None else {}
        return dataclasses.asdict(self.cfg) | {"method_args": method_args}


def _apply_defaults(cfg: RunConfig, method_cls: type, spec: TaskSpec) -> None:
    """The task's defaults (sizes that suit it), then the method's (what makes it that method, e.g. ppo: kl_coef 0)."""
    for source, defaults in (
        (f"task {spec.name}", spec.defaults),
        (f"method {cfg.method}", getattr(method_cls, "defaults", {})),
    ):
        for dotted, value in defaults.items():
            try:
                update_dataclass(cfg, nest(dotted, value))
            except GilbenchError as e:
                raise GilbenchError(f"defaults of {source}: {e}") from e


def _split_override(item: str | tuple[str, Any]) -> tuple[str, Any]:
    if not isinstance(item, str):
        return item
    key, sep, value = item.partition("=")
    if not sep:
        raise GilbenchError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), parse_cli_value(value.strip())


def resolve_run(
    method: str | None = None,
    task: str | None = None,
    overrides: Iterable[str | tuple[str, Any]] = (),
    *,
    config_file: str | Path | None = None,
    fields: Mapping[str, Any] | None = None,
) -> ResolvedRun:
    """Build and validate one run's config. ``overrides``: ``"KEY=VALUE"`` strings (``--set``) or (key, value) pairs;
    ``fields``: a nested mapping of config fields (``{"limit": 8, "model": {"policy": "tiny"}}``)."""
    file_cfg = dict(load_yaml_config(config_file)) if config_file else {}
    file_method, file_task = file_cfg.pop("method", None), file_cfg.pop("task", None)
    method = method or file_method or RunConfig.method
    task = task or file_task or RunConfig.task
    method_cls = registry.methods.get(method)
    spec = as_task_spec(registry.tasks.get(task), task)
    cfg = RunConfig(method=method, task=task)
    _apply_defaults(cfg, method_cls, spec)
    update_dataclass(cfg, file_cfg)
    update_dataclass(cfg, dict(fields or {}))
    for key, value in map(_split_override, overrides):
        update_dataclass(cfg, nest(resolve_set_key(key, cfg, method_cls.Config), value))
    return _checked(cfg, method_cls, spec)


def resolve_config(cfg: RunConfig) -> ResolvedRun:
    """A RunConfig built in code (or read back from a run folder) taken as given: look up its method and task, check it."""
    method_cls = registry.methods.get(cfg.method)
    return _checked(cfg, method_cls, as_task_spec(registry.tasks.get(cfg.task), cfg.task))


def _checked(cfg: RunConfig, method_cls: type, spec: TaskSpec) -> ResolvedRun:
    method_cfg = build_method_config(method_cls.Config, cfg.method_args, cfg.method)
    validate_config(cfg, method_cfg)
    from gilbench.models.precision import resolve_mixed_precision  # imports torch: only once a run is resolved

    # A run records the precision it runs in, not "auto" (which depends on the machine), so that configs compare.
    cfg = dataclasses.replace(cfg, mixed_precision=resolve_mixed_precision(cfg.mixed_precision, cfg.device))
    return ResolvedRun(cfg, method_cls, method_cfg, spec)


def config_for_method(method: str, task: str = RunConfig.task, **fields: Any) -> RunConfig:
    """Shorthand for code and tests: the RunConfig of ``method`` on ``task`` with top-level ``fields`` set."""
    return resolve_run(method, task, fields=fields).cfg
