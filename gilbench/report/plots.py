"""PNG plots of stored runs and comparisons (matplotlib's Agg canvas; no display, no pyplot state).

``make_plots(output_dir, task)`` writes into ``out_dir`` (``name`` replaces ``<task>`` in the file names, so a
subset of methods, e.g. one study's grid, gets plots of its own beside the task's). Methods are drawn by *family*,
the first part of the name with the variant dropped (gil, gil@b0.3, gil-no-inv ... are one), at most PANEL_MAX to a
panel:

* ``<task>_curves.png``   score, KL, length and entropy per step: one row per method family, mean over seeds with a
  ± SD band, the other methods' means in grey behind, y axes shared per column;
* ``<task>_groups.png``   GIL-style runs, one panel each (two per row): each inferred group's score per step, groups
  ranked high to low at each step (group numbers are arbitrary per run), mean ± SD over seeds, the batch mean dashed;
* ``<task>_frontier.png`` reward vs KL, one panel per family: each method's path through training (mean KL and score
  over seeds at each step, the last step marked) over every step of every seed (dots);
* ``<task>_winrates.png`` win / tie / lose bars of each stored comparison, ID and OOD side by side (this and the next:
  plots_compare.py);
* ``<task>_differences.png`` comparisons under a score judge (gold, rm): the paired score difference, first method
  minus second, ID and OOD side by side: each training seed's difference, the 95 % interval over seeds (thick)
  and the prompt bootstrap's (thin): the headline "does A beat B" at a glance;
* ``<task>_gold_frontier.png`` runs whose judge curve has a score judge (gold): gold and proxy score against √KL, one
  row per family, each method's mean path over seeds with a ± SD band, the starting policy at √KL 0, the other
  methods' paths in grey behind (gilbench/report/gold_frontier.py);
* ``<task>_judge_curve.png`` runs with a ``judge_curve.jsonl`` (``gilbench judge-curve``): the reward-model score the
  policy was trained on next to the judge's win rate against the starting policy on the same samples, per method,
  mean ± SD over seeds, the other methods' means in grey -- reward hacking shows as the first rising while the second
  falls.

A plot without data is skipped (and said so through ``log``). Colours: Okabe & Ito's colour-blind-safe palette;
legends sit outside the data; figures are at most a page wide (``PAGE_WIDTH`` plus a legend column).
"""

from __future__ import annotations

from pathlib import Path

from gilbench.report import store
from gilbench.report.figure import CONTEXT, OKABE_ITO, PAGE_WIDTH, figure, save
from gilbench.report.gold_frontier import method_paths, start_gold
from gilbench.report.plots_compare import plot_differences, plot_winrates
from gilbench.report.stability import frontier

CURVES = (
    ("objective/score", "reward-model score"),
    ("objective/kl", "KL to reference (nats)"),
    ("completions/mean_length", "mean length (tokens)"),
    ("objective/entropy", "entropy (nats / token)"),
)


