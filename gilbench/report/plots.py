"""PNG plots of stored runs and comparisons (matplotlib's Agg canvas; no display, no pyplot state).

``make_plots(output_dir, task)`` writes into ``out_dir``:

* ``<task>_curves.png``   score, KL, length and entropy per step, per method: mean over seeds with a ± SD band;
* ``<task>_groups.png``   GIL-style runs: each inferred group's score per step, groups ranked high to low at each step
  (group numbers are arbitrary per run), mean ± SD over seeds, with the batch mean dashed;
* ``<task>_frontier.png`` reward vs KL: each method's path through training (mean KL and score over seeds at each
  step, the last step marked) over every step of every seed (dots);
* ``<task>_winrates.png`` win / tie / lose bars of each stored comparison, ID and OOD side by side;
* ``<task>_judge_curve.png`` runs with a ``judge_curve.jsonl`` (``gilbench judge-curve``): the reward-model score the
  policy was trained on next to the judge's win rate against the starting policy on the same samples, per method,
  mean ± SD over seeds -- reward hacking shows as the first rising while the second falls.

A plot without data is skipped (and said so through ``log``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gilbench.report import store
from gilbench.report.stability import frontier

CURVES = (("objective/score", "reward-model score"), ("objective/kl", "KL to reference (nats)"),
          ("completions/mean_length", "mean length (tokens)"), ("objective/entropy", "entropy (nats / token)"))
OUTCOME_COLORS = {"win": "#4c9a2a", "tie": "#b0b0b0", "lose": "#c0392b"}


def _figure(rows: int, cols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    return path


def band(per_seed: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and SD across seeds at each step (seeds missing a step are left out of that step)."""
    import numpy as np

    by_step: dict[int, list[float]] = {}
    for steps, values in per_seed:
        for s, v in zip(steps, values):
            by_step.setdefault(s, []).append(v)
    steps = sorted(by_step)
    return steps, [float(np.mean(by_step[s])) for s in steps], [float(np.std(by_step[s], ddof=1)) if len(by_step[s]) > 1 else 0.0 for s in steps]


def _plot_band(ax, steps, mean, sd, color, label, **kw):
    ax.plot(steps, mean, color=color, label=label, lw=1.6, **kw)
    ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)], color=color, alpha=0.18, lw=0)


