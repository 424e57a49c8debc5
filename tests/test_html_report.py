"""`gilbench report`: one static HTML page from synthetic stored results, checked as text and rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gilbench.cli import main
from gilbench.errors import GilbenchError
from gilbench.report.html import build_report

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import TASK, make_store  # noqa: E402

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    runs = make_store(root / "runs", steps=20)
    out = root / "report.html"
    assert main(["report", "--task", TASK, "--output-dir", str(runs), "--out", str(out)]) == 0
    return runs, out


def test_report_holds_tables_plots_and_every_judged_pair(report):
    runs, out = report
    html = out.read_text()
    n_pairs = sum(len(p.read_text().splitlines()) for p in (runs / TASK / "compare").glob("*/*/judgments.jsonl"))
    assert html.count("<div class=pair ") == n_pairs > 0
    assert "Win / tie / lose" in html and html.count("<table>") >= 5  # the table specs, then one summary per comparison
    if pytest.importorskip("matplotlib"):
        assert len(re.findall(r"src='data:image/png;base64,", html)) >= 4
    assert "http://" not in html and "https://" not in html  # nothing fetched: the page stands alone
    for key in ("cmp", "split", "group", "verdict"):
        assert f"<select data-key='{key}'>" in html
    assert "data-split='ood:hypotheticals'" in html and "data-group='computers'" in html
    assert build_report(runs, TASK) == html.rstrip("\n") + "\n"  # the same store gives the same bytes
    with pytest.raises(GilbenchError, match=r"no runs or comparisons of task 'nope'"):
        build_report(runs, "nope")


def test_text_is_escaped(tmp_path):
    from report_fixtures import write_compare

    runs = tmp_path / "runs"
    write_compare(runs, TASK, "gil", "ppo", {"id": 0.6, "ood": 0.5}, seeds=(0,))
    path = next((runs / TASK / "compare").glob("*/*/judgments.jsonl"))
    path.write_text(path.read_text().replace('"prompt": "', '"prompt": "<script>alert(1)</script> ', 1))
    html = build_report(runs, TASK)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def screenshot(page: Path, shot: Path, height: int):
    """Chromium's own rendering of ``page`` (a fresh profile; no network is needed or used)."""
    from PIL import Image

    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={shot.parent / 'profile'}",
            f"--window-size=1280,{height}",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    return Image.open(shot).convert("L")


def assert_not_blank(image, size):
    from PIL import ImageStat

    assert image.size == size
    assert ImageStat.Stat(image).stddev[0] > 20  # text, tables and plots on white; a blank page has stddev ~0
    dark = sum(image.histogram()[:128]) / (size[0] * size[1])
    assert 0.01 < dark < 0.6  # some ink, not a black or error page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from report_fixtures import write_compare

    assert_not_blank(screenshot(report[1], tmp_path / "top.png", 1600), (1280, 1600))
    # a store with one comparison only: the judged pairs come within the first screen
    runs = tmp_path / "runs"
    write_compare(runs, TASK, "gil", "ppo", {"id": 0.6, "ood": 0.5}, seeds=(0,))
    page = tmp_path / "pairs.html"
    page.write_text(build_report(runs, TASK))
    image = screenshot(page, tmp_path / "pairs.png", 2400)
    assert_not_blank(image, (1280, 2400))
    assert_not_blank(image.crop((0, 1600, 1280, 2400)), (1280, 800))  # the pairs, further down, are drawn too