def band(per_seed: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and SD across seeds at each step (seeds missing a step are left out of that step)."""
    import numpy as np

    by_step: dict[int, list[float]] = {}
    for steps, values in per_seed:
        for s, v in zip(steps, values):
            by_step.setdefault(s, []).append(v)
    steps = sorted(by_step)
    return (
        steps,
        [float(np.mean(by_step[s])) for s in steps],
        [float(np.std(by_step[s], ddof=1)) if len(by_step[s]) > 1 else 0.0 for s in steps],
    )


def _plot_band(ax, steps, mean, sd, color, label, **kw):
    ax.plot(steps, mean, color=color, label=label, lw=1.6, **kw)
    ax.fill_between(
        steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], color=color, alpha=0.18, lw=0
    )


def family(method: str) -> str:
    """Methods are grouped by the first part of their name, variant dropped: gil, gil@b0.3, gil-no-inv ... are one."""
    return method.split("@")[0].split("-")[0]


PANEL_MAX = 4  # methods drawn in colour in one panel; a larger family continues in the next row


def families(methods: list[str]) -> dict[str, list[str]]:
    """Panels of at most PANEL_MAX methods of one family, titled "gil family" or "gil family (1/3)", in the order
    given."""
    whole: dict[str, list[str]] = {}
    for m in methods:
        whole.setdefault(family(m), []).append(m)
    out: dict[str, list[str]] = {}
    for fam, members in whole.items():
        parts = [members[i : i + PANEL_MAX] for i in range(0, len(members), PANEL_MAX)]
        for k, part in enumerate(parts):
            out[f"{fam} family" + ("" if len(parts) == 1 else f" ({k + 1}/{len(parts)})")] = part
    return out


def _colors(methods: list[str]) -> dict[str, str]:
    """A colour per method, distinct within its panel (each panel holds one family's methods)."""
    return {m: OKABE_ITO[i % len(OKABE_ITO)] for members in families(methods).values() for i, m in enumerate(members)}


def _legend_right(ax) -> None:
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)


def plot_curves(runs: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    """Small multiples: one row per method family, one column per metric; y axes shared down each column."""
    runs = {m: r for m, r in runs.items() if any(store.series(rows, CURVES[0][0])[1] for rows in r)}
    if not runs:
        return None
    colors, fams = _colors(list(runs)), families(list(runs))
    means = {
        (m, name): band([store.series(rows, name) for rows in seeds]) for m, seeds in runs.items() for name, _ in CURVES
    }
    fig, axes = figure(len(fams), len(CURVES), PAGE_WIDTH + 1.6, 0.9 + 1.75 * len(fams), sharex=True, sharey="col")
    for row, members in enumerate(fams.values()):
        for col, (name, label) in enumerate(CURVES):
            ax = axes[row, col]
            for m in runs:
                steps, mean, _ = means[(m, name)]
                if m not in members and steps:
                    ax.plot(steps, mean, color=CONTEXT, lw=0.8, zorder=0)
            for m in members:
                steps, mean, sd = means[(m, name)]
                if steps:
                    _plot_band(ax, steps, mean, sd, colors[m], f"{m} (n={len(runs[m])})")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(label, fontsize=8)
            if row == len(fams) - 1:
                ax.set_xlabel("PPO step", fontsize=8)
        _legend_right(axes[row, -1])
    fig.suptitle(
        f"{task}: training curves by method family, mean ± SD over seeds (grey: the other methods' means)", fontsize=9
    )
    return save(fig, path)


def _ranked_groups(rows: list[dict]) -> list[tuple[list[int], list[float]]]:
    out: list[tuple[list[int], list[float]]] = []
    for r in rows:
        scores = sorted(
            (
                v
                for k, v in r.items()
                if k.startswith("group/") and k.endswith("/score") and k.count("/") == 2 and v is not None
            ),
            reverse=True,
        )
        for g, v in enumerate(scores):
            while len(out) <= g:
                out.append(([], []))
            out[g][0].append(int(r["step"]))
            out[g][1].append(v)
    return out


def plot_groups(runs: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    runs = {m: seeds for m, seeds in runs.items() if any(_ranked_groups(rows) for rows in seeds)}
    if not runs:
        return None
    cols = min(2, len(runs))
    rows_n = (len(runs) + cols - 1) // cols
    fig, axes = figure(rows_n, cols, PAGE_WIDTH, 0.9 + 2.6 * rows_n, sharex=True, sharey=True)
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    for ax, (m, seeds) in zip(axes.flat, runs.items()):
        per_seed = [_ranked_groups(rows) for rows in seeds]
        n_groups = max(len(x) for x in per_seed)
        for g in range(n_groups):
            steps, mean, sd = band([x[g] for x in per_seed if len(x) > g])
            rank = " (highest)" if g == 0 else " (lowest)" if g == n_groups - 1 else ""
            _plot_band(ax, steps, mean, sd, OKABE_ITO[g % len(OKABE_ITO)], f"group #{g + 1}{rank}")
        steps, mean, _ = band([store.series(rows, "objective/score") for rows in seeds])
        ax.plot(steps, mean, color="black", ls="--", lw=1.2, label="batch mean")
        ax.set_title(f"{m} (n={len(seeds)} seeds)", fontsize=9)
        ax.set_xlabel("PPO step", fontsize=8)
        ax.set_ylabel("reward-model score", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = next(iter(axes.flat)).get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{task}: inferred-group scores, ranked high to low at each step (mean ± SD over seeds)", fontsize=9)
    return save(fig, path)


def plot_frontier(runs: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    """Reward against KL, one panel per method family (shared score axis), each seed's steps as dots behind the mean path."""
    runs = {m: seeds for m, seeds in runs.items() if any(frontier(rows) for rows in seeds)}
    if not runs:
        return None
    colors, fams = _colors(list(runs)), families(list(runs))
    cols = min(3, len(fams))
    rows_n = (len(fams) + cols - 1) // cols
    fig, axes = figure(
        rows_n, cols, PAGE_WIDTH, 1.2 + 3.0 * rows_n, sharey=True
    )  # KL scales differ: one family must not squash another
    for ax in axes.flat[len(fams) :]:
        ax.set_visible(False)
    for ax, (fam, members) in zip(axes.flat, fams.items()):
        for m in members:
            seeds = runs[m]
            for rows in seeds:
                pts = [
                    (r["objective/kl"], r["objective/score"])
                    for r in rows
                    if r.get("objective/kl") is not None and r.get("objective/score") is not None
                ]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, alpha=0.25, color=colors[m], lw=0)
            _, kl, _ = band([store.series(rows, "objective/kl") for rows in seeds])
            _, score, _ = band([store.series(rows, "objective/score") for rows in seeds])
            ax.plot(kl, score, color=colors[m], lw=1.8, label=f"{m} (n={len(seeds)})")
            ax.plot(kl[-1:], score[-1:], color=colors[m], marker="o", ms=5)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("KL to reference (nats)", fontsize=8)
        ax.set_ylabel("reward-model score", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, frameon=False)
    fig.suptitle(
        f"{task}: reward vs KL (line: mean over seeds at each step, ● last step; dots: each seed's steps)", fontsize=9
    )
    return save(fig, path)


def plot_judge_curves(curves: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    curves = {m: [c for c in seeds if c] for m, seeds in curves.items()}
    curves = {m: seeds for m, seeds in curves.items() if seeds}
    if not curves:
        return None
    colors, fams = _colors(list(curves)), families(list(curves))
    fig, axes = figure(len(fams), 2, PAGE_WIDTH + 1.6, 0.9 + 1.9 * len(fams), sharex=True, sharey="col")
    judges = sorted({p.get("judge", "?") for seeds in curves.values() for c in seeds for p in c})
    means = {
        (m, key): band(
            [
                ([p["step"] for p in c if p.get(key) is not None], [p[key] for p in c if p.get(key) is not None])
                for c in seeds
            ]
        )
        for m, seeds in curves.items()
        for key in ("rm_score", "win")
    }
    for row, members in enumerate(fams.values()):
        for ax, key in zip(axes[row], ("rm_score", "win")):
            for m in curves:
                if m not in members:
                    ax.plot(*means[(m, key)][:2], color=CONTEXT, lw=0.8, zorder=0)
            for m in members:
                _plot_band(ax, *means[(m, key)], colors[m], f"{m} (n={len(curves[m])})", marker="o", ms=3)
        axes[row, 1].axhline(0.5, color="black", lw=0.8, ls=":")
        for ax in axes[row]:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        _legend_right(axes[row, 1])
    axes[0, 0].set_title("reward-model score of the samples (what PPO maximises)", fontsize=8)
    axes[0, 1].set_title(f"judge win rate against the starting policy (judge {', '.join(judges)})", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("PPO step", fontsize=8)
    fig.suptitle(
        f"{task}: does the judge agree with the reward model along training? "
        "(mean ± SD over seeds; grey: the other methods)",
        fontsize=9,
    )
    return save(fig, path)


def _mean_gold_path(seeds: list[list[dict]], key: str):
    """√KL and the mean and SD over seeds of ``key`` at each window, the starting policy at √KL 0 (gold only)."""
    import numpy as np

    n = min(len(p) for p in seeds)  # seeds share their windows; one still in flight is cut to the shortest
    x = np.array([[0.0] + [p["sqrt_kl"] or 0.0 for p in sp[:n]] for sp in seeds]).mean(0)
    first = [start_gold(sp) if key == "gold" else None for sp in seeds]
    y = np.array([[np.nan if f is None else f] + [p[key] for p in sp[:n]] for f, sp in zip(first, seeds)], float)
    keep = ~np.isnan(y).all(0)
    sd = np.nanstd(y[:, keep], 0, ddof=1) if len(seeds) > 1 else None
    return x[keep], np.nanmean(y[:, keep], 0), sd


def plot_gold_frontier(paths: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    """Small multiples: one row per method family, gold and proxy score against √KL; each method's mean path over
    seeds with a ± SD band, every other method's mean path in grey behind."""
    paths = {m: seeds for m, seeds in paths.items() if seeds}
    if not paths:
        return None
    colors, fams = _colors(list(paths)), families(list(paths))
    means = {(m, key): _mean_gold_path(seeds, key) for m, seeds in paths.items() for key in ("gold", "proxy")}
    fig, axes = figure(len(fams), 2, PAGE_WIDTH + 1.6, 0.9 + 2.2 * len(fams), sharex=True, sharey="col")
    for row, members in enumerate(fams.values()):
        for ax, key in zip(axes[row], ("gold", "proxy")):
            for m in paths:
                if m not in members:
                    ax.plot(*means[(m, key)][:2], color=CONTEXT, lw=0.8, zorder=0)
            for m in members:
                x, mean, sd = means[(m, key)]
                ax.plot(x, mean, color=colors[m], lw=1.8, marker="o", ms=3, label=f"{m} (n={len(paths[m])})")
                if sd is not None:
                    ax.fill_between(x, mean - sd, mean + sd, color=colors[m], alpha=0.2, lw=0)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        _legend_right(axes[row, 1])
    axes[0, 0].set_title("gold score of the training samples (the judge)", fontsize=8)
    axes[0, 1].set_title("reward-model score (the proxy the policy maximises)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("√KL to the starting policy (√nats)", fontsize=8)
    fig.suptitle(
        f"{task}: proxy vs gold along training (mean ± SD over seeds, ● a window of steps; grey: the other methods)",
        fontsize=9,
    )
    return save(fig, path)


def make_plots(
    output_dir,
    task: str,
    methods: list[str] | None = None,
    out_dir="results/plots",
    judge: str | None = None,
    log=print,
    name: str | None = None,
) -> list[Path]:
    names = methods or store.method_names(output_dir, task)
    name = name or task
    runs = {m: [store.read_metrics(d) for d in store.seed_dirs(output_dir, task, m)] for m in names}
    runs = {m: r for m, r in runs.items() if r}
    curves = {m: [store.read_judge_curve(d) for d in store.seed_dirs(output_dir, task, m)] for m in names}
    gold = {m: method_paths(output_dir, task, m) for m in names}
    out = Path(out_dir)
    written = []
    for kind, made in (
        ("curves", plot_curves(runs, task, out / f"{name}_curves.png")),
        ("groups", plot_groups(runs, task, out / f"{name}_groups.png")),
        ("frontier", plot_frontier(runs, task, out / f"{name}_frontier.png")),
        ("winrates", plot_winrates(output_dir, task, methods, out / f"{name}_winrates.png", judge)),
        ("differences", plot_differences(output_dir, task, methods, out / f"{name}_differences.png", judge)),
        ("judge curve", plot_judge_curves(curves, task, out / f"{name}_judge_curve.png")),
        ("gold frontier", plot_gold_frontier(gold, task, out / f"{name}_gold_frontier.png")),
    ):
        if made is None:
            log(f"[gilbench] plot {kind}: no data for task {task} under {output_dir}; skipped")
        else:
            written.append(made)
    return written
