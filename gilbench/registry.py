"""Registries for methods, tasks, judges and models.

Three ways in, all ending in the same decorator call:
  1. built-in code calls ``@register_method("name")`` when imported;
  2. installed packages declare entry points (group ``gilbench.methods`` etc.); they are imported
     lazily, only when a name is looked up or listed;
  3. ``--include PATH`` imports a plugin file, or every ``*.py`` in a folder.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gilbench.errors import GilbenchError

KINDS = ("methods", "tasks", "judges", "models")
# Built-in modules that register things on import (the rest come through entry points).
_BUILTIN_MODULES = {
    "methods": [],
    "tasks": ["gilbench.data.tasks"],
    "judges": [],
    "models": [],
}


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._lazy: dict[str, importlib.metadata.EntryPoint] = {}
        self._loaded_builtins = False
        self._scanned_entry_points = False

    def register(self, name: str, obj: Any) -> Any:
        current = self._items.get(name)
        if (
            current is not None
            and current is not obj
            and getattr(current, "__qualname__", None) != getattr(obj, "__qualname__", 0)
        ):
            raise GilbenchError(f"{self.kind[:-1]} '{name}' is registered twice ({_where(current)} and {_where(obj)})")
        self._items[name] = obj
        return obj

    def _scan(self) -> None:
        if not self._loaded_builtins:
            self._loaded_builtins = True
            for module in _BUILTIN_MODULES[self.kind]:
                importlib.import_module(module)
        if not self._scanned_entry_points:
            self._scanned_entry_points = True
            for ep in importlib.metadata.entry_points(group=f"gilbench.{self.kind}"):
                self._lazy.setdefault(ep.name, ep)

    def names(self) -> list[str]:
        self._scan()
        return sorted(set(self._items) | set(self._lazy))

    def get(self, name: str) -> Any:
        self._scan()
        if name not in self._items and name in self._lazy:
            ep = self._lazy.pop(name)
            try:
                ep.load()  # importing the module runs its register decorator
            except GilbenchError:
                raise
            except ImportError as e:
                raise GilbenchError(
                    f"{self.kind[:-1]} '{name}' (entry point {ep.value}) could not be imported: {e}"
                ) from e
            if name not in self._items:
                raise GilbenchError(
                    f"entry point '{name}' in group gilbench.{self.kind} loaded but registered nothing under that name"
                )
        if name not in self._items:
            raise GilbenchError(unknown_name_message(self.kind[:-1], name, self.names()))
        return self._items[name]

    def all(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self.names()}


def close_matches(name: str, known: list[str] | set[str]) -> list[str]:
    """The (up to three) known names closest to a misspelt ``name``: the one did-you-mean of every error message."""
    return difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)


def did_you_mean(name: str, known: list[str] | set[str]) -> str:
    """`` Did you mean 'a', 'b'?`` (empty when nothing is close)."""
    close = close_matches(name, known)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    return f"unknown {what} '{name}'.{did_you_mean(name, known)} Known: {', '.join(known) or '(none)'}."


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


REGISTRIES = {kind: Registry(kind) for kind in KINDS}
methods, tasks, judges, models = (REGISTRIES[k] for k in KINDS)


def _decorator(kind: str) -> Callable[[str], Callable[[Any], Any]]:
    def register(name: str) -> Callable[[Any], Any]:
        def wrap(obj: Any) -> Any:
            if hasattr(obj, "__dict__") and not isinstance(obj, type(sys)):
                try:
                    obj.registered_name = name
                except (AttributeError, TypeError):
                    pass
            return REGISTRIES[kind].register(name, obj)

        return wrap

    register.__doc__ = f"Decorator: register a {kind[:-1]} under ``name``."
    return register


register_method = _decorator("methods")
register_task = _decorator("tasks")
register_judge = _decorator("judges")
register_model = _decorator("models")


def include(path: str | Path) -> list[str]:
    """Import a plugin file, or every ``*.py`` file in a folder; returns the modules imported."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GilbenchError(f"--include {path}: no such file or folder")
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    if path.is_file() and path.suffix != ".py":
        raise GilbenchError(f"--include {path}: a plugin must be a .py file or a folder of them")
    imported = []
    for file in files:
        module_name = f"gilbench_plugin_{file.stem}_{abs(hash(str(file.resolve()))) % 10**8}"
        if module_name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except GilbenchError:
            raise
        except Exception as e:
            del sys.modules[module_name]
            raise GilbenchError(f"--include {file}: importing the plugin failed: {type(e).__name__}: {e}") from e
        imported.append(module_name)
    return imported
