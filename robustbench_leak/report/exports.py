"""JSON records (one per leaderboard row, like RobustBench's model records) and a LaTeX (booktabs) table."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ..attacks import attack_class
from .fmt import (INTERVAL_DOCS, PERCENT_METRICS, cell_text, human, metric_cells, metric_columns, missing, rank_order,
                   row_flags, split_column, value_text)
from .loader import RunData, parse_json


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> null, NumPy scalars -> Python."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _provenance(run: RunData, model: str, dataset: str) -> dict[str, Any]:
    r = run.run
    cells = run.cells[(run.cells.model == model) & (run.cells.dataset == dataset)]
    computed = []
    for run_id in dict.fromkeys(cells["computed_in"]):
        other = run.runs.get(run_id, {})
        computed.append({"run_id": run_id, "git_commit": other.get("git_commit"), "device": other.get("device"),
                         "started_at": other.get("started_at"), "finished_at": other.get("finished_at")})
    return {
        "run_folder": str(run.path.parent), "store": str(run.path), "run_id": r["run_id"],
        "config_name": r.get("config_name"), "config_path": r.get("config_path"),
        "config_hash": r.get("config_hash"), "config": run.config(), "device": r.get("device"),
        "versions": parse_json(r.get("versions"), {}), "git_commit": r.get("git_commit"),
        "command": r.get("command"), "date": r.get("started_at"), "started_at": r.get("started_at"),
        "finished_at": r.get("finished_at"), "status": r.get("status"), "cells_computed_in": computed}


def record(run: RunData, row: pd.Series, table: pd.DataFrame) -> dict[str, Any]:
    """One leaderboard row as a self-describing record."""
    models = run.models[(run.models.model == row.model) & (run.models.dataset == row.dataset)].sort_values("seed")
    results = run.results[(run.results.model == row.model) & (run.results.dataset == row.dataset)]
    metrics: dict[str, Any] = {}
    for col in metric_columns(table):
        label, metric = split_column(col)
        if missing(row.get(col)):
            continue
        entry: dict[str, Any] = {"value": _clean(row[col])}
        for part in ("std", "lo", "hi"):
            if f"{col}.{part}" in row.index and not missing(row[f"{col}.{part}"]):
                entry[part] = _clean(row[f"{col}.{part}"])
        covers = row.get(f"{col}.interval")
        if not missing(covers):  # what [lo, hi] covers: "seeds" or "images"
            entry["interval"] = {"covers": covers, "method": INTERVAL_DOCS[covers]}
        per_seed = results[(results.attack == label) & (results.metric == metric)]
        if len(per_seed):
            entry["per_seed"] = {str(int(s)): _clean(v) for s, v in zip(per_seed.seed, per_seed.value)}
        if row_flags(row, col):
            entry["flags"] = row_flags(row, col).split("; ")
        metrics[col] = entry
    first = models.iloc[0] if len(models) else None
    return {
        "name": row.model, "run": row.run, "dataset": row.dataset, "rank": int(row["rank"]),
        "architecture": row.arch, "options": parse_json(first.options, {}) if first is not None else {},
        "kernel": row.kernel, "window": row.window, "params": _clean(row.params), "flops": _clean(row.flops),
        "seeds": sorted(int(s) for s in results.seed.unique()),
        "metrics": metrics,
        "attacks": {label: {**spec, "description": attack_class(spec["kind"], spec["engine"]).description}
                    for label, spec in run.specs.items() if label in set(results.attack)},
        "models": [{"seed": int(m.seed), "train_key": m.train_key, "checkpoint": m.checkpoint,
                    "trained_on": m.trained_on, "train_seconds": _clean(m.train_seconds)}
                   for m in models.itertuples()],
        "provenance": _provenance(run, row.model, row.dataset)}


def write_json(runs: list[RunData], table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str,
               path: Path) -> Path:
    by_label = {r.label: r for r in runs}
    doc = {"title": title, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "rank_by": rank_col, "protocols": {r.label: r.description() for r in runs},
           "legend": legend,
           "records": [record(by_label[row.run], row, table) for _, row in table.iterrows()]}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


# LaTeX ------------------------------------------------------------------------------------------
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "°": r"$^\circ$",
          "–": "--", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _latex_cell(row: pd.Series, col: str) -> str:
    value = row.get(col)
    if isinstance(value, str) or missing(value):
        return latex_escape(value_text(value, split_column(col)[1]))
    # cell_text without the % signs: the header says which columns are percentages
    return latex_escape(cell_text(row, col).replace("%", ""))


def to_latex(table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str,
             protocols: tuple[str, ...] = ()) -> str:
    cols = metric_columns(table)
    show_run = table["run"].nunique() > 1
    out = ["% generated by robustbench-leak; needs \\usepackage{booktabs}", "% columns:"]
    out += [f"%   {key}: {text}" for key, text in legend.items()] + [""]
    for dataset, group in table.groupby("dataset", sort=False):
        heads = ["\\#", "model", *(["run"] if show_run else []), "kernel", "window", "params",
                 *[latex_escape(c) + (" (\\%)" if split_column(c)[1] in PERCENT_METRICS else "") for c in cols]]
        notes: list[str] = []
        body = []
        for _, r in group.iterrows():
            cells = [str(r["rank"]), latex_escape(r.model), *([latex_escape(r.run)] if show_run else []),
                     latex_escape(r.kernel), latex_escape(r.window), human(r.params)]
            cells += metric_cells(r, cols, _latex_cell, notes, lambda attack, flags: f"{attack}, {r.model}: {flags}",
                                  lambda n: f"\\textsuperscript{{\\dag{n}}}")
            body.append(" & ".join(cells) + " \\\\")
        label = re.sub(r"[^A-Za-z0-9]+", "-", str(dataset)).strip("-")
        kinds = {k for c in group.columns if c.endswith(".interval") for k in group[c].dropna()}
        intervals = [("rows with several seeds: " if k == "seeds" else "single-seed rows: ") + INTERVAL_DOCS[k]
                     for k in INTERVAL_DOCS if k in kinds]
        caption = " ".join([f"{title}: {dataset}. Ranked by {rank_col} ({rank_order(rank_col)}).",
                            *(p[0].upper() + p[1:] + "." for p in protocols),
                            *(["Intervals [lo, hi]: " + "; ".join(intervals) + "."] if intervals else [])])
        out += ["\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{{latex_escape(caption)}}}", f"\\label{{tab:leaderboard-{label}}}",
                "\\begin{tabular}{" + "r" + "l" * (len(heads) - 1 - len(cols)) + "r" * len(cols) + "}",
                "\\toprule", " & ".join(heads) + " \\\\", "\\midrule", *body, "\\bottomrule", "\\end{tabular}"]
        if notes:
            out += ["", "\\par\\footnotesize " + " ".join(
                f"\\dag{i}~sanity check failed: {latex_escape(n)}." for i, n in enumerate(notes, 1))]
        out += ["\\end{table}", ""]
    return "\n".join(out)


def write_latex(table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str, path: Path,
                protocols: tuple[str, ...] = ()) -> Path:
    path.write_text(to_latex(table, legend, rank_col, title, protocols))
    return path
