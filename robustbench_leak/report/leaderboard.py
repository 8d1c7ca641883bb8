"""Leaderboards rendered from stored records (never from in-memory state of a run).

One row per (dataset, run folder, model): each metric is the mean over seeds, with its standard
deviation across seeds (``.std``) and, when the cells carry one, a 95% interval (``.lo``, ``.hi``) whose
coverage ``.interval`` names: ``seeds`` (rows with several seeds: a t-interval over the per-seed values,
so training randomness is in it) or ``images`` (single-seed rows: the cell's bootstrap over test images).
Rows of different run folders never merge, even for the same model name: the ``run`` column keeps them
apart, and the rank is over all rows of a dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..attacks import attack_class
from ..metrics import METRIC_DOCS, ROBUST_ACCURACY_DOCS
from ..outputs import mark_folder
from ..stats import t_interval
from ..store import STORE_NAME
from .fmt import (BASE_COLUMNS, INTERVAL_DOCS, PERCENT_METRICS, cell_text, higher_is_better, human, md_text,
                  metric_cells, metric_columns, rank_order, split_column)
from .loader import RunData, load_runs

BASE_DOCS = {
    "dataset": "dataset the model was trained and evaluated on",
    "rank": "position when sorted by the ranking column (descending), within the dataset",
    "model": "model name from the run config",
    "run": "run folder the row comes from (rows of different runs are never merged)",
    "arch": "registered architecture (or timm:<name>)",
    "kernel": "spatial kernel sizes of its convolutions",
    "window": "window multiplied into every spatial kernel: official outer(w, w) unless marked sqrt-",
    "params": "trainable parameters (excluding the fixed input normalisation)",
    "flops": "FLOPs of one forward pass on one image (PyTorch's FLOP counter)",
    "seeds": "number of training seeds aggregated (metrics are mean over seeds; ± is the std across seeds)",
}
# markers in table cells: marker -> (the column suffix that carries it, definition)
NOTES = {
    "±": (".std", "standard deviation across training seeds (only with more than one seed)"),
    "[lo, hi]": (".lo", "95% interval. Rows with several seeds: Student-t interval of the mean over the per-seed "
                        "values (covers training randomness, each seed's test-set sampling included), clipped to "
                        "0-100% for percentages. Rows with one seed: bootstrap over the evaluated test images (covers "
                        "test-set sampling only, not training randomness)"),
    "⚠": (".flags", "a sanity check of the attack failed for this cell (e.g. gradient masking suspected); the values "
                    "are shown, the flag text is in the footnotes"),
}
FORMATS = ("csv", "md", "json", "latex", "html", "plots")

TRANSFORM_METRICS = ("shift_rows", "shift_cols", "rotation_deg")


def build_table(run_dirs: list[Path], rank_by: str | None = None) -> tuple[pd.DataFrame, dict[str, str], str]:
    """Wide leaderboard table, column legend, and the ranking column used."""
    return table_from_runs(load_runs(run_dirs), rank_by)


def _merged_specs(runs: list[RunData]) -> dict[str, dict[str, Any]]:
    specs: dict[str, dict[str, Any]] = {}
    for run in runs:
        for label, spec in run.specs.items():
            if label in specs and specs[label] != spec:
                raise ValueError(f"attack label {label!r} means different attacks in the merged runs "
                                 f"({specs[label]} vs {spec}); rename one in its config")
            specs[label] = spec
    return specs


def _metric_doc(metric: str, per_example: bool) -> str:
    if metric == "robust_accuracy":
        return ROBUST_ACCURACY_DOCS[per_example]
    return METRIC_DOCS.get(metric, metric)


def _columns_and_legend(results: pd.DataFrame, specs: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    legend = dict(BASE_DOCS)
    columns: list[str] = []
    for label, spec in specs.items():
        cls = attack_class(spec["kind"], spec["engine"])
        have = set(results.loc[results.attack == label, "metric"])
        params = ", ".join(f"{k}={v}" for k, v in spec["params"].items())
        n = f"first {spec['n_samples']} test images" if spec["n_samples"] else "all test images"
        legend[f"attack:{label}"] = f"{cls.description}; engine `{cls.engine}`; {params}; {n}"
        for metric in dict.fromkeys(("accuracy", *cls.metrics)):
            if metric in have and metric not in TRANSFORM_METRICS:
                columns.append(f"{label}.{metric}")
                legend[f"{label}.{metric}"] = _metric_doc(metric, cls.per_example(spec["params"]))
        if set(TRANSFORM_METRICS) <= have:
            columns.append(f"{label}.transform")
            legend[f"{label}.transform"] = ("global transform the attack chose, per seed: (rows, cols) shift in "
                                            "pixels and rotation in degrees")
    return columns, legend


def _untrained(model_row: pd.Series) -> bool:
    """A model evaluated with its initial random weights (training.epochs 0 under allow_untrained)."""
    import json

    extra = model_row.get("extra")
    return isinstance(extra, str) and bool(json.loads(extra or "{}").get("untrained"))


def _row(run: RunData, dataset: str, model: str, group: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    info = run.models[(run.models.model == model) & (run.models.dataset == dataset)]
    first = info.sort_values("seed").iloc[0] if len(info) else None
    row: dict[str, Any] = {
        "dataset": dataset, "model": model, "run": run.label,
        "arch": group.arch.iloc[0] + (" (untrained)" if first is not None and _untrained(first) else ""),
        "kernel": first.kernel if first is not None else "", "window": first.window if first is not None else "",
        "params": int(first.params) if first is not None else np.nan,
        "flops": int(first.flops) if first is not None else np.nan, "seeds": int(group.seed.nunique())}
    for col in columns:
        label, metric = split_column(col)
        sub = group[group.attack == label]
        if metric == "transform":
            per_seed = sub.pivot_table(index="seed", columns="metric", values="value")
            row[col] = "; ".join(f"({r.shift_rows:+.0f}, {r.shift_cols:+.0f}) px {r.rotation_deg:+.0f}°"
                                 for r in per_seed.itertuples())
            continue
        rows = sub[sub.metric == metric]
        values = rows["value"].astype(float)
        row[col] = values.mean() if len(values) else np.nan
        # no spread across seeds when one is infinite (e.g. a convergence signal): NaN, not a numpy warning
        spread = len(values) > 1 and bool(np.isfinite(values).all())
        row[f"{col}.std"] = values.std(ddof=1) if spread else np.nan
        lo, hi = rows["lo"].astype(float), rows["hi"].astype(float)
        if len(values) > 1 and lo.notna().any() and hi.notna().any():
            low, high = t_interval(values.to_numpy())
            if metric in PERCENT_METRICS:
                low, high = max(low, 0.0), min(high, 1.0)
            row[f"{col}.lo"], row[f"{col}.hi"], row[f"{col}.interval"] = low, high, "seeds"
        elif lo.notna().any() and hi.notna().any():
            row[f"{col}.lo"], row[f"{col}.hi"], row[f"{col}.interval"] = lo.mean(), hi.mean(), "images"
    for label in dict.fromkeys(split_column(c)[0] for c in columns):
        flags = run.flags(model, dataset, label)
        if flags:
            row[f"{label}.flags"] = "; ".join(flags)
    return row


def table_from_runs(runs: list[RunData], rank_by: str | None = None) -> tuple[pd.DataFrame, dict[str, str], str]:
    """The wide table of already loaded runs (see ``build_table``)."""
    specs = _merged_specs(runs)
    results = pd.concat([r.results for r in runs], ignore_index=True)
    if results.empty:
        raise ValueError("no finished evaluations in " + ", ".join(str(r.path) for r in runs))
    columns, legend = _columns_and_legend(results, specs)
    rows = [_row(run, dataset, model, group, columns)
            for run in runs for (dataset, model), group in run.results.groupby(["dataset", "model"], sort=False)]
    table = pd.DataFrame(rows)
    if table["arch"].str.endswith(" (untrained)").any():
        legend["arch"] = (legend["arch"] + "; '(untrained)': evaluated with its initial random weights (training.epochs "
                          "0 under allow_untrained: true)")

    rank_col = rank_by or _default_rank(columns)
    if rank_col not in table.columns:
        raise ValueError(f"rank_by {rank_col!r} is not a leaderboard column; columns: {', '.join(columns)}")
    table = table.sort_values(["dataset", rank_col], ascending=[True, not higher_is_better(rank_col)],
                              na_position="last", kind="stable")
    table["rank"] = table.groupby("dataset").cumcount() + 1
    legend["rank"] = f"position when sorted by the ranking column ({rank_order(rank_col)}), within the dataset"
    ordered = list(BASE_COLUMNS)
    for i, col in enumerate(columns):
        ordered += [c for c in (col, f"{col}.std", f"{col}.lo", f"{col}.hi", f"{col}.interval") if c in table.columns]
        if f"{col}.interval" in table.columns:
            kinds = [k for k in INTERVAL_DOCS if (table[f"{col}.interval"] == k).any()]
            legend[col] = legend.get(col, "") + ". Interval: " + "; ".join(
                ("rows with several seeds: " if k == "seeds" else "single-seed rows: ") + INTERVAL_DOCS[k]
                for k in kinds)
        label = split_column(col)[0]
        last_of_attack = i + 1 == len(columns) or split_column(columns[i + 1])[0] != label
        if last_of_attack and f"{label}.flags" in table.columns:
            ordered.append(f"{label}.flags")
    for marker, (suffix, text) in NOTES.items():
        if any(c.endswith(suffix) and table[c].notna().any() for c in table.columns):
            legend[marker] = text
    return table[ordered].reset_index(drop=True), legend, rank_col


def _default_rank(columns: list[str]) -> str:
    for suffix in (".rho_mean", ".accuracy", ".clean_accuracy"):
        for col in columns:
            if col.endswith(suffix):
                return col
    return columns[0]


def to_markdown(table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str,
                notes: tuple[str, ...] = ()) -> str:
    """The leaderboard as Markdown; ``notes`` (e.g. incomplete runs) go under the title."""
    metric_cols = metric_columns(table)
    show_run = table["run"].nunique() > 1 if "run" in table.columns else False
    # the user's text (title, config description, names) with HTML's specials escaped, as in the HTML output
    lines = [f"# {md_text(title)}", "", f"Ranked by `{rank_col}` ({rank_order(rank_col)}) within each dataset.", ""]
    lines += [f"> **Note:** {md_text(note)}" for note in notes] + ([""] if notes else [])
    footnotes: list[str] = []
    for dataset, group in table.groupby("dataset", sort=False):
        lines += [f"## {md_text(dataset)}", ""]
        header = ["rank", "model", *(["run"] if show_run else []), "arch", "kernel", "window", "params", "FLOPs",
                  "seeds", *metric_cols]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        for _, r in group.iterrows():
            cells = [str(r["rank"]), str(r.model), *([str(r.run)] if show_run else []), str(r.arch), str(r.kernel),
                     str(r.window), human(r.params), human(r.flops), str(r.seeds)]
            cells += metric_cells(r, metric_cols, cell_text, footnotes,
                                  lambda attack, flags: f"{attack}, {r.model} ({r.run}): {flags}", lambda n: f" ⚠[{n}]")
            lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
        lines.append("")
    if footnotes:
        lines += ["Flagged by a sanity check (values kept, read them with care):", ""]
        lines += [f"{i}. {md_text(note)}" for i, note in enumerate(footnotes, 1)] + [""]
    lines += ["## Attacks", ""]
    lines += [f"- **{key.split(':', 1)[1]}**: {text}" for key, text in legend.items() if key.startswith("attack:")]
    lines += ["", "## Legend", ""]
    keys = ["rank", "model", *(["run"] if show_run else []), "arch", "kernel", "window", "params", "flops", "seeds",
            *metric_cols, *[k for k in NOTES if k in legend]]
    lines += [f"- **{col}**: {legend.get(col, '')}" for col in keys]
    lines.append("")
    return "\n".join(lines)


def write_outputs(run_dirs: list[Path], out_dir: Path, rank_by: str | None = None,
                  formats: tuple[str, ...] = ("csv", "md")) -> list[Path]:
    """Render the leaderboard of ``run_dirs`` into ``out_dir``; returns the files written.

    ``formats``: any of csv, md, json, latex, html, plots (html embeds the plots, so it makes them too).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown leaderboard format {', '.join(unknown)}; allowed: {', '.join(FORMATS)}")
    runs = load_runs(list(run_dirs))
    if rank_by is None:
        rank_by = _config_rank_by(runs)
    table, legend, rank_col = table_from_runs(runs, rank_by)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_folder(out_dir)
    title = "Leaderboard: " + ", ".join(r.label for r in runs)
    protocols = tuple(r.protocol() for r in runs if r.protocol())
    written = []
    if "csv" in formats:
        # a plain table (pandas.read_csv and spreadsheets read it as is); the protocol goes in the sidecar
        (out_dir / "leaderboard.csv").write_text(table.to_csv(index=False))
        written.append(out_dir / "leaderboard.csv")
        written.append(write_csv_meta(runs, table, legend, rank_col, title, out_dir / META_NAME))
    if "md" in formats:
        notes = protocols + tuple(n for r in runs for n in r.status_notes())
        (out_dir / "leaderboard.md").write_text(to_markdown(table, legend, rank_col, title, notes))
        written.append(out_dir / "leaderboard.md")
    if "json" in formats:
        from .exports import write_json

        written.append(write_json(runs, table, legend, rank_col, title, out_dir / "leaderboard.json"))
    if "latex" in formats:
        from .exports import write_latex

        written.append(write_latex(table, legend, rank_col, title, out_dir / "leaderboard.tex", protocols))
    if "plots" in formats or "html" in formats:
        from .plots import make_plots

        figures = make_plots(runs, table, out_dir / "plots")
        written += [path for fig in figures for path in fig.files]
        if "html" in formats:
            from .html import write_html

            written.append(write_html(runs, table, legend, rank_col, title, figures, out_dir / "leaderboard.html"))
    return written


