"""``gilbench report --task T``: one static HTML page of a task's results, to open in any browser (no server).

    gilbench report --task chitchat-ood                       # -> results/report/chitchat-ood.html
    gilbench report --task chitchat-ood --out /tmp/r.html --output-dir results/runs

The page holds every table spec (``tables/*.yaml``) built for this task, the plots of ``gilbench plot`` (embedded as
PNG data, so the file stands alone), and for each stored comparison its win / tie / lose per split and every judged
pair: the prompt, both answers side by side, the verdict and, for LM judges, the judge's raw answers. A few lines of
inline JavaScript filter the pairs by comparison, split, group and verdict. Nothing is fetched from the network.
The same stored results give the same bytes (no timestamps).
"""

from __future__ import annotations

import base64
import json
import tempfile
from html import escape
from pathlib import Path

from gilbench.errors import GilbenchError

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#eef4fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:.85em}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
.pair{border:1px solid #ccc;border-radius:6px;margin:.8em 0;padding:.6em;background:#fafafa}
.pair .meta{font-size:.8em;color:#555}.pair .prompt{font-weight:600;margin:.3em 0}
.answers{display:grid;grid-template-columns:1fr 1fr;gap:.6em}.answer{background:#fff;border:1px solid #ddd;padding:.4em;white-space:pre-wrap}
.verdict{display:inline-block;padding:.1em .5em;border-radius:4px;color:#fff;font-weight:600}
.v-a{background:#0072B2}.v-b{background:#D55E00}.v-tie{background:#777}.v-invalid{background:#000}
.filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ccc;z-index:1}
.filters label{margin-right:1em}pre.raw{white-space:pre-wrap;font-size:.8em;background:#f0f0f0;padding:.4em}
"""

SCRIPT = """
function applyFilters(){
  var f={};document.querySelectorAll('.filters select').forEach(function(s){f[s.dataset.key]=s.value;});
  var shown=0;document.querySelectorAll('.pair').forEach(function(p){
    var ok=Object.keys(f).every(function(k){return f[k]==='*'||p.dataset[k]===f[k];});
    p.style.display=ok?'':'none';if(ok)shown++;});
  document.getElementById('shown').textContent=shown;
}
document.querySelectorAll('.filters select').forEach(function(s){s.addEventListener('change',applyFilters);});
applyFilters();
"""

VERDICTS = {"a": "A wins", "b": "B wins", "tie": "tie", "invalid": "invalid (no readable verdict)"}


def _table_html(table) -> str:
    head = "".join(f"<th>{escape(f'{g} {c}'.strip())}</th>" for g, c in table.columns)
    body = []
    for row in table.rows:
        if row is None:
            continue
        cells = "".join(
            f"<td{'' if i < table.n_label_columns else ' class=num'}>{escape(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in table.notes)
    return f"<h3>{escape(table.title)}</h3><table><tr>{head}</tr>{''.join(body)}</table>" + (
        f"<ul class=note>{notes}</ul>" if notes else ""
    )


def _has_data(table) -> bool:
    """A row with a stored value: not only dashes (nothing stored) and zero seed counts."""
    from gilbench.report.render import DASH

    return any(any(c not in (DASH, "0", "n/a", "") for c in row[table.n_label_columns :]) for row in table.rows if row)


def tables_section(output_dir: str | Path, task: str) -> str:
    from gilbench.report.spec import available_specs, load_spec
    from gilbench.report.tables import build_table

    parts = []
    for name in available_specs():
        spec = load_spec(name)
        spec.tasks = [task]
        try:
            table = build_table(spec, output_dir)
        except GilbenchError as e:  # a spec about other methods or tasks: say so, keep the rest
            parts.append(f"<p class=note>table {escape(name)}: {escape(str(e))}</p>")
            continue
        if _has_data(table):
            parts.append(_table_html(table))
    return "<h2 id=tables>Tables</h2>" + ("".join(parts) or "<p class=note>no table has data for this task</p>")


def plots_section(output_dir: str | Path, task: str) -> str:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "<h2 id=plots>Plots</h2><p class=note>matplotlib is not installed (pip install 'gilbench[plots]'): no plots</p>"
    from gilbench.report.plots import make_plots

    with tempfile.TemporaryDirectory() as tmp:
        written = make_plots(output_dir, task, out_dir=tmp, log=lambda _msg: None)
        images = [(p.stem.removeprefix(f"{task}_"), base64.b64encode(p.read_bytes()).decode()) for p in written]
    body = "".join(
        f"<h3>{escape(name)}</h3><img alt='{escape(name)}' src='data:image/png;base64,{data}'>" for name, data in images
    )
    return "<h2 id=plots>Plots</h2>" + (body or "<p class=note>no per-step metrics or comparisons to plot</p>")


def stored_comparisons(output_dir: str | Path, task: str) -> list[tuple[str, Path, dict]]:
    """(label ``A vs B [judge]``, folder, results) for every ``compare/A_vs_B/<judge>/`` with results and judgments."""
    found = []
    for results in sorted((Path(output_dir) / task / "compare").glob("*/*/results.json")):
        folder = results.parent
        if (folder / "judgments.jsonl").exists():
            r = json.loads(results.read_text())
            found.append((f"{r['a']} vs {r['b']} [{folder.name}]", folder, r))
    return found


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _summary_html(r: dict) -> str:
    rows = []
    for s in r["splits"]:
        lc = s.get("length_controlled") or {}
        rows.append(
            f"<tr><td>{escape(s['split'])}</td><td>{escape(s['distribution'])}</td><td class=num>{s['n']}</td>"
            f"<td class=num>{_pct(s['win'])}</td><td class=num>{_pct(s['tie'])}</td><td class=num>{_pct(s['lose'])}</td>"
            f"<td class=num>{_pct(lc.get('lc_win'))}</td><td class=num>{s['sign_test']['p']:.3g}</td></tr>"
        )
    return (
        f"<table><tr><th>split</th><th>dist.</th><th>N</th><th>{escape(r['a'])} wins %</th><th>tie %</th><th>{escape(r['b'])} wins %</th>"
        f"<th>LC pref. %</th><th>p (sign)</th></tr>{''.join(rows)}</table>"
    )


def _raw_text(orders: list[dict]) -> str:
    texts = [
        f"order {o['order']}: " + " | ".join(str(x) for x in o["raw"])
        for o in orders
        if o.get("raw") and any(isinstance(x, str) for x in o["raw"])
    ]
    return (
        f"<details><summary>raw judge answers</summary><pre class=raw>{escape(chr(10).join(texts))}</pre></details>"
        if texts
        else ""
    )


def _pair_html(cmp_id: int, r: dict, item: dict) -> str:
    outcome = item.get("outcome", "invalid")
    verdict = VERDICTS.get(outcome, outcome).replace("A wins", f"{r['a']} wins").replace("B wins", f"{r['b']} wins")
    attrs = (
        f"data-cmp='{cmp_id}' data-split='{escape(item['split'], quote=True)}' data-group='{escape(str(item['group']), quote=True)}' "
        f"data-verdict='{escape(outcome, quote=True)}'"
    )
    return (
        f"<div class=pair {attrs}><div class=meta>{escape(item['item'])} · group {escape(str(item['group']))} · "
        f"<span class='verdict v-{escape(outcome)}'>{escape(verdict)}</span></div>"
        f"<div class=prompt>{escape(item['prompt'])}</div><div class=answers>"
        f"<div class=answer><b>{escape(r['a'])}</b> ({item.get('length_a', '?')} tokens)<br>{escape(item['response_a'])}</div>"
        f"<div class=answer><b>{escape(r['b'])}</b> ({item.get('length_b', '?')} tokens)<br>{escape(item['response_b'])}</div></div>"
        f"{_raw_text(item.get('orders', []))}</div>"
    )


def _select(key: str, label: str, options: list[tuple[str, str]]) -> str:
    opts = "".join(f"<option value='{escape(v, quote=True)}'>{escape(t)}</option>" for v, t in options)
    return f"<label>{escape(label)} <select data-key='{key}'><option value='*'>all</option>{opts}</select></label>"


def comparisons_section(output_dir: str | Path, task: str) -> str:
    found = stored_comparisons(output_dir, task)
    if not found:
        return "<h2 id=pairs>Comparisons</h2><p class=note>no stored comparisons (gilbench compare A B --task ...)</p>"
    summaries, pairs, splits, groups = [], [], set(), set()
    for i, (label, folder, r) in enumerate(found):
        summaries.append(f"<h3>{escape(label)}</h3>{_summary_html(r)}")
        for line in (folder / "judgments.jsonl").read_text().splitlines():
            if line.strip():
                item = json.loads(line)
                splits.add(item["split"])
                groups.add(str(item["group"]))
                pairs.append(_pair_html(i, r, item))
    filters = (
        "<div class=filters>"
        + _select("cmp", "comparison", [(str(i), label) for i, (label, _, _) in enumerate(found)])
        + _select("split", "split", [(s, s) for s in sorted(splits)])
        + _select("group", "group", [(g, g) for g in sorted(groups)])
        + _select("verdict", "verdict", list(VERDICTS.items()))
        + " <span class=note><span id=shown></span> pairs shown</span></div>"
    )
    return (
        "<h2 id=comparisons>Comparisons</h2>"
        + "".join(summaries)
        + "<p class=note>LC pref.: the preference rate (wins + half the ties) "
        "at equal answer lengths, from a logistic regression on the length difference (gilbench/eval/length_control.py).</p>"
        + "<h2 id=pairs>Judged pairs</h2>"
        + filters
        + "".join(pairs)
    )


def build_report(output_dir: str | Path, task: str) -> str:
    from gilbench.report import store

    if task not in store.task_names(output_dir):
        raise GilbenchError(
            f"no runs or comparisons of task '{task}' under {output_dir}; tasks there: "
            f"{', '.join(store.task_names(output_dir)) or '(none)'}"
        )
    methods = store.method_names(output_dir, task)
    runs = ", ".join(f"{escape(m)} ({len(store.finished_seed_dirs(output_dir, task, m))} seeds)" for m in methods)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>gilbench: "
        + escape(task)
        + "</title><style>"
        + STYLE
        + "</style></head><body><h1>gilbench report: "
        + escape(task)
        + "</h1><p>Finished runs: "
        + (runs or "none")
        + "</p>"
        "<p><a href='#tables'>tables</a> · <a href='#plots'>plots</a> · <a href='#comparisons'>comparisons</a> · <a href='#pairs'>judged pairs</a></p>"
        + tables_section(output_dir, task)
        + plots_section(output_dir, task)
        + comparisons_section(output_dir, task)
        + "<script>"
        + SCRIPT
        + "</script></body></html>\n"
    )


def write_report(output_dir: str | Path, task: str, out: str | Path | None = None) -> Path:
    from gilbench.files import atomic_write_text

    path = Path(out) if out else Path("results/report") / f"{task}.html"
    atomic_write_text(path, build_report(output_dir, task))
    return path
