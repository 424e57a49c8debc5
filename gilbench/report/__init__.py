"""Reports from the run store: tables (Markdown, LaTeX with booktabs, CSV) from declarative specs, stability
analysis of the per-step metrics, and PNG plots. Everything is rebuilt from stored results, byte for byte.

    gilbench table --spec main --format latex      # specs: tables/*.yaml (see gilbench/report/spec.py)
    gilbench plot --task chitchat-ood

Modules: ``store`` (reading runs and comparisons), ``stability`` (per-run numbers and collapse flags), ``spec``
(table specs), ``selection``, ``tables`` / ``tables_runs`` (builders, ``render_table``), ``render`` (md / latex / csv),
``plots``, ``html``. The commands are in gilbench/cli/report.py.
"""

from gilbench.report.tables import render_table

__all__ = ["render_table"]
