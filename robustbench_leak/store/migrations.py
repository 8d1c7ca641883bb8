"""Corrections of numbers already stored, each run once per store and recorded in it.

A migration recomputes metric rows from the stored per-sample arrays: cell keys stay, nothing is rerun.
``fix_robust_accuracy`` applies the RobustBench definition of robust accuracy to the per-example attacks
(``metrics.robust_correct``): earlier versions counted a misclassified clean image that the attack moved
into its true class as robust.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from ..attacks.base import find_attack
from ..metrics import robust_correct
from ..stats import metric_intervals
from .arrays import decode
from .schema import close_writer, connect_for_writing, now, store_file, table_columns

MARKS = "CREATE TABLE IF NOT EXISTS store_migrations (name TEXT PRIMARY KEY, applied_at TEXT, summary TEXT)"
ROBUST_ACCURACY = "robust_accuracy_per_example"
# in spatial mode worst_of_grid both metrics are the per-example worst case over the grid
_SAME_AS_ROBUST = {"worst_of_grid_accuracy"}


def read_prediction_samples(conn: sqlite3.Connection, cell_key: str) -> dict[str, np.ndarray]:
    """The per-sample label, clean_pred and adv_pred arrays of a cell, in image order ({} where none): the one
    place a migration reads samples, so a change of their stored layout changes only this function."""
    names = ("label", "clean_pred", "adv_pred")
    packed = conn.execute("SELECT n, header, data FROM sample_arrays WHERE cell_key = ?", (cell_key,)).fetchone() \
        if table_columns(conn, "sample_arrays") else None
    if packed is not None:
        arrays = decode(*packed)
        if not all(name in arrays and arrays[name].dtype.kind == "i" for name in names):
            return {}
        return {name: arrays[name] for name in names}
    rows = conn.execute("SELECT label, clean_pred, adv_pred FROM samples WHERE cell_key = ? ORDER BY idx",
                        (cell_key,)).fetchall()
    if not rows or any(v is None for r in rows for v in r):
        return {}
    arr = np.asarray(rows, dtype=np.int64)
    return {"label": arr[:, 0], "clean_pred": arr[:, 1], "adv_pred": arr[:, 2]}


def applied(conn: sqlite3.Connection, name: str) -> bool:
    conn.execute(MARKS)
    return conn.execute("SELECT 1 FROM store_migrations WHERE name = ?", (name,)).fetchone() is not None


def _seed(conn: sqlite3.Connection, cell_key: str, spec: dict[str, Any]) -> int:
    """The seed of the cell's bootstrap intervals: its model's training seed (``EvalTask.seed``)."""
    row = conn.execute("SELECT spec FROM cells WHERE cell_key = ?", (spec.get("train_key"),)).fetchone()
    if row and row[0]:
        seed = json.loads(row[0]).get("seed")
        if isinstance(seed, int):
            return seed
    row = conn.execute("SELECT seed FROM run_cells WHERE cell_key = ? AND seed IS NOT NULL", (cell_key,)).fetchone()
    return int(row[0]) if row else 0


def _per_example(attack: dict[str, Any]) -> bool | None:
    cls = find_attack(attack.get("kind", ""), attack.get("engine", ""))
    return None if cls is None else cls.per_example(attack.get("params") or {})


def _corrected_rows(conn: sqlite3.Connection, cell_key: str, spec: dict[str, Any]) -> list[tuple]:
    """(metric, old value, new value, lo, hi) for each metric row of the cell that the definition changes."""
    attack = spec.get("attack") or {}
    if not _per_example(attack):
        return []
    names = {"robust_accuracy"}
    if attack.get("kind") == "spatial" and (attack.get("params") or {}).get("mode") == "worst_of_grid":
        names |= _SAME_AS_ROBUST
    stored = {m: v for m, v in conn.execute(
        f"SELECT metric, value FROM metrics WHERE cell_key = ? AND metric IN ({','.join('?' * len(names))})",
        (cell_key, *sorted(names))).fetchall()}
    samples = read_prediction_samples(conn, cell_key) if stored else {}
    if not samples:
        return []
    value = float(np.mean(robust_correct(samples["label"], samples["clean_pred"], samples["adv_pred"], True)))
    lo, hi = metric_intervals(samples, {"robust_accuracy": value}, seed=_seed(conn, cell_key, spec),
                              per_example=True)["robust_accuracy"]
    return [(m, old, value, lo, hi) if m == "robust_accuracy" else (m, old, value, None, None)
            for m, old in stored.items() if old is None or abs(old - value) > 1e-12]


def fix_robust_accuracy(path: str | Path, force: bool = False) -> dict[str, Any]:
    """Recompute robust_accuracy (and its interval) of every finished per-example eval cell of the store at
    ``path`` (a run folder or its results.sqlite) from the stored predictions; runs once per store, or again
    with ``force`` (for cells that an older version added after the first run; recomputing is idempotent).

    Returns ``{"store", "already_applied", "cells_checked", "cells_changed", "changes"}``, ``changes`` listing
    ``{"cell_key", "attack", "metric", "old", "new"}`` per corrected row.
    """
    file = store_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no results store here")
    conn = connect_for_writing(file)
    try:
        summary: dict[str, Any] = {"store": str(file), "already_applied": applied(conn, ROBUST_ACCURACY),
                                   "cells_checked": 0, "cells_changed": 0, "changes": []}
        if summary["already_applied"] and not force:
            return summary
        with conn:  # one transaction: the corrected rows and the mark, or nothing
            cells = conn.execute("SELECT cell_key, spec FROM cells WHERE kind = 'eval' AND status = 'done'").fetchall()
            for cell_key, spec_text in cells:
                spec = json.loads(spec_text or "{}")
                summary["cells_checked"] += 1
                rows = _corrected_rows(conn, cell_key, spec)
                for metric, old, new, lo, hi in rows:
                    conn.execute("UPDATE metrics SET value = ?, lo = COALESCE(?, lo), hi = COALESCE(?, hi) "
                                 "WHERE cell_key = ? AND metric = ?", (new, lo, hi, cell_key, metric))
                    summary["changes"].append({"cell_key": cell_key, "attack": (spec.get("attack") or {}).get("kind"),
                                               "metric": metric, "old": old, "new": new})
                summary["cells_changed"] += bool(rows)
            conn.execute("INSERT OR REPLACE INTO store_migrations VALUES (?, ?, ?)",
                         (ROBUST_ACCURACY, now(), json.dumps({k: summary[k] for k in ("cells_checked",
                                                                                        "cells_changed")})))
        return summary
    finally:
        close_writer(conn)
