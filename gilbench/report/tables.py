"""Tables from stored comparisons: ``winrate`` (the paper's Table 1), ``ood`` (ID vs OOD and the gap) and ``ablation``.

Each builder takes a ``TableSpec`` and the run store and returns a ``render.Table``. What is not stored shows as
``—`` and a note says what is missing and how to make it; nothing is filled in. Run-metric tables (stability,
groups) are in ``tables_runs.py``; ``build_table`` dispatches on the spec's kind.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gilbench.errors import GilbenchError
from gilbench.report import store
from gilbench.report.render import DAGGER, DASH, RENDERERS, Table, mean_sd, num_ci, pct, pct_ci
from gilbench.report.selection import GIL_FAMILY, methods_of, mixed_config_note, tasks_of, with_sections
from gilbench.report.spec import TableSpec, load_spec
from gilbench.report.stability import mean_sd as stat_mean_sd
from gilbench.report.tables_runs import build_frontier, build_groups, build_stability
from gilbench.store import DEFAULT_OUTPUT_DIR

HEALTH = (
    ("position_flip_rate", "position flips"),
    ("first_position_win_rate", "first-position wins"),
    ("longer_wins_rate", "longer wins"),
    ("invalid_rate", "invalid verdicts"),
)


def sel_label(selector: str) -> str:
    return selector.upper() if selector in ("id", "ood") else selector


class Comparisons:
    """The table's judge, the comparisons it reads, and notes on what is missing or flipped."""

    def __init__(self, spec: TableSpec, output_dir, pairs: list[tuple[str, str, str]]):
        self.output_dir, self.notes, self.missing, self.flipped, self.used = output_dir, [], [], [], []
        counts = Counter(j for t, a, b in pairs for j in store.judges_for(output_dir, t, a, b))
        self.judge = store.judge_id(spec.judge) or (min(counts, key=lambda j: (-counts[j], j)) if counts else None)
        if not spec.judge and len(counts) > 1:
            others = ", ".join(j for j in sorted(counts) if j != self.judge)
            self.notes.append(
                f"Judge {self.judge} (the most common; also stored: {others}; set judge: in the spec to choose)."
            )

    def get(self, task: str, a: str, b: str) -> dict | None:
        r = store.load_compare(self.output_dir, task, a, b, self.judge) if self.judge else None
        if r is None:
            self.missing.append(f"{a} vs {b} ({task})")
        else:
            self.used.append(r)
            if r["flipped"]:
                self.flipped.append(f"{a} vs {b} ({task})")
        return r

    def pick(self, r: dict | None, selectors: list[str], what: str) -> list[dict | None]:
        """The entries of the selected splits; a split the comparison lacks is noted."""
        picked = [store.select(r, s) if r else None for s in selectors]
        lacking = [s for s, e in zip(selectors, picked) if r and e is None]
        if lacking:
            self.notes.append(f"{what}: no split {', '.join(lacking)} in the stored comparison.")
        return picked

    def finish(self, table: Table) -> None:
        if self.judge and self.used:
            table.notes.append(
                f"Judge {self.judge}; seeds paired: {', '.join(sorted({str(r.get('seeds')) for r in self.used}))}."
            )
        table.notes.extend(self.notes)
        if self.flipped:
            table.notes.append(
                "Read from the opposite comparison (win and lose swapped; no gap CI): " + "; ".join(self.flipped) + "."
            )
        if self.missing:
            which = f" (the judge stored here as {self.judge})" if self.judge else ""
            table.notes.append(
                f"{DASH} not stored, not estimated: "
                + "; ".join(self.missing)
                + f". Make one with `gilbench compare A B --task T --judge J`{which}."
            )


def health_note(entries: list[dict]) -> str | None:
    parts = []
    for key, label in HEALTH:
        vals = [e["health"][key] for e in entries if e.get("health", {}).get(key) is not None]
        if vals:
            parts.append(f"{label} {pct(min(vals))}–{pct(max(vals))} %")
    return "Judge health over the cells: " + ", ".join(parts) + "." if parts else None


def rate_cells(e: dict | None, columns: list[str], alpha: float) -> list[str]:
    if e is None or e.get("win") is None:
        return [DASH] * len(columns)
    st = e.get("sign_test") or {}
    mark = st.get("p") is not None and st["p"] < alpha and st.get("wins") != st.get("losses")
    side = "win" if (st.get("wins") or 0) > (st.get("losses") or 0) else "lose"
    cells = {k: pct_ci(e[k], e.get(f"{k}_ci")) + (DAGGER if mark and k == side else "") for k in ("win", "tie", "lose")}
    cells |= {"n": str(e["n"]), "p": f"{st['p']:.3g}" if st.get("p") is not None else DASH}
    d = e.get("score_difference")
    cells["diff"] = num_ci(d["diff"], d["diff_ci"], signed=True) if d else DASH
    seeds = (d or {}).get("across_seeds")
    cells["seed_diff"] = num_ci(seeds["mean"], seeds["ci"], signed=True) + f" ({seeds['k']})" if seeds else DASH
    w = e.get("win_seeds")
    ci = w and w["ci"] and [max(0.0, w["ci"][0]), min(1.0, w["ci"][1])]  # a rate's interval stays within 0-100 %
    cells["seed_win"] = DASH if not w else pct_ci(w["mean"], ci) + f" ({w['k']})"
    return [cells[c] for c in columns]


