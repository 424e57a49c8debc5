"""Which tasks and methods a table covers, and how its blocks are laid out (shared by tables.py and tables_runs.py)."""

from __future__ import annotations

from gilbench.report import store
from gilbench.report.spec import TableSpec
from gilbench.store import RunDir, config_spread

GIL_FAMILY = ["gil", "gil-fixed-kl", "gil-no-inv", "gil-oracle"]


def tasks_of(spec: TableSpec, output_dir) -> list[str]:
    """The spec's tasks; ``auto``: every task where one of the spec's row methods has a finished run."""
    if spec.tasks != "auto":
        return list(spec.tasks)
    tasks = store.task_names(output_dir)
    if spec.methods == "auto":
        return [
            t
            for t in tasks
            if any(store.finished_seed_dirs(output_dir, t, m) for m in store.method_names(output_dir, t))
        ]
    return [t for t in tasks if any(store.finished_seed_dirs(output_dir, t, m) for m in spec.methods)]


def methods_of(spec: TableSpec, output_dir, task: str, default: list[str] | None) -> list[str]:
    if spec.methods != "auto":
        return list(spec.methods)
    return list(default) if default is not None else store.method_names(output_dir, task)


def with_sections(blocks: list[list[list[str]]]) -> list[list[str] | None]:
    rows: list[list[str] | None] = []
    for block in (b for b in blocks if b):
        rows += ([None] if rows else []) + block
    return rows


def mixed_config_note(spec: TableSpec, output_dir, rows: list[tuple[str, str]]) -> str | None:
    """A table note naming every (task, method) row whose finished seeds were made with different configs (say
    bf16 on one machine and fp32 on another): their mean would silently average two settings."""
    found = []
    for task, method in rows:
        configs = [RunDir(d).config() for d in store.finished_seed_dirs(output_dir, task, method)]
        spread = config_spread([c for c in configs if c is not None])
        if spread:
            fields = "; ".join(
                f"{key} " + ", ".join(f"{v} x{n}" for v, n in values.items()) for key, values in spread.items()
            )
            found.append(f"{spec.label(method)} ({task}): {fields}")
    if not found:
        return None
    return "Seeds of one row made with different configs (the row averages them): " + " | ".join(found) + "."
