"""Tables from the runs' per-step metrics: ``stability`` (collapse flags, frontier numbers), ``groups`` (GIL's groups)
and ``frontier`` (proxy vs gold along training, from the runs' judge curves)."""

from __future__ import annotations

from dataclasses import asdict

from gilbench.eval.stats import welch_difference
from gilbench.report import store
from gilbench.report.gold_frontier import method_paths, summarise_method
from gilbench.report.render import DASH, Table, mean_sd, num, num_ci
from gilbench.report.selection import GIL_FAMILY, methods_of, tasks_of, with_sections
from gilbench.report.spec import TableSpec
from gilbench.report.stability import Thresholds, analyse_method
from gilbench.report.stability import mean_sd as stat_mean_sd

STABILITY_HEADERS = {
    "final": ("Score", "final"),
    "best": ("Score", "best"),
    "best_step": ("Score", "best step"),
    "max_kl": ("", "Max KL"),
    "ev_final": ("Explained var.", "final"),
    "ev_mean": ("Explained var.", "mean"),
    "length": ("Collapse flags", "length"),
    "repetition": ("Collapse flags", "repetition"),
    "kl": ("Collapse flags", "KL"),
    "judge": ("Collapse flags", "judge↓"),
}
STABILITY_NUMBERS = {
    "final": ("final_score", 3),
    "best": ("best_score", 3),
    "best_step": ("best_step", 0),
    "max_kl": ("max_kl", 2),
    "ev_final": ("ev_final", 2),
    "ev_mean": ("ev_mean", 2),
}


def flag_cell(f: dict) -> str:
    if f["n"] == 0:
        return "n/a"
    return f"{f['fired']}/{f['n']}" + (f" @ {num(f['mean_step'], 0)}" if f["fired"] else "")


def build_stability(spec: TableSpec, output_dir) -> Table:
    th = Thresholds.from_dict(spec.thresholds)
    tasks = tasks_of(spec, output_dir)
    lead = [("", "Task"), ("", "Method"), ("", "Seeds")]
    table = Table(spec.name, spec.title, lead + [STABILITY_HEADERS[c] for c in spec.columns], n_label_columns=2)
    blocks, empty = [], []
    for t in tasks:
        block = []
        for m in methods_of(spec, output_dir, t, None):
            agg = analyse_method(output_dir, t, m, th)["aggregate"]
            if agg is None and spec.methods == "auto":
                continue  # auto: only methods with rollouts
            if agg is None:
                empty.append(f"{m} ({t})")
                block.append([t, spec.label(m), "0"] + [DASH] * len(spec.columns))
                continue
            cells = {c: mean_sd(agg[key], digits) for c, (key, digits) in STABILITY_NUMBERS.items()}
            cells |= {c: flag_cell(agg["flags"][c]) for c in ("length", "repetition", "kl", "judge")}
            block.append([t, spec.label(m), str(agg["n"])] + [cells[c] for c in spec.columns])
        blocks.append(block)
    table.rows = with_sections(blocks)
    d = asdict(th)
    table.notes += [
        (
            f"Score: reward-model score of the training rollouts, trailing mean over {th.smooth} steps; best step: where the best "
            "trailing mean ends; max KL: largest per-step sequence KL (nats); explained variance of the critic, final "
            f"(last {th.smooth} steps) and mean; mean ± SD across seeds."
        ),
        (
            f"Collapse flags: seeds fired / seeds @ mean step it fired. length: mean length > {d['length_factor']:g} x its median "
            f"over the first {th.early_steps} steps; repetition: repeated-3-gram share > {d['repetition']:g}; KL: > {d['kl_max']:g} nats, "
            f"or window-median rise over {th.kl_window} steps ≥ {d['kl_accel']:g} x max(previous rise, {d['kl_min_rise']:g}); "
            f"thresholds must hold {th.patience} consecutive steps. judge↓: score up while the judge win rate falls "
            f"{100 * d['judge_drop']:g} points and {d['judge_z']:g} standard errors below its best point, {th.patience} points running (win rate against the starting policy on the run's own samples, "
            f"`gilbench judge-curve`); n/a for runs without a judge_curve.jsonl."
        ),
    ]
    if empty:
        table.notes.append(
            f"{DASH} no per-step rollout metrics (not stored, or a method without rollouts such as SFT or DPO): "
            + "; ".join(empty)
            + "."
        )
    return table