META_NAME = "leaderboard.meta.json"
RUN_FIELDS = ("run_id", "config_name", "config_hash", "git_commit", "device", "command", "started_at", "finished_at",
              "status")


SUFFIX_DOCS = {".std": "standard deviation across training seeds of {col}",
               ".lo": "lower end of the 95% interval of {col} (coverage in {col}.interval)",
               ".hi": "upper end of the 95% interval of {col} (coverage in {col}.interval)",
               ".interval": "what the interval of {col} covers: seeds (t-interval over the per-seed values) or images "
                            "(bootstrap over the test images of a single seed)",
               ".flags": "sanity-check flags of attack {col} (values kept; read them with care)"}


def _column_doc(column: str, legend: dict[str, str]) -> str:
    if column in legend:
        return legend[column]
    base, dot, suffix = column.rpartition(".")
    text = SUFFIX_DOCS.get(dot + suffix, "")
    return text.format(col=base) if text else legend.get(base, "")


def write_csv_meta(runs: list[RunData], table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str,
                   path: Path) -> Path:
    """``leaderboard.meta.json``: what the plain CSV beside it cannot say (protocol, columns, provenance)."""
    import json

    meta = {"csv": "leaderboard.csv", "title": title, "rank_by": rank_col,
            "protocols": {r.label: r.description() for r in runs if r.description()},
            "notes": [n for r in runs for n in r.status_notes()],
            "columns": {c: _column_doc(c, legend) for c in table.columns},
            "runs": {r.label: {k: r.run.get(k) for k in RUN_FIELDS} for r in runs}}
    path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


def _config_rank_by(runs: list[RunData]) -> str | None:
    """The configs' rank_by when every merged run names the same one."""
    wanted = {run.config().get("rank_by") for run in runs}
    return wanted.pop() if len(wanted) == 1 else None


__all__ = ["FORMATS", "META_NAME", "write_csv_meta", "build_table", "table_from_runs", "to_markdown", "write_outputs", "STORE_NAME"]
