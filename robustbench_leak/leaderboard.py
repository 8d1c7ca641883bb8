"""Leaderboards rendered from stored records (never from in-memory state of a run).

One row per (dataset, model); each metric is the mean over seeds, with its standard deviation across
seeds beside it in the CSV and as "mean ± std" in Markdown when there is more than one seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .attacks import attack_class
from .metrics import METRIC_DOCS
from .store import STORE_NAME, Store

BASE_COLUMNS = ["dataset", "rank", "model", "arch", "kernel", "window", "params", "flops", "seeds"]
BASE_DOCS = {
    "dataset": "dataset the model was trained and evaluated on",
    "rank": "position when sorted by the ranking column (descending), within the dataset",
    "model": "model name from the run config",
    "arch": "registered architecture (or timm:<name>)",
    "kernel": "spatial kernel sizes of its convolutions",
    "window": "window multiplied into every spatial kernel: official outer(w, w) unless marked sqrt-",
    "params": "trainable parameters (excluding the fixed input normalisation)",
    "flops": "FLOPs of one forward pass on one image (PyTorch's FLOP counter)",
    "seeds": "number of training seeds aggregated (metrics are mean over seeds; ± is the std across seeds)",
}
PERCENT_METRICS = {"accuracy", "clean_accuracy", "robust_accuracy", "success_rate", "fooling_rate"}


def _load(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    store = Store.open_existing(run_dir)
    try:
        run = store.latest_run()
        if run is None:
            raise ValueError(f"{store.path}: the store holds no run")
        results = store.results(run["run_id"])
        models = store.model_info(run["run_id"])
        specs: dict[str, dict[str, Any]] = {}
        for key, label in store.conn.execute(  # in the config's attack order
                "SELECT c.spec, rc.attack FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key "
                "WHERE rc.run_id = ? AND rc.kind = 'eval' GROUP BY rc.attack ORDER BY MIN(rc.rowid)",
                (run["run_id"],)):
            specs[label] = json.loads(key)["attack"]
        results["run_dir"] = str(run_dir)
        return results, models, specs
    finally:
        store.close()


def build_table(run_dirs: list[Path], rank_by: str | None = None) -> tuple[pd.DataFrame, dict[str, str], str]:
    """Wide leaderboard table, column legend, and the ranking column used."""
    frames, model_frames, specs = [], [], {}
    for d in run_dirs:
        r, m, s = _load(Path(d))
        frames.append(r)
        model_frames.append(m)
        for label, spec in s.items():
            if label in specs and specs[label] != spec:
                raise ValueError(f"attack label {label!r} means different attacks in the merged runs "
                                 f"({specs[label]} vs {spec}); rename one in its config")
            specs[label] = spec
    results = pd.concat(frames, ignore_index=True)
    models = pd.concat(model_frames, ignore_index=True)
    if results.empty:
        raise ValueError("no finished evaluations in " + ", ".join(map(str, run_dirs)))

    legend = dict(BASE_DOCS)
    columns: list[str] = []
    for label, spec in specs.items():
        cls = attack_class(spec["kind"], spec["engine"])
        shown = [m for m in dict.fromkeys(("accuracy", *cls.metrics)) if m in set(results.loc[results.attack == label, "metric"])]
        params = ", ".join(f"{k}={v}" for k, v in spec["params"].items())
        n = f"first {spec['n_samples']} test images" if spec["n_samples"] else "all test images"
        legend[f"attack:{label}"] = f"{cls.description}; engine `{cls.engine}`; {params}; {n}"
        for metric in shown:
            if metric in ("shift_rows", "shift_cols", "rotation_deg"):
                continue
            col = f"{label}.{metric}"
            columns.append(col)
            legend[col] = METRIC_DOCS.get(metric, metric)
        if {"shift_rows", "shift_cols", "rotation_deg"} <= set(results.loc[results.attack == label, "metric"]):
            col = f"{label}.transform"
            columns.append(col)
            legend[col] = ("global transform the attack chose, per seed: (rows, cols) shift in pixels and rotation "
                           "in degrees")

    rows = []
    for (dataset, model), group in results.groupby(["dataset", "model"], sort=False):
        info = models[(models.model == model) & (models.dataset == dataset)]
        first = info.iloc[0] if len(info) else None
        row: dict[str, Any] = {
            "dataset": dataset, "model": model, "arch": group.arch.iloc[0],
            "kernel": first.kernel if first is not None else "", "window": first.window if first is not None else "",
            "params": int(first.params) if first is not None else np.nan,
            "flops": int(first.flops) if first is not None else np.nan, "seeds": int(group.seed.nunique())}
        for col in columns:
            label, metric = col.rsplit(".", 1)
            sub = group[group.attack == label]
            if metric == "transform":
                per_seed = sub.pivot_table(index="seed", columns="metric", values="value")
                row[col] = "; ".join(f"({r.shift_rows:+.0f}, {r.shift_cols:+.0f}) px {r.rotation_deg:+.0f}°"
                                     for r in per_seed.itertuples())
                continue
            values = sub.loc[sub.metric == metric, "value"].astype(float)
            row[col] = values.mean() if len(values) else np.nan
            row[f"{col}.std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)

    rank_col = rank_by or _default_rank(columns)
    if rank_col not in table.columns:
        raise ValueError(f"rank_by {rank_col!r} is not a leaderboard column; columns: {', '.join(columns)}")
    table = table.sort_values(["dataset", rank_col], ascending=[True, False], na_position="last")
    table["rank"] = table.groupby("dataset").cumcount() + 1
    ordered = BASE_COLUMNS + [c for col in columns for c in (col, f"{col}.std") if c in table.columns]
    return table[ordered].reset_index(drop=True), legend, rank_col


def _default_rank(columns: list[str]) -> str:
    for suffix in (".rho_mean", ".accuracy", ".clean_accuracy"):
        for col in columns:
            if col.endswith(suffix):
                return col
    return columns[0]


def _fmt(value: Any, metric: str, std: Any = np.nan) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if metric in PERCENT_METRICS:
        text = f"{100 * value:.1f}%"
        return text + (f" ± {100 * std:.1f}" if not np.isnan(std) else "")
    text = f"{value:.4f}"
    return text + (f" ± {std:.4f}" if not np.isnan(std) else "")


def _human(n: Any) -> str:
    if n is None or (isinstance(n, float) and np.isnan(n)):
        return "–"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def to_markdown(table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str) -> str:
    metric_cols = [c for c in table.columns if c not in BASE_COLUMNS and not c.endswith(".std")]
    lines = [f"# {title}", "", f"Ranked by `{rank_col}` (descending) within each dataset.", ""]
    for dataset, group in table.groupby("dataset", sort=False):
        lines += [f"## {dataset}", ""]
        header = ["rank", "model", "arch", "kernel", "window", "params", "FLOPs", "seeds", *metric_cols]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        for _, r in group.iterrows():
            cells = [str(r["rank"]), str(r.model), str(r.arch), str(r.kernel), str(r.window), _human(r.params),
                     _human(r.flops), str(r.seeds)]
            for col in metric_cols:
                cells.append(_fmt(r[col], col.rsplit(".", 1)[1], r.get(f"{col}.std", np.nan)))
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += ["## Attacks", ""]
    lines += [f"- **{key.split(':', 1)[1]}**: {text}" for key, text in legend.items() if key.startswith("attack:")]
    lines += ["", "## Legend", ""]
    for col in ["rank", "model", "arch", "kernel", "window", "params", "flops", "seeds", *metric_cols]:
        lines.append(f"- **{col}**: {legend.get(col, '')}")
    lines.append("")
    return "\n".join(lines)


def write_outputs(run_dirs: list[Path], out_dir: Path, rank_by: str | None = None,
                  formats: tuple[str, ...] = ("csv", "md")) -> list[Path]:
    """Render the leaderboard of ``run_dirs`` into ``out_dir``; returns the files written."""
    if rank_by is None and len(run_dirs) == 1:
        rank_by = _config_rank_by(Path(run_dirs[0]))
    table, legend, rank_col = build_table([Path(d) for d in run_dirs], rank_by)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "csv" in formats:
        path = out_dir / "leaderboard.csv"
        table.to_csv(path, index=False)
        written.append(path)
    if "md" in formats:
        path = out_dir / "leaderboard.md"
        title = "Leaderboard: " + ", ".join(Path(d).name for d in run_dirs)
        path.write_text(to_markdown(table, legend, rank_col, title))
        written.append(path)
    return written


def _config_rank_by(run_dir: Path) -> str | None:
    import yaml

    store = Store.open_existing(run_dir)
    try:
        run = store.latest_run()
    finally:
        store.close()
    if not run or not run.get("config_yaml"):
        return None
    data = yaml.safe_load(run["config_yaml"]) or {}
    return data.get("rank_by") if isinstance(data, dict) else None


__all__ = ["build_table", "to_markdown", "write_outputs", "STORE_NAME"]
