"""A small table model and its three renderings: Markdown, LaTeX (booktabs) and CSV.

Cells are strings formatted by the helpers below (fixed decimals, no locale, no timestamps), so the same stored
results always render to the same bytes.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

DASH = "—"  # a value that is not stored (missing comparison, no runs); the table's notes say why
DAGGER = "†"


@dataclass
class Table:
    name: str
    title: str
    columns: list[tuple[str, str]]  # (group, label); consecutive columns with the same group share a header
    rows: list[list[str] | None] = field(default_factory=list)  # None: a rule between sections
    notes: list[str] = field(default_factory=list)
    n_label_columns: int = 1  # leading text columns (left-aligned); the rest are right-aligned


# ------------------------------------------------------------------------------------------ number formats
def num(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return DASH
    text = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return text.replace("-", "+" if signed else "") if float(text) == 0 else text  # no "-0.0"


def pct(x: float | None, digits: int = 1, signed: bool = False) -> str:
    return DASH if x is None else num(100 * x, digits, signed)


def num_ci(x: float | None, ci: list[float] | None, digits: int = 3, signed: bool = False) -> str:
    """``x [lo, hi]`` (just ``x`` without an interval)."""
    if x is None:
        return DASH
    return num(x, digits, signed) + (f" [{num(ci[0], digits, signed)}, {num(ci[1], digits, signed)}]" if ci else "")


def pct_ci(x: float | None, ci: list[float] | None, digits: int = 1, signed: bool = False) -> str:
    return DASH if x is None else num_ci(100 * x, ci and [100 * c for c in ci], digits, signed)


def mean_sd(stat: dict | None, digits: int = 3, signed: bool = False) -> str:
    """``{"mean", "sd", "n"}`` as "m ± sd" (no SD from one seed)."""
    if not stat or stat.get("mean") is None:
        return DASH
    text = num(stat["mean"], digits, signed)
    return text + (f" ± {num(stat['sd'], digits)}" if stat.get("sd") is not None else "")


# ------------------------------------------------------------------------------------------ renderers
def _labels(table: Table) -> list[str]:
    return [f"{g} {c}".strip() for g, c in table.columns]


def to_markdown(table: Table) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(esc(c) for c in _labels(table)) + " |",
        "|" + "|".join(":---" if i < table.n_label_columns else "---:" for i in range(len(table.columns))) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows if row is not None]
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_labels(table))
    writer.writerows(row for row in table.rows if row is not None)
    return buf.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_UNICODE = {
    "±": r"$\pm$",
    DAGGER: r"$^{\dagger}$",
    DASH: "---",
    "−": "$-$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "–": "--",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "<": r"$<$",
    ">": r"$>$",
}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    out = "".join(_LATEX_UNICODE.get(ch, ch) for ch in out)
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", out)  # `code` in notes


def to_latex(table: Table) -> str:
    n = len(table.columns)
    spec = "l" * table.n_label_columns + "r" * (n - table.n_label_columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]+', '-', table.name)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    if any(g for g, _ in table.columns):
        spans, i = [], 0
        while i < n:
            j = i
            while j + 1 < n and table.columns[j + 1][0] == table.columns[i][0]:
                j += 1
            spans.append((table.columns[i][0], i + 1, j + 1))
            i = j + 1
        lines.append(
            " & ".join(
                rf"\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}" if b > a else latex_escape(g)
                for g, a, b in spans
            )
            + r" \\"
        )
        lines.append("".join(rf"\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
    lines.append(" & ".join(latex_escape(c) for _, c in table.columns) + r" \\")
    lines.append(r"\midrule")
    body = list(table.rows)
    while body and body[-1] is None:
        body.pop()
    for row in body:
        lines.append(r"\midrule" if row is None else " & ".join(latex_escape(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(
            r"\par\smallskip{\footnotesize\raggedright "
            + r"\par ".join(latex_escape(x) for x in table.notes)
            + r"\par}"
        )
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


RENDERERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}