# The row methods of each comparison kind when the spec says `methods: auto` (the run tables use every method).
DEFAULT_ROWS = {"winrate": ["gil"], "ood": ["gil"], "ablation": GIL_FAMILY}


def build_winrate(spec: TableSpec, output_dir) -> Table:
    tasks = tasks_of(spec, output_dir)
    plan = {
        t: [(m, b) for m in methods_of(spec, output_dir, t, DEFAULT_ROWS["winrate"]) for b in spec.baselines if b != m]
        for t in tasks
    }
    comps = Comparisons(spec, output_dir, [(t, m, b) for t in tasks for m, b in plan[t]])
    show_method = len({m for t in tasks for m, _ in plan[t]}) > 1
    names = {
        "win": "Win",
        "tie": "Tie",
        "lose": "Lose",
        "n": "N",
        "p": "p",
        "diff": "Δ score",
        "seed_diff": "Δ seeds",
        "seed_win": "Win seeds",
    }
    lead = [("", "Task")] + ([("", "Method")] if show_method else []) + [("", "vs")]
    table = Table(
        spec.name,
        spec.title,
        lead + [(sel_label(s), names[c]) for s in spec.splits for c in spec.columns],
        n_label_columns=len(lead),
    )
    blocks, entries = [], []
    for t in tasks:
        block = []
        for m, b in plan[t]:
            r = comps.get(t, m, b)
            picked = comps.pick(r, spec.splits, f"{m} vs {b} ({t})")
            entries += [e for e in picked if e]
            row = [t] + ([spec.label(m)] if show_method else []) + [spec.label(b)]
            block.append(row + [c for e in picked for c in rate_cells(e, spec.columns, spec.alpha)])
        blocks.append(block)
    table.rows = with_sections(blocks)
    table.notes.append(
        "Win / tie / lose: % of N judged pairs (prompts x seeds) for the row's method, each order judged; "
        f"[95 % bootstrap CI, prompts resampled]; {DAGGER} two-sided sign test p < {spec.alpha:g} (ties left out)."
    )
    if "diff" in spec.columns:
        table.notes.append(
            "Δ score: the score judge's paired difference, row method minus opponent, on the same prompt and seed "
            "[95 % CI, prompts resampled]; — for judges without scores."
        )
    if "seed_win" in spec.columns:
        table.notes.append(
            "Win seeds: the mean of each training seed's win rate with a 95 % t-interval over seeds, cut to 0-100 % "
            "(seeds in brackets)."
        )
    if "seed_diff" in spec.columns:
        table.notes.append(
            "Δ seeds: the same difference as the mean of each training seed's paired difference, with a 95 % t-interval "
            "over seeds (seeds in brackets; no interval with one): what retraining would give, which resampling "
            "prompts does not see."
        )
    note = health_note(entries)
    if note:
        table.notes.append(note)
    comps.finish(table)
    return table


def build_ood(spec: TableSpec, output_dir) -> Table:
    tasks, sels = tasks_of(spec, output_dir), spec.splits
    plan = {
        t: [(m, b) for m in methods_of(spec, output_dir, t, DEFAULT_ROWS["ood"]) for b in spec.baselines if b != m]
        for t in tasks
    }
    comps = Comparisons(spec, output_dir, [(t, m, b) for t in tasks for m, b in plan[t]])
    first, last = sel_label(sels[0]), sel_label(sels[-1])
    headers = {
        "win": [("Win %", sel_label(s)) for s in sels],
        "gap": [("Win %", f"Δ {first}−{last}")],
        "rm": [("RM score A−B", sel_label(s)) for s in sels],
    }
    table = Table(
        spec.name,
        spec.title,
        [("", "Task"), ("", "Method"), ("", "vs")] + [h for c in spec.columns for h in headers[c]],
        n_label_columns=3,
    )
    blocks = []
    for t in tasks:
        block = []
        for m, b in plan[t]:
            r = comps.get(t, m, b)
            picked = comps.pick(r, sels, f"{m} vs {b} ({t})")
            cells = {
                "win": [rate_cells(e, ["win"], spec.alpha)[0] for e in picked],
                "gap": [DASH],
                "rm": [DASH] * len(sels),
            }
            if (
                r
                and picked[0]
                and picked[-1]
                and picked[0].get("win") is not None
                and picked[-1].get("win") is not None
            ):
                gap = r.get("gap_id_minus_ood") if sels[0] == "id" and sels[-1] == "ood" else None
                cells["gap"] = [
                    pct_ci(gap["win"], gap["ci"], signed=True)
                    if gap
                    else pct(picked[0]["win"] - picked[-1]["win"], signed=True)
                ]
            if r:
                rms = [store.select_rm(r, s) for s in sels]
                cells["rm"] = [
                    mean_sd({"mean": x["a"]["mean"] - x["b"]["mean"]}, signed=True)
                    if x and x["a"].get("mean") is not None and x["b"].get("mean") is not None
                    else DASH
                    for x in rms
                ]
            block.append([t, spec.label(m), spec.label(b)] + [x for c in spec.columns for x in cells[c]])
        blocks.append(block)
    table.rows = with_sections(blocks)
    table.notes.append(
        f"Win % of the row's method [95 % bootstrap CI]; Δ {first}−{last}: the win-rate gap in points "
        f"(CI from the two bootstrap streams where stored); {DAGGER} sign test p < {spec.alpha:g}. "
        "RM score A−B: mean reward-model score difference on the paired prompts (each run's own reward model)."
    )
    comps.finish(table)
    return table


