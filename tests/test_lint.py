"""ruff (configured in pyproject.toml) passes on the package, the task files' package, the benchmarks and the tests:
`ruff check` (lint) and `ruff format --check` (the formatter has nothing to change)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["gilbench", "tasks", "benchmarks", "tests"]


@pytest.mark.parametrize(
    "command", [["check", "--output-format", "concise"], ["format", "--check"]], ids=["check", "format"]
)
def test_ruff_passes(command):
    try:
        import ruff  # noqa: F401
    except ImportError:
        raise AssertionError("ruff is not installed: pip install -e '.[test]' (it is in the test extra)") from None
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", *PATHS], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