def group_summary(rows: list[dict], last: int) -> dict | None:
    """Means over the last ``last`` steps of: group scores ranked high to low at each step, worst, gap, nmi, purity;
    and over every step: the share with a negative group gradient weight (gil/negative_weight)."""
    rows = [r for r in rows if any(k.startswith("group/") for k in r)]
    if not rows:
        return None
    tail = rows[-last:]
    ranked = []
    for r in tail:
        scores = [
            v
            for k, v in r.items()
            if k.startswith("group/") and k.endswith("/score") and k.count("/") == 2 and v is not None
        ]
        ranked.append(sorted(scores, reverse=True))
    n_groups = max(len(x) for x in ranked)
    out = {"ranks": [_mean([x[g] for x in ranked if len(x) > g]) for g in range(n_groups)]}
    for name in ("worst", "gap", "nmi", "purity"):
        out[name] = _mean([r.get(f"group/{name}") for r in tail])
    out["negative"] = _mean([r.get("gil/negative_weight") for r in rows])  # the whole run: a property of the objective
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def build_groups(spec: TableSpec, output_dir) -> Table:
    tasks = tasks_of(spec, output_dir)
    found: dict[tuple[str, str], list[dict]] = {}
    for t in tasks:
        for m in methods_of(spec, output_dir, t, None):
            runs = [
                g
                for g in (
                    group_summary(store.read_metrics(d), spec.last_steps)
                    for d in store.finished_seed_dirs(output_dir, t, m)
                )
                if g
            ]
            if runs or (spec.methods != "auto" or m in GIL_FAMILY):
                found[(t, m)] = runs
    n_groups = max((len(g["ranks"]) for runs in found.values() for g in runs), default=0)
    names = {
        "worst": ("", "Worst"),
        "gap": ("", "Gap"),
        "nmi": ("Agreement", "NMI"),
        "purity": ("Agreement", "purity"),
        "negative": ("", "Neg. weight"),
    }
    headers = {
        "groups": [("Group score, ranked", f"#{g + 1}") for g in range(n_groups)],
        **{k: [v] for k, v in names.items()},
    }
    table = Table(
        spec.name,
        spec.title,
        [("", "Task"), ("", "Method"), ("", "Seeds")] + [h for c in spec.columns for h in headers[c]],
        n_label_columns=2,
    )
    blocks, empty = [], []
    for t in tasks:
        block = []
        for (task, m), runs in found.items():
            if task != t:
                continue
            if not runs:
                empty.append(f"{m} ({t})")
            cells = {
                "groups": [
                    mean_sd(stat_mean_sd([g["ranks"][k] if len(g["ranks"]) > k else None for g in runs]))
                    for k in range(n_groups)
                ]
            }
            cells |= {k: [mean_sd(stat_mean_sd([g[k] for g in runs]), 3)] for k in names}
            block.append([t, spec.label(m), str(len(runs))] + [x for c in spec.columns for x in cells[c]])
        blocks.append(block)
    table.rows = with_sections(blocks)
    table.notes.append(
        f"Means over the last {spec.last_steps} steps of each run, then mean ± SD across seeds. Group score: reward-model "
        "score of each inferred (soft) group, ranked high to low at each step (group numbers are arbitrary per run). "
        "Worst / gap: lowest group performance and highest minus lowest (group/worst, group/gap). Agreement of the "
        "inferred groups (argmax) with the task's known groups: normalised mutual information and purity. Neg. weight: "
        "share of all updates where some inferred group's effective gradient weight was negative (gil/negative_weight; "
        "docs/GIL.md, Effective weights)."
    )
    if empty:
        table.notes.append(
            f"{DASH} no group metrics stored (no runs, or not a GIL-style method): " + "; ".join(empty) + "."
        )
    return table


FRONTIER_COLUMNS = {  # column -> (header group, header, summary key, digits)
    "start": ("Gold", "start", "start_gold", 3),
    "peak": ("Gold", "peak", "peak_gold", 3),
    "peak_step": ("Gold", "peak step", "peak_step", 0),
    "peak_kl": ("Gold", "√KL at peak", "peak_sqrt_kl", 2),
    "end": ("Gold", "end", "end_gold", 3),
    "late": ("Gold", "last 2 windows", "late_gold", 3),
    "drop": ("Gold", "peak − end", "drop", 3),
    "end_proxy": ("Proxy", "end", "end_proxy", 3),
    "end_kl": ("", "√KL end", "end_sqrt_kl", 2),
    "gap": ("Group gap", "first → end", None, 3),
    "worst": ("Gold", "worst group, last 2", "worst_late", 3),
}


