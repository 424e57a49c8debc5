"""Files that are never half-written: atomic writes (text, JSON, YAML, folders) with the user's umask, DONE markers,
an append-only metrics log that survives a kill, and the cleanup of temporary files a killed process left behind;
and ``cache_dir``, the folder gilbench keeps its caches in.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from gilbench.errors import GilbenchError

DONE = "DONE"


def cache_dir() -> Path:
    """Where gilbench keeps what it can rebuild (dequantised models, embeddings): ``$GILBENCH_CACHE`` or
    ``~/.cache/gilbench``."""
    return Path(os.environ.get("GILBENCH_CACHE") or "~/.cache/gilbench").expanduser()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _current_umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def _as_umask_allows(path: str | Path, mode: int) -> None:
    """tempfile creates 0600 files and 0700 folders; a run store is shared, so give them the user's usual mode."""
    os.chmod(path, mode & ~UMASK)


def _tmp_prefix(name: str) -> str:
    # host and pid in the name: a later start can tell a dead writer's leftovers from a live one's work in progress
    return f".{name}.tmp-{socket.gethostname().replace('.', '_')}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: str | Path, owned: bool = False, max_age_s: float = 86400.0) -> list[Path]:
    """Remove the temporary files and folders that a killed writer left in ``folder``.

    ``owned``: the caller is the only writer here (a run folder), so every temporary is stale. Otherwise
    (shared stage caches) only those of a dead process on this host, or older than ``max_age_s``, are removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    host = socket.gethostname().replace(".", "_")
    for entry in folder.iterdir():
        name = entry.name
        if not name.startswith(".") or (".tmp" not in name and ".old-" not in name):
            continue
        stale = owned
        if not stale:
            tail = name.split(".tmp-", 1)[1] if ".tmp-" in name else ""
            who, _, _ = tail.partition("-")
            entry_host, _, pid = who.rpartition(".")
            try:
                age = time.time() - entry.lstat().st_mtime
            except OSError:
                continue
            stale = age > max_age_s or (entry_host == host and pid.isdigit() and not _pid_alive(int(pid)))
        if stale:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every reader can parse the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(_finite(obj), default=_json_default, **kwargs)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path.name))
    try:
        _as_umask_allows(tmp, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | Path, fix: str = "") -> Any:
    """Parse a JSON file; a damaged one is a one-line error that says what to do (``fix``, or delete and rerun)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise GilbenchError(
            f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); "
            f"{fix or 'delete it and rerun the same command to rebuild it'}"
        ) from None


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path.name)))
    try:
        _as_umask_allows(tmp, 0o777)
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}.tmp")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_done(path: str | Path) -> bool:
    return (Path(path) / DONE).exists()


def mark_done(path: str | Path) -> None:
    atomic_write_text(Path(path) / DONE, "")


def _step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except json.JSONDecodeError:  # the torn last line of a run killed while appending
        return float("inf")


class MetricsLog:
    """Append-only JSONL of per-step metrics; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and _step(line) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, row: dict) -> None:
        self.extend([row])

    def extend(self, rows: list[dict]) -> None:
        with self.path.open("a") as f:
            f.write("".join(dumps(row, sort_keys=True) + "\n" for row in rows))
            f.flush()

    def rows(self, fix: str = "") -> list[dict]:
        """Every row, checked: a torn or garbled line, or a gap in the steps, is an error saying what to do (``fix``)."""
        if not self.path.exists():
            return []
        fix = fix or "rerun the same command with --overwrite to redo the run"
        rows = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                    raise ValueError("not a row with an integer step")
            except ValueError as e:
                raise GilbenchError(f"{self.path} line {n} is damaged ({str(e)[:60]}); {fix}") from None
            expected = rows[-1]["step"] + 1 if rows else 1
            if row["step"] != expected:
                raise GilbenchError(
                    f"{self.path} line {n}: step {row['step']} where step {expected} was due (rows are missing); {fix}"
                )
            rows.append(row)
        return rows
