"""Config field docs for ``--help`` and ``gilbench ls``: the one-line comment after each dataclass field.

The dataclasses in gilbench/config.py (and the methods' own configs) document each field with a trailing comment;
reading those from the source keeps one place to write the doc. ``field(metadata={"doc": ...})`` wins if given.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from functools import cache

from gilbench.config import RunConfig


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its doc} of a dataclass; fields without a comment are left out."""
    docs: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # defined in an interactive session or generated: no source to read
        source = ""
    names = {f.name for f in dataclasses.fields(cls)}
    current = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names:
            current = tok.string
        elif tok.type == tokenize.COMMENT and current is not None:
            docs.setdefault(current, tok.string.lstrip("#").strip())
        elif tok.type == tokenize.NEWLINE:
            current = None
    for f in dataclasses.fields(cls):
        if "doc" in f.metadata:
            docs[f.name] = f.metadata["doc"]
    return docs


def field_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, doc) of every field, nested sections flattened (``rl.steps``)."""
    rows: list[tuple[str, str, str]] = []
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            rows += field_rows(f.default_factory, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f"{prefix}{f.name}", repr(default), docs.get(f.name, "")))
    return rows


def config_fields_epilog() -> str:
    """The run-config fields, for ``gilbench run --help`` (method fields: ``gilbench ls methods -v``)."""
    lines = ["config fields (--set NAME=VALUE; a method's own fields: gilbench ls methods -v):"]
    lines += [f"  {name} = {default}  # {doc}" for name, default, doc in field_rows(RunConfig)]
    return "\n".join(lines)