def difference_cell(a: dict | None, b: dict | None, digits: int) -> str:
    """Row method minus baseline across seeds: the difference of means [95 % Welch t-interval]."""
    d = welch_difference(a, b)
    return DASH if d is None else num_ci(d["diff"], d["ci"], digits, signed=True)


def frontier_difference_row(spec: TableSpec, task: str, m: str, b: str, agg: dict, base: dict | None) -> list[str]:
    cells = []
    for c in spec.columns:
        if c == "matched":
            cells += [difference_cell(agg[f"gold@{x:g}"], base and base[f"gold@{x:g}"], 3) for x in spec.sqrt_kl]
        elif c == "gap":
            cells.append(difference_cell(agg["gap_end"], base and base["gap_end"], 3))
        else:
            key, digits = FRONTIER_COLUMNS[c][2:]
            cells.append(difference_cell(agg[key], base and base[key], digits))
    seeds = f"{agg['n']} vs {base['n'] if base else 0}"
    return [task, f"{spec.label(m)} − {spec.label(b)}", seeds] + cells


def build_frontier(spec: TableSpec, output_dir) -> Table:
    headers = []
    for c in spec.columns:
        if c == "matched":
            headers += [("Gold at matched KL", f"√KL={x:g}") for x in spec.sqrt_kl]
        else:
            headers.append(FRONTIER_COLUMNS[c][:2])
    table = Table(spec.name, spec.title, [("", "Task"), ("", "Method"), ("", "Seeds")] + headers, n_label_columns=2)
    blocks, empty = [], []
    for t in tasks_of(spec, output_dir):
        block, aggs = [], {}
        for m in methods_of(spec, output_dir, t, None):
            agg = aggs[m] = summarise_method(method_paths(output_dir, t, m), spec.sqrt_kl)
            if agg is None:
                if spec.methods != "auto":
                    empty.append(f"{m} ({t})")
                    block.append([t, spec.label(m), "0"] + [DASH] * len(headers))
                continue
            cells = []
            for c in spec.columns:
                if c == "matched":
                    cells += [mean_sd(agg[f"gold@{x:g}"], 3) for x in spec.sqrt_kl]
                elif c == "gap":
                    first, end = mean_sd(agg["gap_first"], 3), mean_sd(agg["gap_end"], 3)
                    cells.append(DASH if first == end == DASH else f"{first} → {end}")
                else:
                    cells.append(mean_sd(agg[FRONTIER_COLUMNS[c][2]], FRONTIER_COLUMNS[c][3]))
            block.append([t, spec.label(m), str(agg["n"])] + cells)
            for b in (b for b in spec.baselines if b != m):
                if b not in aggs:
                    aggs[b] = summarise_method(method_paths(output_dir, t, b), spec.sqrt_kl)
                    if aggs[b] is None and f"{b} ({t})" not in empty:
                        empty.append(f"{b} ({t})")
                block.append(frontier_difference_row(spec, t, m, b, agg, aggs[b]))
        blocks.append(block)
    table.rows = with_sections(blocks)
    late = "; last 2 windows: their mean" if "late" in spec.columns else ""
    table.notes.append(
        "Gold: the judge's mean score of each run's training samples per window of steps (`gilbench judge-curve RUN "
        "--judge <gold judge>`); start: the starting policy on the same prompts; peak: the best window (its step and "
        "√KL, KL = the window's mean sequence KL in nats; as the best of noisy windows it reads high, so peak − end "
        "does too: benchmarks/gold_fall.py measures the fall with the peak picked on other samples); end: the last "
        f"window{late}; proxy: the reward-model score the policy was trained on. Gold at matched KL: each run's path "
        "interpolated at that √KL (— if no seed got that far; fewer seeds if some did not). Group gap: highest minus "
        "lowest prompt group's gold, first and last window. Mean ± SD across seeds."
    )
    if "worst" in spec.columns:
        table.notes[-1] += " Worst group: the lowest prompt group's gold in each of the last two windows, their mean."
    if spec.baselines:
        table.notes.append(
            "Rows A − B: the difference of A's and B's means across seeds (seeds of different methods, unpaired) "
            "[95 % Welch t-interval; none without 2 seeds of each]; the group-gap cell is that of the end window."
        )
    if empty:
        table.notes.append(f"{DASH} no judge curve with scores stored: " + "; ".join(empty) + ".")
    return table
