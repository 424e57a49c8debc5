"""The committed tables regenerate byte for byte from the committed runs, by the commands results/README.md gives."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from gilbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    shlex.split(line.split("#", 1)[0])
    for line in (ROOT / "results" / "README.md").read_text(encoding="utf-8").splitlines()
    if re.match(r"\s*gilbench table .*--out results/tables/", line)
]


def skip_if_runs_in_flight(tasks: list[str]) -> None:
    """A run still training beside the committed ones (its files not in git) would enter the regenerated figures:
    the check is for the committed store, so it runs where there is none (a clean clone: .ci/run)."""
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "results/runs"], capture_output=True, text=True
    ).stdout.splitlines()
    if not tracked:  # not a git checkout: the tree is what was shipped
        return
    local = [
        p.relative_to(ROOT).as_posix()
        for task in tasks
        for p in (ROOT / "results" / "runs" / task).glob("*/seed*/metrics.jsonl")
    ]
    in_flight = sorted(set(local) - set(tracked))
    if in_flight:
        pytest.skip(
            f"runs not committed in the store: {', '.join(in_flight)}; run this check in a clean clone (.ci/run)"
        )


def test_the_readme_lists_every_committed_table():
    listed = {Path(argv[argv.index("--out") + 1]).name for argv in COMMANDS}
    committed = {p.name for p in (ROOT / "results" / "tables").iterdir()}
    assert committed <= listed | {"README.md"}, f"tables without a command in results/README.md: {committed - listed}"


@pytest.mark.parametrize(
    "argv", [a for a in COMMANDS if (ROOT / a[a.index("--out") + 1]).exists()], ids=lambda a: a[-1]
)
def test_a_committed_table_regenerates_byte_for_byte(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands' paths are relative to the repository
    if "--tasks" in argv:
        skip_if_runs_in_flight(argv[argv.index("--tasks") + 1].split(","))
    out = argv.index("--out") + 1
    committed = ROOT / argv[out]
    assert main([*argv[1:out], str(tmp_path / committed.name), *argv[out + 1 :]]) == 0
    assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), f"regenerate it: {' '.join(argv)}"


PLOTS = [
    shlex.split(line.split("#", 1)[0])
    for line in (ROOT / "results" / "README.md").read_text(encoding="utf-8").splitlines()
    if re.match(r"\s*gilbench plot .*--out-dir results/plots", line)
]


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


@pytest.mark.parametrize("argv", PLOTS, ids=lambda a: _flag(a, "--name") or _flag(a, "--task"))
def test_committed_plots_regenerate_byte_for_byte(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    task = _flag(argv, "--task")
    skip_if_runs_in_flight([task])
    stem = _flag(argv, "--name") or task
    committed = sorted((ROOT / "results" / "plots").glob(f"{stem}_*.png"))
    if not committed:
        pytest.skip(f"no committed plots named {stem}_*.png yet")
    import matplotlib
    from PIL import Image

    made_with = Image.open(committed[0]).info.get("Software")
    if made_with != f"matplotlib {matplotlib.__version__}":  # another version may anti-alias differently
        pytest.skip(f"{committed[0].name} was drawn by {made_with}, this is matplotlib {matplotlib.__version__}")
    out = argv.index("--out-dir") + 1
    assert main([*argv[1:out], str(tmp_path), *argv[out + 1 :]]) == 0
    for png in committed:
        assert (tmp_path / png.name).read_bytes() == png.read_bytes(), f"regenerate it: {' '.join(argv)}"
