"""ruff check (configured in pyproject.toml) passes on the package (methods included), the task files' package and the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# TEMPORARY, for the merge of the parallel branches (issue 11): files other branches are rewriting at the time
# of writing. The lead removes this list once those branches are merged and `ruff format` has run over the tree.
PENDING_MERGE = [
    "gilbench/models/",  # speed
]

def test_ruff_check_passes():
    try:
        import ruff  # noqa: F401
    except ImportError:
        raise AssertionError("ruff is not installed: pip install -e '.[test]' (it is in the test extra)") from None
    exclude = [x for path in PENDING_MERGE for x in ("--extend-exclude", path)]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--force-exclude", "--output-format", "concise", *exclude,
                             "gilbench", "tasks", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
