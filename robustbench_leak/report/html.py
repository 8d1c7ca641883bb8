"""The self-contained HTML leaderboard (Jinja2, autoescaped; inline CSS and JS, PNGs embedded as data URIs).

Embedding the figures makes ``leaderboard.html`` one file that can be mailed, attached to a paper's
supplement or opened from anywhere without its folder; the PNG and SVG files are also written to
``plots/`` next to it for papers and slides.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from .figures import Figure
from .fmt import human, metric_columns, missing, rank_order, row_flags, split_column, spread_parts, value_text
from .loader import RunData, parse_json

SHOWN_BASE = ["rank", "model", "run", "dataset", "arch", "kernel", "window", "params", "flops", "seeds"]
# shown once above the table instead of in every row when all rows agree (the filters still see them)
FOLDABLE = ("dataset", "arch")
HEADERS = {"flops": "FLOPs"}


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("robustbench_leak.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def _sort_key(value: Any) -> str:
    if missing(value):
        return ""
    if isinstance(value, (int, float)):
        return repr(float(value))
    return str(value)


def _breakable(name: str) -> Markup:
    """'robust_accuracy' that may wrap after its underscores in a narrow header (escaped parts)."""
    return Markup("_<wbr>").join(escape(part) for part in name.split("_"))


def _run_provenance(run: RunData) -> dict[str, Any]:
    r = run.run
    versions = parse_json(r.get("versions"), {})
    return {"label": run.label, "folder": str(run.path.parent), "run_id": r["run_id"],
            "config": f"{r.get('config_name') or ''} ({r.get('config_path') or 'no path'})",
            "config_hash": r.get("config_hash") or "", "git_commit": r.get("git_commit") or "unknown",
            "device": r.get("device") or "", "started": r.get("started_at") or "",
            "finished": r.get("finished_at") or "", "status": r.get("status") or "",
            "command": r.get("command") or "",
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items())}


def _row_provenance(run: RunData, row: pd.Series) -> list[tuple[str, str]]:
    models = run.models[(run.models.model == row.model) & (run.models.dataset == row.dataset)].sort_values("seed")
    cells = run.cells[(run.cells.model == row.model) & (run.cells.dataset == row.dataset)]
    computed = []
    for run_id in dict.fromkeys(cells.computed_in):
        other = run.runs.get(run_id, {})
        computed.append(f"{run_id} (commit {str(other.get('git_commit') or 'unknown')[:12]}, "
                        f"{other.get('device') or '?'})")
    return [("run folder", str(run.path.parent)), ("run id", run.run["run_id"]),
            ("config hash", run.run.get("config_hash") or ""),
            ("git commit", run.run.get("git_commit") or "unknown"), ("device", run.run.get("device") or ""),
            ("date", run.run.get("started_at") or ""),
            ("seeds", ", ".join(str(int(s)) for s in models.seed) or "–"),
            ("options", ", ".join(str(o) for o in dict.fromkeys(models.options)) or "–"),
            ("checkpoints", ", ".join(str(c) for c in models.checkpoint) or "–"),
            ("cells computed in", "; ".join(computed) or "–")]


def _rows(runs: list[RunData], table: pd.DataFrame, base: list[str],
          cols: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    by_label = {r.label: r for r in runs}
    footnotes: list[str] = []
    rows = []
    for _, r in table.iterrows():
        cells = []
        for col in base:
            value = r[col]
            text = human(value) if col in ("params", "flops") else ("–" if missing(value) else str(value))
            cells.append({"key": col, "lines": [text], "sub": [], "sort": _sort_key(value), "flag": "", "note": 0,
                          "attack": ""})
        for col in cols:
            attack, metric = split_column(col)
            value, flag = r.get(col), row_flags(r, col)
            note = 0
            if flag:
                text = f"{attack}, {r.model} ({r.run}): {flag}"
                if text not in footnotes:
                    footnotes.append(text)
                note = footnotes.index(text) + 1
            spread = [] if isinstance(value, str) or missing(value) else spread_parts(
                metric, r.get(f"{col}.std"), r.get(f"{col}.lo"), r.get(f"{col}.hi"))
            # a per-seed list (the chosen spatial transforms) gets one line per seed
            lines = value.split("; ") if isinstance(value, str) else [value_text(value, metric)]
            cells.append({"key": col, "lines": lines, "sub": spread, "sort": _sort_key(value),
                          "flag": flag, "note": note, "attack": attack})
        rows.append({"dataset": str(r.dataset), "window": str(r.window), "kernel": str(r.kernel),
                     "run": str(r.run), "cells": cells, "provenance": _row_provenance(by_label[r.run], r)})
    return rows, footnotes


def _figure(fig: Figure, page_dir: Path) -> dict[str, Any]:
    png = fig.png
    data_uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii") if png else ""
    links = []
    for path in fig.files:
        try:
            links.append({"href": path.relative_to(page_dir).as_posix(), "text": path.suffix[1:].upper()})
        except ValueError:
            links.append({"href": path.as_uri(), "text": path.suffix[1:].upper()})
    return {"id": fig.name, "title": fig.title, "caption": fig.caption, "src": data_uri, "links": links,
            "notes": fig.notes}


def render(runs: list[RunData], table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str,
           figures: list[Figure], page_dir: Path) -> str:
    cols = metric_columns(table)
    folded = [(c, str(table[c].iloc[0])) for c in FOLDABLE if table[c].nunique() == 1]
    base = [c for c in SHOWN_BASE if c not in dict(folded)]
    columns = [{"key": c, "header": HEADERS.get(c, c), "attack": "", "doc": legend.get(c, "")} for c in base]
    columns += [{"key": c, "header": _breakable(split_column(c)[1]), "attack": split_column(c)[0],
                 "doc": legend.get(c, "")} for c in cols]
    groups: list[dict[str, Any]] = [{"label": "", "span": len(base)}]
    for c in cols:
        attack = split_column(c)[0]
        if groups[-1]["label"] == attack:
            groups[-1]["span"] += 1
        else:
            groups.append({"label": attack, "span": 1, "doc": legend.get(f"attack:{attack}", "")})
    rows, footnotes = _rows(runs, table, base, cols)
    legend_items = [(k, v) for k, v in legend.items() if not k.startswith("attack:") and k in
                    set(SHOWN_BASE) | set(cols) | {"±", "[lo, hi]", "⚠"}]
    attacks = [(k.split(":", 1)[1], v) for k, v in legend.items() if k.startswith("attack:")]
    return environment().get_template("leaderboard.html.j2").render(
        title=title, generated=datetime.now(timezone.utc).isoformat(timespec="seconds"), rank_col=rank_col, rank_order=rank_order(rank_col),
        columns=columns, groups=groups, rows=rows, footnotes=footnotes, folded=folded,
        filters={"dataset": sorted(table.dataset.astype(str).unique()),
                 "window": sorted(table.window.astype(str).unique()),
                 "kernel": sorted(table.kernel.astype(str).unique())},
        attack_labels=list(dict.fromkeys(split_column(c)[0] for c in cols)),
        figures=[_figure(f, page_dir) for f in figures], legend=legend_items, attacks=attacks,
        runs=[_run_provenance(r) for r in runs],
        incomplete=[n for r in runs for n in r.status_notes()],
        protocols=[r.protocol() for r in runs if r.protocol()])


def write_html(runs: list[RunData], table: pd.DataFrame, legend: dict[str, str], rank_col: str, title: str,
               figures: list[Figure], path: Path) -> Path:
    path.write_text(render(runs, table, legend, rank_col, title, figures, path.parent), encoding="utf-8")
    return path
