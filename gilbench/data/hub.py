"""Read one split of a public dataset from the Hugging Face hub, or from a local copy in the same layout.

A :class:`Source` names both places: the hub id (plus config, sub-folder, revision and split) that
``datasets.load_dataset`` reads by default, and the path under ``--data-dir`` where a local copy in the
dataset's public file layout lives. With ``data_dir`` given, only the local copy is read (never the
hub), so a run on local files is exactly reproducible; without it, the hub (or the datasets cache, also
under ``HF_HUB_OFFLINE=1``) is used. If neither works the error names both ways out.

Local files may be ``.jsonl``, ``.jsonl.gz``, ``.csv`` or ``.parquet``; the declared name is tried first,
then the same stem with the other suffixes. Every row carries where it came from ("FILE line N", or
"HUB-ID split row N"), so a malformed row fails with that location::

    .../hh-rlhf/harmless-base/test.jsonl.gz line 17: missing field 'rejected'
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import os
import random
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from gilbench.errors import GilbenchError, require

SUFFIXES = (".jsonl.gz", ".jsonl", ".csv", ".parquet")
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """One split of one dataset, on the hub and under ``--data-dir``."""

    hub_id: str  # e.g. "Anthropic/hh-rlhf"
    split: str  # hub split name, e.g. "train"
    local: str  # path under --data-dir in the public layout, e.g. "hh-rlhf/harmless-base/train.jsonl.gz"
    config: str | None = None  # hub config name (e.g. "comparisons", "3.0.0")
    hub_data_dir: str | None = None  # sub-folder of the hub repository (e.g. "harmless-base")
    revision: str = "main"  # hub revision: a commit sha, tag or branch
    required: tuple[str, ...] = ()  # top-level fields every row must have

    @property
    def label(self) -> str:
        parts = [self.hub_id] + [p for p in (self.config, self.hub_data_dir) if p]
        return f"{'/'.join(parts)} [{self.split}]"

    def local_candidates(self, data_dir: str | os.PathLike) -> list[Path]:
        path = Path(data_dir).expanduser() / self.local
        stem = str(path)
        for suffix in SUFFIXES:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        return [path] + [Path(stem + s) for s in SUFFIXES if Path(stem + s) != path]

    def find_local(self, data_dir: str | os.PathLike | None) -> Path | None:
        if not data_dir:
            return None
        return next((p for p in self.local_candidates(data_dir) if p.is_file()), None)

    def describe(self) -> dict:
        """The YAML ``source`` entry of this split (tasks/*.yaml mirror these; a test checks it)."""
        out = {"hub": self.hub_id, "revision": self.revision, "split": self.split, "local": self.local}
        if self.config:
            out["config"] = self.config
        if self.hub_data_dir:
            out["data_dir"] = self.hub_data_dir
        return out


@dataclass
class Row:
    """One record and where it came from, for error messages."""

    data: dict
    where: str

    def fail(self, message: str) -> NoReturn:
        raise GilbenchError(f"{self.where}: {message}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def text(self, key: str, allow_empty: bool = False) -> str:
        """A string field; missing, non-string or (unless allowed) blank values fail with the location."""
        if key not in self.data or self.data[key] is None:
            self.fail(f"missing field '{key}'")
        value = self.data[key]
        if not isinstance(value, str):
            self.fail(f"field '{key}' must be a string, got {type(value).__name__}")
        if not allow_empty and not value.strip():
            self.fail(f"field '{key}' is empty")
        return value


# ---------------------------------------------------------------------------- local files


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8", newline="" if path.suffix == ".csv" else None)


def read_local_file(path: str | os.PathLike) -> Iterator[Row]:
    """Rows of a .jsonl / .jsonl.gz / .csv / .parquet file, each located by file and line (or row)."""
    path = Path(path)
    name = path.name
    try:
        if name.endswith((".jsonl", ".jsonl.gz")):
            with _open_text(path) as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise GilbenchError(
                            f"{path} line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
                        ) from None
                    if not isinstance(obj, dict):
                        raise GilbenchError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
                    yield Row(obj, f"{path} line {lineno}")
        elif name.endswith(".csv"):
            with _open_text(path) as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None:  # reads the header line
                    return
                start = reader.line_num + 1
                for record in reader:
                    if None in record:  # more cells than header columns
                        raise GilbenchError(
                            f"{path} line {start}: {len(record[None])} more cell(s) than the header's columns {reader.fieldnames}"
                        )
                    yield Row({k: v for k, v in record.items() if v is not None}, f"{path} line {start}")
                    start = reader.line_num + 1
        elif name.endswith(".parquet"):
            pq = require("pyarrow.parquet", "reading .parquet files", package="pyarrow")
            for i, obj in enumerate(pq.read_table(path).to_pylist()):
                yield Row(obj, f"{path} row {i}")
        else:
            raise GilbenchError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}")
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise GilbenchError(f"{path}: cannot read the file: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------- the hub


def _cache_revision(ds) -> str | None:
    """The commit a hub dataset was read at, from its cache path (datasets keeps one folder per commit)."""
    try:
        parts = Path(ds.cache_files[0]["filename"]).parts
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    shas = [p for p in parts if len(p) == 40 and all(c in "0123456789abcdef" for c in p)]
    return shas[-1] if shas else None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def hub_unreachable() -> str:
    """Why the hub cannot be reached ('' if it can): one quick connection instead of the hub client's
    minutes of retries. With HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, the local cache alone is used: no probe."""
    if _truthy("HF_HUB_OFFLINE") or _truthy("HF_DATASETS_OFFLINE"):
        return ""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urllib.parse.urlsplit(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return _probe(target.hostname or "huggingface.co", target.port or (443 if target.scheme == "https" else 80))


@functools.cache
def _probe(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        return f"{host}:{port} is unreachable ({type(e).__name__}: {e}); set HF_HUB_OFFLINE=1 to use what the local hub cache holds"
    return ""


def _load_hub(source: Source) -> tuple[list[Row], dict]:
    datasets = require("datasets", "loading datasets from the Hugging Face hub", package="datasets")
    why = (
        "" if Path(source.hub_id).expanduser().exists() else hub_unreachable()
    )  # a local dataset folder needs no network
    if why:
        raise ConnectionError(why)
    kwargs: dict[str, Any] = {"split": source.split, "revision": source.revision}
    if source.hub_data_dir:
        kwargs["data_dir"] = source.hub_data_dir
    ds = datasets.load_dataset(source.hub_id, source.config, **kwargs)
    rows = [Row(dict(obj), f"{source.label} row {i}") for i, obj in enumerate(ds)]
    return rows, {"from": "hub", "commit": _cache_revision(ds)}


def neither_message(source: Source, data_dir: str | None, hub_error: BaseException | None) -> str:
    expected = Path(data_dir).expanduser() / source.local if data_dir else Path("<DIR>") / source.local
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    hub = (
        f"the hub dataset {source.hub_id}"
        + (f" (config {source.config})" if source.config else "")
        + (f" folder {source.hub_data_dir}" if source.hub_data_dir else "")
        + f", split {source.split}, revision {source.revision}"
    )
    why = (
        f" ({type(hub_error).__name__}: {str(hub_error).strip().splitlines()[0] if str(hub_error).strip() else ''})"
        if hub_error
        else ""
    )
    return (
        f"cannot load {source.label}: no --data-dir was given and {hub} could not be loaded{why}"
        f"{'; HF_HUB_OFFLINE is set' if offline else ''}. Two ways out: (1) make the hub reachable "
        f"(network access, unset HF_HUB_OFFLINE, or a datasets cache that holds it), or (2) pass --data-dir DIR with the "
        f"public-layout file at {expected}"
    )


def check_data_dir(data_dir: str | os.PathLike | None) -> None:
    if data_dir and not Path(data_dir).expanduser().is_dir():
        raise GilbenchError(f"--data-dir {data_dir}: no such folder")


def load_rows(
    source: Source, data_dir: str | os.PathLike | None = None, revisions: dict | None = None
) -> tuple[list[Row], dict]:
    """All rows of ``source`` and a provenance record for ``TaskData.notes``.

    ``data_dir`` given: read the local copy (an error names the expected path and the hub alternative).
    Otherwise: ``datasets.load_dataset`` on the hub id; ``revisions`` maps hub ids to revisions to override.
    """
    if revisions and source.hub_id in revisions:
        source = replace(source, revision=str(revisions[source.hub_id]))
    if data_dir:
        check_data_dir(data_dir)
        path = source.find_local(data_dir)
        if path is None:
            tried = ", ".join(p.name for p in source.local_candidates(data_dir)[1:])
            raise GilbenchError(
                f"--data-dir {data_dir}: {Path(data_dir).expanduser() / source.local} not found (also tried {tried}); "
                f"put {source.label} there in its public layout, or drop --data-dir to load {source.hub_id} from the hub"
            )
        rows = list(read_local_file(path))
        provenance = {"from": "local", "path": str(path)}
        if not rows:
            raise GilbenchError(
                f"{path} holds no rows ({source.label} would be missing from the task); "
                f"put the full file there, or drop --data-dir to load {source.hub_id} from the hub"
            )
    else:
        try:
            rows, provenance = _load_hub(source)
        except GilbenchError:
            raise
        except Exception as e:  # any failure to reach or read the hub: say how to get the data instead
            raise GilbenchError(neither_message(source, None, e)) from e
    for row in rows:
        for key in source.required:
            if key not in row.data or row.data[key] is None:
                row.fail(f"missing field '{key}'")
    provenance.update(hub=source.hub_id, revision=source.revision, split=source.split, rows=len(rows))
    if source.config:
        provenance["config"] = source.config
    if source.hub_data_dir:
        provenance["data_dir"] = source.hub_data_dir
    return rows, provenance


# ---------------------------------------------------------------------------- deterministic splits


def text_id(prefix: str, text: str) -> str:
    """A prompt id stable across runs and machines: prefix + sha1 of the stripped text."""
    return f"{prefix}-{hashlib.sha1(text.strip().encode()).hexdigest()[:12]}"


def split_keys(keys: list[str], fractions: tuple[float, ...], seed: int, salt: str) -> list[set[str]]:
    """Partition the distinct ``keys`` into len(fractions) sets, shuffled by Random(f"{salt}:{seed}").

    Splitting by key (the prompt text) keeps every row of one prompt in one part, so no held-out prompt
    is also trained on. Parts after the first get round(n * fraction) keys; the first gets the rest.
    """
    if any(f < 0 for f in fractions) or sum(fractions[1:]) >= 1:
        raise GilbenchError(f"split fractions must be >= 0 and leave room for the first part, got {fractions}")
    unique = sorted(set(keys))
    random.Random(f"{salt}:{seed}").shuffle(unique)
    sizes = [round(len(unique) * f) for f in fractions[1:]]
    parts, start = [], len(unique) - sum(sizes)
    parts.append(set(unique[:start]))
    for size in sizes:
        parts.append(set(unique[start : start + size]))
        start += size
    return parts


def shuffled(items: list[T], seed: int, salt: str) -> list[T]:
    out = list(items)
    random.Random(f"{salt}:{seed}").shuffle(out)
    return out


def interleave(groups: dict[str, list[T]]) -> list[T]:
    """Round-robin over the groups (in name order), so any prefix (``limit``) keeps them balanced."""
    lists = [groups[name] for name in sorted(groups)]
    out: list[T] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def unique_by(items: list[T], key: Callable[[T], str]) -> list[T]:
    """First occurrence of each key, order kept."""
    seen: set[str] = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def cap(items: list[T], limit: int | None) -> list[T]:
    return items[:limit] if limit else items
