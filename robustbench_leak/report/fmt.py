"""Formatting shared by the Markdown, LaTeX and HTML leaderboards."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import attacks  # noqa: F401  (the built-in attacks declare their metrics)
from ..metrics import PERCENT_METRICS, metric_spec  # PERCENT_METRICS: a view of the declarations

AUX_SUFFIXES = (".std", ".lo", ".hi", ".interval", ".flags")
# what a row's [lo, hi] covers, by the value of its '<col>.interval' column
INTERVAL_DOCS = {
    "seeds": "95% t-interval over the per-seed values (training randomness, with each seed's test-set sampling)",
    "images": "95% bootstrap over the test images of the single seed (test-set sampling only)",
}
# every leaderboard column that is not a metric
BASE_COLUMNS = ["dataset", "rank", "model", "run", "arch", "kernel", "window", "params", "flops", "seeds"]


LOWER_IS_BETTER_BASE = ("params", "flops")  # base columns a leaderboard may be ranked by: smaller is better


def md_text(text: str) -> str:
    """Free text (a claim's title) for a Markdown line or table cell: HTML's specials and the table's pipe escaped,
    line breaks as spaces."""
    text = " ".join(str(text).split("\n"))
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|"))


def higher_is_better(col: str) -> bool:
    """The ranking direction of a leaderboard column, from its metric's declaration (base columns: params
    and FLOPs rank ascending; a metric nobody declared, descending)."""
    if col in BASE_COLUMNS:
        return col not in LOWER_IS_BETTER_BASE
    spec = metric_spec(split_column(col)[1]) if "." in col else None
    return spec.higher_is_better if spec is not None else True


def rank_order(col: str) -> str:
    """'descending', or 'ascending: lower is better', as the leaderboards say it."""
    return "descending" if higher_is_better(col) else "ascending: lower is better"


def missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The '<attack>.<metric>' columns, in table order (without their .std/.lo/.hi/.flags companions)."""
    return [c for c in table.columns if c not in BASE_COLUMNS and not c.endswith(AUX_SUFFIXES)]


def split_column(col: str) -> tuple[str, str]:
    """'deepfool.rho_mean' -> ('deepfool', 'rho_mean')."""
    attack, metric = col.rsplit(".", 1)
    return attack, metric


def _num(value: float, metric: str) -> str:
    return f"{100 * value:.1f}" if metric in PERCENT_METRICS else f"{value:.4f}"


def value_text(value: Any, metric: str) -> str:
    """The value alone: '85.0%' or '0.2910'; strings pass through; missing is an en dash."""
    if isinstance(value, str):
        return value
    if missing(value):
        return "–"
    return _num(float(value), metric) + ("%" if metric in PERCENT_METRICS else "")


def spread_parts(metric: str, std: Any = np.nan, lo: Any = np.nan, hi: Any = np.nan) -> list[str]:
    """['± 7.1', '[80.0, 90.0]']: std across seeds and the confidence interval, whichever exist."""
    parts = []
    if not missing(std):
        parts.append(f"± {_num(float(std), metric)}")
    if not missing(lo) and not missing(hi):
        parts.append(f"[{_num(float(lo), metric)}, {_num(float(hi), metric)}]")
    return parts


def spread_text(metric: str, std: Any = np.nan, lo: Any = np.nan, hi: Any = np.nan) -> str:
    """'± 7.1 [80.0, 90.0]'."""
    return " ".join(spread_parts(metric, std, lo, hi))


def cell_text(row: pd.Series, col: str) -> str:
    """A metric cell in one line: value, then ± std and [lo, hi] when present."""
    metric = split_column(col)[1]
    value = row.get(col)
    if isinstance(value, str) or missing(value):
        return value_text(value, metric)
    spread = spread_text(metric, row.get(f"{col}.std"), row.get(f"{col}.lo"), row.get(f"{col}.hi"))
    return value_text(value, metric) + (" " + spread if spread else "")


def footnote_number(notes: list[str], note: str) -> int:
    """1-based number of ``note`` in ``notes``, appending it the first time it is seen."""
    if note not in notes:
        notes.append(note)
    return notes.index(note) + 1


def row_flags(row: pd.Series, col: str) -> str:
    """Flag text of the attack behind ``col`` in this row ('' when none)."""
    flags = row.get(f"{split_column(col)[0]}.flags")
    return "" if missing(flags) else str(flags)


def metric_cells(row: pd.Series, cols: list[str], cell: Callable[[pd.Series, str], str], notes: list[str],
                 note: Callable[[str, str], str], mark: Callable[[int], str]) -> list[str]:
    """A leaderboard row's metric cells in one output format (Markdown, LaTeX): ``cell`` renders a value; a
    flagged attack's cell gets ``mark(n)``, where ``n`` numbers its ``note(attack, flags)`` in ``notes``."""
    cells = []
    for col in cols:
        text, flags = cell(row, col), row_flags(row, col)
        if flags:
            text += mark(footnote_number(notes, note(split_column(col)[0], flags)))
        cells.append(text)
    return cells


def human(n: Any) -> str:
    if missing(n):
        return "–"
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def row_label(row: pd.Series, table: pd.DataFrame) -> str:
    """Model name, with its run folder when the same name appears in more than one run."""
    same = table[(table.model == row.model) & (table.dataset == row.dataset)]
    return f"{row.model} [{row.run}]" if len(same) > 1 else str(row.model)
