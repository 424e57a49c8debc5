"""Plots of stored comparisons (``gilbench compare``): win / tie / lose bars and paired score differences; drawn by
``make_plots`` in plots.py beside the run plots."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gilbench.report import store
from gilbench.report.figure import OKABE_ITO, OUTCOME_COLORS, PAGE_WIDTH, figure, save


def stored_pairs(output_dir, task: str, methods: list[str] | None) -> list[tuple[str, str]]:
    folder = Path(output_dir) / task / "compare"
    pairs = (
        [tuple(d.name.split("_vs_", 1)) for d in sorted(folder.glob("*_vs_*")) if d.is_dir()] if folder.is_dir() else []
    )
    return [(a, b) for a, b in pairs if methods is None or a in methods]


def stored_comparisons(output_dir, task: str, methods: list[str] | None, judge: str | None):
    """(judge id, [(a, b, results)]) of the stored comparisons of ``methods`` (all: None) under ``judge`` (default:
    the judge most comparisons have)."""
    pairs = stored_pairs(output_dir, task, methods)
    counts = Counter(j for a, b in pairs for j in store.judges_for(output_dir, task, a, b))
    judge = store.judge_id(judge) or (min(counts, key=lambda j: (-counts[j], j)) if counts else None)
    results = [(a, b, store.load_compare(output_dir, task, a, b, judge)) for a, b in pairs] if judge else []
    return judge, [(a, b, r) for a, b, r in results if r]


def plot_winrates(
    output_dir, task: str, methods: list[str] | None, path: Path, judge: str | None = None
) -> Path | None:
    judge, results = stored_comparisons(output_dir, task, methods, judge)
    if not results:
        return None
    dists = [d for d in ("id", "ood") if any(d in r["distributions"] for _, _, r in results)]
    fig, axes = figure(
        1, len(dists), PAGE_WIDTH + 2.5, 1.2 + 0.4 * len(results)
    )  # own y labels: N differs by distribution
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
                    ax.text(
                        left + v / 2,
                        i + 0.04,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if k == "win" else "black",
                    )
                left += v
            if e.get("win_ci"):
                lo, hi = (100 * x for x in e["win_ci"])
                ax.errorbar(
                    100 * e["win"],
                    i - 0.4,
                    xerr=[[100 * e["win"] - lo], [hi - 100 * e["win"]]],
                    color="black",
                    capsize=2.5,
                    lw=1,
                )
        ax.set_yticks(range(len(results)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set(
            xlim=(0, 100),
            xlabel="% of judged pairs (whisker: 95 % CI of the win rate)",
            title=f"{dist.upper()} prompts",
        )
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        [f"{n} (first method)" if n != "tie" else n for n in names],
        loc="outside lower center",
        ncols=3,
        fontsize=8,
    )
    fig.suptitle(f"{task}: win / tie / lose of the first method, judge {judge}")
    return save(fig, path)


def plot_differences(
    output_dir, task: str, methods: list[str] | None, path: Path, judge: str | None = None
) -> Path | None:
    judge, results = stored_comparisons(output_dir, task, methods, judge)
    scored = [(a, b, r) for a, b, r in results if any("score_difference" in e for e in r["distributions"].values())]
    if not scored:
        return None
    dists = [d for d in ("id", "ood") if any(d in r["distributions"] for _, _, r in scored)]
    fig, axes = figure(1, len(dists), PAGE_WIDTH, 1.3 + 0.4 * len(scored), sharey=True)
    for ax, dist in zip(axes[0], dists):
        for i, (_, _, r) in enumerate(scored):
            d = (r["distributions"].get(dist) or {}).get("score_difference")
            if not d:
                continue
            seeds = d.get("across_seeds") or {}
            if seeds.get("ci"):
                ax.plot(seeds["ci"], [i, i], color=OKABE_ITO[5], lw=6, solid_capstyle="butt", label="seeds")
            per_seed = list((seeds.get("per_seed") or {}).values())
            ax.plot(per_seed, [i - 0.25] * len(per_seed), "v", color=OKABE_ITO[3], ms=4, ls="none", label="each")
            lo, hi = d["diff_ci"]
            ax.errorbar(
                d["diff"],
                i,
                xerr=[[d["diff"] - lo], [hi - d["diff"]]],
                fmt="o",
                color="black",
                ms=4,
                capsize=2.5,
                lw=1,
                label="prompts",
            )
        ax.axvline(0, color="#888888", lw=0.8, ls="--")
        ax.set(title=f"{dist.upper()} prompts", xlabel=f"{judge} score, first − second")
    labels = []
    for a, b, r in scored:
        ks = {(e.get("score_difference") or {}).get("across_seeds", {}).get("k") for e in r["distributions"].values()}
        k = max((x for x in ks if x), default=None)
        labels.append(f"{a} − {b}" + (f" ({k} seeds)" if k else ""))
    axes[0, 0].set_yticks(range(len(scored)), labels, fontsize=8)
    axes[0, 0].invert_yaxis()
    handles, names = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(names, handles))
    text = {
        "each": "each training seed",
        "seeds": "95 % CI over seeds (t)",
        "prompts": "95 % CI over prompts (bootstrap)",
    }
    fig.legend(
        [unique[n] for n in text if n in unique],
        [text[n] for n in text if n in unique],
        loc="outside lower center",
        ncols=3,
        fontsize=8,
    )
    fig.suptitle(f"{task}: paired score difference of each comparison")
    return save(fig, path)