def build_ablation(spec: TableSpec, output_dir) -> Table:
    tasks, sels = tasks_of(spec, output_dir), spec.splits
    plan = {t: methods_of(spec, output_dir, t, DEFAULT_ROWS["ablation"]) for t in tasks}
    comps = Comparisons(spec, output_dir, [(t, m, b) for t in tasks for m in plan[t] for b in spec.baselines if b != m])
    headers = {
        "score": [("RM score", sel_label(s)) for s in sels],
        "win": [(f"Win % vs {spec.label(b)}", sel_label(s)) for b in spec.baselines for s in sels],
        "diff": [(f"Δ score vs {spec.label(b)}", sel_label(s)) for b in spec.baselines for s in sels],
        "seed_diff": [(f"Δ seeds vs {spec.label(b)}", sel_label(s)) for b in spec.baselines for s in sels],
    }
    table = Table(
        spec.name,
        spec.title,
        [("", "Task"), ("", "Method"), ("", "Seeds")] + [h for c in spec.columns for h in headers[c]],
        n_label_columns=2,
    )
    blocks, absent = [], []
    for t in tasks:
        block = []
        for m in plan[t]:
            summaries = [s for s in (store.read_summary(d) for d in store.seed_dirs(output_dir, t, m)) if s]
            if not summaries:
                absent.append(f"{m} ({t})")
            cells = {
                "score": [mean_sd(stat_mean_sd([store.summary_score(s, sel) for s in summaries])) for sel in sels],
                "win": [],
                "diff": [],
                "seed_diff": [],
            }
            for b in spec.baselines:
                r = comps.get(t, m, b) if b != m else None
                for e in comps.pick(r, sels, f"{m} vs {b} ({t})"):
                    for column in ("win", "diff", "seed_diff"):
                        cells[column].append(rate_cells(e, [column], spec.alpha)[0])
            block.append([t, spec.label(m), str(len(summaries))] + [x for c in spec.columns for x in cells[c]])
        blocks.append(block)
    table.rows = with_sections(blocks)
    table.notes.append(
        "RM score: each run's mean reward-model score on the split (ID / OOD: n-weighted over their splits), "
        f"mean ± SD across seeds. Win %: [95 % bootstrap CI]; {DAGGER} sign test p < {spec.alpha:g}."
    )
    if {"diff", "seed_diff"} & set(spec.columns):
        table.notes.append(
            "Δ score: the score judge's paired difference, row method minus opponent [95 % CI, prompts resampled]; "
            "Δ seeds: the mean of each training seed's difference with a 95 % t-interval over seeds (seeds in brackets)."
        )
    if absent:
        table.notes.append(f"{DASH} no finished runs (summary.json): " + "; ".join(absent) + ".")
    comps.finish(table)
    return table


def build_table(spec: TableSpec, output_dir: str | Path) -> Table:
    builders = {
        "winrate": build_winrate,
        "ood": build_ood,
        "ablation": build_ablation,
        "stability": build_stability,
        "groups": build_groups,
        "frontier": build_frontier,
    }
    table = builders[spec.kind](spec, output_dir)
    default_rows = DEFAULT_ROWS.get(spec.kind)
    runs = [
        (t, m)
        for t in tasks_of(spec, output_dir)
        for m in dict.fromkeys(
            [*methods_of(spec, output_dir, t, default_rows), *(spec.baselines if default_rows else [])]
        )
    ]
    note = mixed_config_note(spec, output_dir, runs)
    if note:
        table.notes.append(note)
    return table


def render_table(
    spec_name: str,
    fmt: str = "md",
    output_dir: str = DEFAULT_OUTPUT_DIR,
    tasks: list[str] | None = None,
    judge: str | None = None,
) -> str:
    """The table as text; the same stored results always give the same bytes."""
    spec = load_spec(spec_name)
    if tasks:
        spec.tasks = tasks
    if judge:
        spec.judge = judge
    if fmt not in RENDERERS:
        raise GilbenchError(f"--format must be one of {', '.join(RENDERERS)}, got {fmt!r}")
    return RENDERERS[fmt](build_table(spec, output_dir))