def _colors(methods: list[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def plot_curves(runs: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    runs = {m: r for m, r in runs.items() if any(store.series(rows, CURVES[0][0])[1] for rows in r)}
    if not runs:
        return None
    colors = _colors(list(runs))
    fig, axes = _figure(2, 2, 11, 7.5)
    for ax, (name, label) in zip(axes.flat, CURVES):
        for m, seeds in runs.items():
            steps, mean, sd = band([store.series(rows, name) for rows in seeds])
            if steps:
                _plot_band(ax, steps, mean, sd, colors[m], f"{m} (n={len(seeds)})")
        ax.set(title=label, xlabel="PPO step", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: training curves, mean ± SD over seeds")
    return _save(fig, path)


def _ranked_groups(rows: list[dict]) -> list[tuple[list[int], list[float]]]:
    out: list[tuple[list[int], list[float]]] = []
    for r in rows:
        scores = sorted((v for k, v in r.items() if k.startswith("group/") and k.endswith("/score") and k.count("/") == 2 and v is not None),
                        reverse=True)
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
    fig, axes = _figure(1, len(runs), 5.2 * len(runs), 4.2)
    for ax, (m, seeds) in zip(axes[0], runs.items()):
        per_seed = [_ranked_groups(rows) for rows in seeds]
        n_groups = max(len(x) for x in per_seed)
        colors = _colors([f"g{g}" for g in range(n_groups)])
        for g in range(n_groups):
            steps, mean, sd = band([x[g] for x in per_seed if len(x) > g])
            rank = " (highest)" if g == 0 else " (lowest)" if g == n_groups - 1 else ""
            _plot_band(ax, steps, mean, sd, colors[f"g{g}"], f"group #{g + 1}{rank}")
        steps, mean, _ = band([store.series(rows, "objective/score") for rows in seeds])
        ax.plot(steps, mean, color="black", ls="--", lw=1.2, label="batch mean")
        ax.set(title=f"{m}: inferred-group scores (n={len(seeds)} seeds)", xlabel="PPO step", ylabel="reward-model score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: group dynamics\n(groups ranked by score at each step)")
    return _save(fig, path)


def plot_frontier(runs: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    runs = {m: seeds for m, seeds in runs.items() if any(frontier(rows) for rows in seeds)}
    if not runs:
        return None
    colors = _colors(list(runs))
    fig, axes = _figure(1, 1, 7, 5)
    ax = axes[0, 0]
    for m, seeds in runs.items():
        for rows in seeds:
            pts = [(r["objective/kl"], r["objective/score"]) for r in rows if r.get("objective/kl") is not None and r.get("objective/score") is not None]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=7, alpha=0.2, color=colors[m], lw=0)
        _, kl, _ = band([store.series(rows, "objective/kl") for rows in seeds])
        _, score, _ = band([store.series(rows, "objective/score") for rows in seeds])
        ax.plot(kl, score, color=colors[m], lw=2, label=f"{m} (n={len(seeds)})")
        ax.plot(kl[-1:], score[-1:], color=colors[m], marker="o", ms=6)
    ax.set(xlabel="KL to reference (nats)", ylabel="reward-model score")
    ax.set_title(f"{task}: reward vs KL\nline: mean over seeds at each step, ● last step; dots: each seed's steps", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", title="method")
    return _save(fig, path)


def plot_judge_curves(curves: dict[str, list[list[dict]]], task: str, path: Path) -> Path | None:
    curves = {m: [c for c in seeds if c] for m, seeds in curves.items()}
    curves = {m: seeds for m, seeds in curves.items() if seeds}
    if not curves:
        return None
    colors = _colors(list(curves))
    fig, axes = _figure(1, 2, 11, 4.2)
    judges = sorted({p.get("judge", "?") for seeds in curves.values() for c in seeds for p in c})
    for m, seeds in curves.items():
        for ax, key in zip(axes[0], ("rm_score", "win")):
            steps, mean, sd = band([([p["step"] for p in c if p.get(key) is not None], [p[key] for p in c if p.get(key) is not None])
                                    for c in seeds])
            _plot_band(ax, steps, mean, sd, colors[m], f"{m} (n={len(seeds)})", marker="o", ms=3)
    axes[0, 0].set(title="reward-model score of the samples\n(what PPO maximises)", xlabel="PPO step", ylabel="reward-model score")
    axes[0, 1].set(title=f"judge win rate against the starting policy\n(judge {', '.join(judges)})", xlabel="PPO step", ylabel="win rate")
    axes[0, 1].axhline(0.5, color="black", lw=0.8, ls=":")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: does the judge agree with the reward model along training? (mean ± SD over seeds)")
    return _save(fig, path)


def stored_pairs(output_dir, task: str, methods: list[str] | None) -> list[tuple[str, str]]:
    folder = Path(output_dir) / task / "compare"
    pairs = [tuple(d.name.split("_vs_", 1)) for d in sorted(folder.glob("*_vs_*")) if d.is_dir()] if folder.is_dir() else []
    return [(a, b) for a, b in pairs if methods is None or a in methods]


def plot_winrates(output_dir, task: str, methods: list[str] | None, path: Path, judge: str | None = None) -> Path | None:
    pairs = stored_pairs(output_dir, task, methods)
    counts = Counter(j for a, b in pairs for j in store.judges_for(output_dir, task, a, b))
    judge = store.judge_id(judge) or (min(counts, key=lambda j: (-counts[j], j)) if counts else None)
    results = [(a, b, store.load_compare(output_dir, task, a, b, judge)) for a, b in pairs] if judge else []
    results = [(a, b, r) for a, b, r in results if r]
    if not results:
        return None
    dists = [d for d in ("id", "ood") if any(d in r["distributions"] for _, _, r in results)]
    fig, axes = _figure(1, len(dists), 6 * len(dists), 0.9 + 0.55 * len(results))
    for ax, dist in zip(axes[0], dists):
        labels = []
        for i, (a, b, r) in enumerate(results):
            e = r["distributions"].get(dist) or {}
            labels.append(f"{a} vs {b} (N={e.get('n', 0)})")
            left = 0.0
            for k in ("win", "tie", "lose"):
                v = 100 * (e.get(k) or 0.0)
                ax.barh(i, v, left=left, height=0.62, color=OUTCOME_COLORS[k], label=k if i == 0 else None)
                if v >= 8:
                    ax.text(left + v / 2, i + 0.04, f"{v:.0f}", ha="center", va="center", fontsize=8)
                left += v
            if e.get("win_ci"):
                lo, hi = (100 * x for x in e["win_ci"])
                ax.errorbar(100 * e["win"], i - 0.4, xerr=[[100 * e["win"] - lo], [hi - 100 * e["win"]]], color="black", capsize=2.5, lw=1)
        ax.set_yticks(range(len(results)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set(xlim=(0, 100), xlabel="% of judged pairs (whisker: 95 % CI of the win rate)", title=f"{dist.upper()} prompts")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, [f"{n} (first method)" if n != "tie" else n for n in names], loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(f"{task}: win / tie / lose of the first method, judge {judge}")
    return _save(fig, path)


def make_plots(output_dir, task: str, methods: list[str] | None = None, out_dir="results/plots", judge: str | None = None,
               log=print) -> list[Path]:
    names = methods or store.method_names(output_dir, task)
    runs = {m: [store.read_metrics(d) for d in store.seed_dirs(output_dir, task, m)] for m in names}
    runs = {m: r for m, r in runs.items() if r}
    curves = {m: [store.read_judge_curve(d) for d in store.seed_dirs(output_dir, task, m)] for m in names}
    out = Path(out_dir)
    written = []
    for kind, made in (("curves", plot_curves(runs, task, out / f"{task}_curves.png")),
                       ("groups", plot_groups(runs, task, out / f"{task}_groups.png")),
                       ("frontier", plot_frontier(runs, task, out / f"{task}_frontier.png")),
                       ("winrates", plot_winrates(output_dir, task, methods, out / f"{task}_winrates.png", judge)),
                       ("judge curve", plot_judge_curves(curves, task, out / f"{task}_judge_curve.png"))):
        if made is None:
            log(f"[gilbench] plot {kind}: no data for task {task} under {output_dir}; skipped")
        else:
            written.append(made)
    return written
