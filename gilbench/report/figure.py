"""What every gilbench figure shares: a colour-blind-safe palette, the page width, and an Agg figure that saves
to the same bytes for the same data (matplotlib's object API, no pyplot state)."""

from __future__ import annotations

from pathlib import Path

# Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies, and in greyscale by lightness.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
OUTCOME_COLORS = {"win": "#0072B2", "tie": "#BBBBBB", "lose": "#E69F00"}  # blue / grey / orange, not red / green
PAGE_WIDTH = 8.0  # inches: every figure fits a page's width at 110 dpi (880 px)
CONTEXT = "#CCCCCC"  # the other panels' mean curves, drawn thin behind each panel for reference


def figure(rows: int, cols: int, width: float, height: float, **share):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **share)


def save(fig, path: Path) -> Path:
    import matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp, so the same results give the same bytes; the version, since another one may draw other pixels.
    fig.savefig(path, metadata={"Software": f"matplotlib {matplotlib.__version__}"})
    return path
