"""Table specs: small declarative YAML files (``tables/<name>.yaml``) that say what a table shows.

    kind: winrate            # the builder: winrate | ood | ablation | stability | groups | frontier
    title: GIL against each baseline
    tasks: auto              # task names, or auto (every task where a row method has a finished run)
    methods: [gil]           # rows: these methods ...
    baselines: [sft, ppo]    # ... against these opponents (compare results <method>_vs_<baseline>; frontier: a row
                             #     "method − baseline" under each method, across seeds)
    judge: null              # judge id (folder under compare/A_vs_B/, or openai:MODEL / hf:MODEL); null: the stored one
    splits: [id, ood]        # distributions (id, ood) or split names (id:test)
    columns: [win, tie, lose, n]   # which columns, in order (each kind lists its own; empty: the kind's default)
    labels: {gil: GIL}       # display names
    alpha: 0.05              # sign-test level marked with a dagger
    last_steps: 10           # (groups) the last steps whose metrics are averaged
    thresholds: {}           # (stability) overrides of gilbench.report.stability.Thresholds
    sqrt_kl: [1, 2, 3]       # (frontier) √KL values where the gold score is read off each run's path

``NAME`` resolves to ``./tables/NAME.yaml``, then to the ``tables/`` folder shipped next to the package; any path
to a ``.yaml`` file works too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from gilbench.config import read_yaml_mapping
from gilbench.errors import GilbenchError

KIND_COLUMNS = {
    "winrate": ["win", "tie", "lose", "n", "p", "seed_win", "diff", "seed_diff"],
    "ood": ["win", "gap", "rm"],
    "ablation": ["score", "win", "diff", "seed_diff"],
    "stability": ["final", "best", "best_step", "max_kl", "ev_final", "ev_mean", "length", "repetition", "kl", "judge"],
    "groups": ["groups", "worst", "gap", "nmi", "purity", "negative"],
    "frontier": [
        "start",
        "peak",
        "peak_step",
        "peak_kl",
        "end",
        "late",
        "drop",
        "end_proxy",
        "end_kl",
        "matched",
        "gap",
        "worst",
    ],
}
# a kind's default columns: all but winrate's p, seed_win, diff and seed_diff, ablation's diff and seed_diff, frontier's late
# (the beta sweep's, tables/beta.yaml) and worst
DEFAULT_COLUMNS = {**KIND_COLUMNS, "winrate": ["win", "tie", "lose", "n"], "ablation": ["score", "win"]}
DEFAULT_COLUMNS["frontier"] = [c for c in KIND_COLUMNS["frontier"] if c not in ("late", "worst")]
DEFAULT_LABELS = {
    "sft": "SFT",
    "ppo": "PPO",
    "ppo-kl": "PPO w/ KL",
    "ppo-ptx": "PPO-ptx",
    "dpo": "DPO",
    "rloo": "RLOO",
    "grpo": "GRPO",
    "gil": "GIL",
    "gil-fixed-kl": "GIL w/o dynamic KL",
    "gil-no-inv": "GIL w/o invariant learning",
    "gil-oracle": "GIL, oracle groups",
}


@dataclass
class TableSpec:
    name: str
    kind: str
    title: str = ""
    tasks: list[str] | str = "auto"
    methods: list[str] | str = "auto"
    baselines: list[str] = field(default_factory=list)
    judge: str | None = None
    splits: list[str] = field(default_factory=lambda: ["id", "ood"])
    columns: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    alpha: float = 0.05
    last_steps: int = 10
    thresholds: dict = field(default_factory=dict)
    sqrt_kl: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])

    def label(self, name: str) -> str:
        if name not in self.labels and "@" in name:  # a variant (RunConfig.variant): its method's label, then @variant
            method, variant = name.split("@", 1)
            return f"{self.label(method)}@{variant}"
        return self.labels.get(name) or DEFAULT_LABELS.get(name, name)


def _list(value, key: str, name: str, allow_auto: bool = False):
    if allow_auto and value == "auto":
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise GilbenchError(
            f"table spec {name}: '{key}' must be a list of names{' or auto' if allow_auto else ''}, got {value!r}"
        )
    return [str(v) for v in value]


def parse_spec(data: dict, name: str) -> TableSpec:
    if not isinstance(data, dict):
        raise GilbenchError(f"table spec {name}: expected a mapping of fields, got {type(data).__name__}")
    known = {f.name for f in fields(TableSpec)} - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GilbenchError(f"table spec {name}: unknown field(s) {unknown}; known: {', '.join(sorted(known))}")
    kind = data.get("kind")
    if kind not in KIND_COLUMNS:
        raise GilbenchError(f"table spec {name}: 'kind' must be one of {', '.join(KIND_COLUMNS)}, got {kind!r}")
    spec = TableSpec(name=name, kind=kind, title=str(data.get("title") or name))
    for key in ("tasks", "methods"):
        if key in data:
            setattr(spec, key, _list(data[key], key, name, allow_auto=True))
    for key in ("baselines", "splits", "columns"):
        if key in data:
            setattr(spec, key, _list(data[key] or [], key, name))
    bad = sorted(set(spec.columns) - set(KIND_COLUMNS[kind]))
    if bad:
        raise GilbenchError(
            f"table spec {name}: columns {bad} do not exist for kind {kind}; choose from {KIND_COLUMNS[kind]}"
        )
    spec.columns = spec.columns or list(DEFAULT_COLUMNS[kind])
    spec.judge = None if data.get("judge") in (None, "", "auto") else str(data["judge"])
    spec.labels = {str(k): str(v) for k, v in (data.get("labels") or {}).items()}
    spec.thresholds = dict(data.get("thresholds") or {})
    try:
        spec.alpha = float(data.get("alpha", spec.alpha))
        spec.last_steps = int(data.get("last_steps", spec.last_steps))
        spec.sqrt_kl = [float(x) for x in data.get("sqrt_kl", spec.sqrt_kl)]
    except (TypeError, ValueError):
        raise GilbenchError(
            f"table spec {name}: alpha must be a number, last_steps an integer and sqrt_kl a list of numbers"
        ) from None
    if any(not 0 < x < float("inf") for x in spec.sqrt_kl):
        raise GilbenchError(f"table spec {name}: sqrt_kl values must be positive numbers, got {spec.sqrt_kl}")
    return spec


def spec_dirs() -> list[Path]:
    return [Path.cwd() / "tables", Path(__file__).resolve().parents[2] / "tables"]


def available_specs() -> list[str]:
    return sorted({p.stem for d in spec_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def load_spec(name_or_file: str) -> TableSpec:
    path = Path(name_or_file)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = next((d / f"{name_or_file}.yaml" for d in spec_dirs() if (d / f"{name_or_file}.yaml").exists()), None)
    if path is None:
        raise GilbenchError(
            f"no table spec '{name_or_file}': give a .yaml file or one of {', '.join(available_specs()) or '(none found)'} "
            f"(looked in {', '.join(str(d) for d in spec_dirs())})"
        )
    return parse_spec(read_yaml_mapping(path, "table spec", "see tables/*.yaml for the layout"), path.stem)
