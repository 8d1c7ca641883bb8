"""Read-only queries of a results store: everything reports, leaderboards, claims, compare and the
Python API read.

``StoreReader(path)`` opens an existing store (a run folder or its ``results.sqlite``) read-only, so
reading never changes a store or its folder.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from .schema import SAMPLE_COLUMNS, connect_readonly, store_file, table_columns

# The newest finished result of every cell, whichever run computed it. A slot is what a table row shows:
# (kind, model, dataset, seed, attack). Runs into one folder may compute a slot several times (a changed
# preset, a rerun); the newest finished cell wins, so a later run that failed or planned other cells never
# hides what earlier runs stored.
NEWEST = """
    WITH slots AS (
        SELECT DISTINCT rc.cell_key, rc.kind, rc.train_key, rc.model, rc.arch, rc.dataset, rc.seed, rc.attack
        FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'),
    ranked AS (
        SELECT s.*, c.run_id AS computed_in, c.finished_at,
               ROW_NUMBER() OVER (PARTITION BY s.kind, s.model, s.dataset, s.seed, COALESCE(s.attack, '')
                                  ORDER BY c.finished_at DESC, c.rowid DESC) AS newest
        FROM slots s JOIN cells c ON c.cell_key = s.cell_key),
    chosen AS (SELECT * FROM ranked WHERE newest = 1)
"""


class StoreReader:
    """Queries of one store. Results are the cells stored as 'done'; failed cells only in ``failed_cells``."""

    def __init__(self, path: str | Path) -> None:
        """Open the store of a run folder, or the store file ``path``, read-only: ``FileNotFoundError``
        where there is none, ``StoreError`` for a file that is not an rbleak store."""
        self.path = store_file(path)
        self.conn: sqlite3.Connection = connect_readonly(self.path)

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        return pd.read_sql_query(sql, self.conn, params=params)

    # runs ---------------------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """Every run recorded in this file (a resumed folder holds several), oldest first."""
        return self.frame("SELECT * FROM runs ORDER BY started_at, rowid")

    def latest_run(self) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1")
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def planned_cells(self) -> pd.DataFrame:
        """Every cell any run in this file planned: kind, cell_key, model, dataset, seed, attack and the
        name of the config that planned it."""
        return self.frame("""
            SELECT DISTINCT rc.kind, rc.cell_key, rc.model, rc.dataset, rc.seed, rc.attack, r.config_name,
                            r.config_path
            FROM run_cells rc LEFT JOIN runs r ON r.run_id = rc.run_id ORDER BY rc.rowid""")

    def planned_evals(self, run_id: str) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM run_cells WHERE run_id = ? AND kind = 'eval'",
                                     (run_id,)).fetchone()[0])

    def run_model_names(self, run_id: str) -> list[str]:
        """The model names a run planned, in order of first appearance."""
        return [r[0] for r in self.conn.execute(
            "SELECT model FROM run_cells WHERE run_id = ? GROUP BY model ORDER BY MIN(rowid)", (run_id,))]

    def attack_order(self, run_id: str) -> list[str]:
        """Attack labels in the order the run's config lists them; labels only earlier runs had come after."""
        return [r[0] for r in self.conn.execute("""
            SELECT attack FROM run_cells WHERE kind = 'eval' GROUP BY attack
            ORDER BY MIN(CASE WHEN run_id = ? THEN rowid END) IS NULL, MIN(CASE WHEN run_id = ? THEN rowid END),
                     MIN(rowid)""", (run_id, run_id))]

    # cells --------------------------------------------------------------------------------------
    def is_done(self, cell_key: str) -> bool:
        row = self.conn.execute("SELECT status FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        return bool(row and row[0] == "done")

    def cell_info(self, cell_key: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT info FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def finished_cell_rows(self, cell_key: str) -> dict[str, list[dict[str, Any]]] | None:
        """Every stored row behind a finished cell, by table: the cell, its metrics and samples, its model
        record (a train cell's), and the record and planned row of the run that computed it; None unless
        the cell is done. What a merge copies."""
        cell = self._rows("cells", "cell_key = ? AND status = 'done'", (cell_key,))
        if not cell:
            return None
        run_id = cell[0]["run_id"]
        return {"cells": cell,
                "metrics": self._rows("metrics", "cell_key = ?", (cell_key,)),
                "samples": self._rows("samples", "cell_key = ?", (cell_key,)),
                "models": self._rows("models", "train_key = ?", (cell_key,)) if cell[0]["kind"] == "train" else [],
                "runs": self._rows("runs", "run_id = ?", (run_id,)),
                "run_cells": self._rows("run_cells", "run_id = ? AND cell_key = ?", (run_id, cell_key))}

    def _rows(self, table: str, where: str, params: tuple) -> list[dict[str, Any]]:
        cur = self.conn.execute(f"SELECT * FROM {table} WHERE {where}", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    # one run's results ---------------------------------------------------------------------------
    def results(self, run_id: str) -> pd.DataFrame:
        """Long table: one row per (model, dataset, seed, attack, metric) of a run's finished cells."""
        return self.frame("""
            SELECT rc.model, rc.arch, rc.dataset, rc.seed, rc.attack, m.metric, m.value, m.lo, m.hi,
                   rc.cell_key, rc.train_key, c.device, c.finished_at
            FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'
            JOIN metrics m ON m.cell_key = rc.cell_key
            WHERE rc.run_id = ? AND rc.kind = 'eval'""", (run_id,))

    def model_info(self, run_id: str) -> pd.DataFrame:
        return self.frame("""
            SELECT DISTINCT rc.model, rc.dataset, rc.seed, md.* FROM run_cells rc
            JOIN models md ON md.train_key = rc.train_key WHERE rc.run_id = ? AND rc.kind = 'train'""", (run_id,))

    def samples(self, cell_key: str) -> pd.DataFrame:
        return self.frame("SELECT * FROM samples WHERE cell_key = ? ORDER BY idx", (cell_key,))

    def eval_cells(self, run_id: str) -> pd.DataFrame:
        """A run's finished eval cells with their spec, info (JSON text) and the run that computed them."""
        return self.frame("""
            SELECT rc.cell_key, rc.model, rc.dataset, rc.seed, rc.attack, rc.train_key, c.spec, c.info,
                   c.run_id AS computed_in, c.device, c.finished_at, c.seconds
            FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'
            WHERE rc.run_id = ? AND rc.kind = 'eval' ORDER BY rc.rowid""", (run_id,))

    def perturbation_samples(self, run_id: str) -> pd.DataFrame:
        """Per-sample rows of a run's eval cells that recorded a perturbation norm (minimum-norm attacks)."""
        return self.frame("""
            SELECT s.* FROM samples s JOIN run_cells rc ON rc.cell_key = s.cell_key
            WHERE rc.run_id = ? AND rc.kind = 'eval' AND s.l2 IS NOT NULL ORDER BY s.cell_key, s.idx""",
                          (run_id,))

    def done_eval_cells(self, run_id: str, model: str, attack: str | None = None) -> pd.DataFrame:
        """A model's finished eval cells in a run (cell_key, dataset, seed, attack; spec and info as JSON
        text), optionally of one attack label only."""
        sql = ("SELECT rc.cell_key, rc.dataset, rc.seed, rc.attack, c.spec, c.info FROM run_cells rc JOIN cells c "
               "ON c.cell_key = rc.cell_key AND c.status = 'done' WHERE rc.run_id = ? AND rc.kind = 'eval' "
               "AND rc.model = ?")
        if attack is None:
            return self.frame(sql + " ORDER BY rc.rowid", (run_id, model))
        return self.frame(sql + " AND rc.attack = ? ORDER BY rc.rowid", (run_id, model, attack))

    def eval_coverage(self, run_id: str) -> pd.DataFrame:
        """Per (model, seed) of a run: eval cells finished ('done') and planned."""
        return self.frame("""
            SELECT rc.model, rc.seed, COALESCE(SUM(c.status = 'done'), 0) AS done, COUNT(*) AS planned
            FROM run_cells rc LEFT JOIN cells c ON c.cell_key = rc.cell_key WHERE rc.run_id = ? AND rc.kind = 'eval'
            GROUP BY rc.model, rc.seed ORDER BY rc.model, rc.seed""", (run_id,))

    def failed_cells(self, run_id: str) -> pd.DataFrame:
        """A run's planned cells that are stored as failed, with their error (``info`` JSON text)."""
        return self.frame("""
            SELECT rc.cell_key, rc.kind, rc.model, rc.dataset, rc.seed, rc.attack, c.run_id AS failed_in, c.info
            FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'failed'
            WHERE rc.run_id = ? ORDER BY rc.rowid""", (run_id,))

    def missing_slots(self, run_id: str) -> int:
        """Eval slots a run planned that have no finished result from any run."""
        return int(self.conn.execute(NEWEST + """
            SELECT COUNT(*) FROM run_cells rc WHERE rc.run_id = ? AND rc.kind = 'eval' AND NOT EXISTS (
                SELECT 1 FROM chosen ch WHERE ch.kind = 'eval' AND ch.model = rc.model AND ch.dataset = rc.dataset
                AND ch.seed = rc.seed AND ch.attack = rc.attack)""", (run_id,)).fetchone()[0])

    # the newest finished result of every slot, whichever run computed it (see NEWEST) ------------
    def newest_results(self) -> pd.DataFrame:
        """Long table like ``results``, over the newest finished eval cell of every slot."""
        return self.frame(NEWEST + """
            SELECT ch.model, ch.arch, ch.dataset, ch.seed, ch.attack, m.metric, m.value, m.lo, m.hi,
                   ch.cell_key, ch.train_key, c.device, c.finished_at
            FROM chosen ch JOIN cells c ON c.cell_key = ch.cell_key JOIN metrics m ON m.cell_key = ch.cell_key
            WHERE ch.kind = 'eval' ORDER BY c.rowid, m.rowid""")

    def newest_model_info(self) -> pd.DataFrame:
        """Trained-model rows behind the newest eval cells (and newest train cells), one per (model, dataset,
        seed, train_key)."""
        return self.frame(NEWEST + """
            SELECT DISTINCT ch.model, ch.dataset, ch.seed, md.* FROM chosen ch
            JOIN models md ON md.train_key = ch.train_key ORDER BY ch.model, ch.dataset, ch.seed""")

    def newest_eval_cells(self) -> pd.DataFrame:
        """The newest finished eval cell of every slot, with spec, info (JSON text) and the run that computed it."""
        return self.frame(NEWEST + """
            SELECT ch.cell_key, ch.model, ch.dataset, ch.seed, ch.attack, ch.train_key, c.spec, c.info,
                   c.run_id AS computed_in, c.device, c.finished_at, c.seconds
            FROM chosen ch JOIN cells c ON c.cell_key = ch.cell_key WHERE ch.kind = 'eval' ORDER BY c.rowid""")

    def newest_perturbation_samples(self) -> pd.DataFrame:
        """Per-sample rows with a perturbation norm (minimum-norm attacks) of the newest eval cells."""
        return self.frame(NEWEST + """
            SELECT s.* FROM samples s JOIN chosen ch ON ch.cell_key = s.cell_key
            WHERE ch.kind = 'eval' AND s.l2 IS NOT NULL ORDER BY s.cell_key, s.idx""")

    def _sample_columns(self) -> str:
        """``SAMPLE_COLUMNS`` for a SELECT; a column added after this read-only file was written reads as NULL."""
        present = table_columns(self.conn, "samples")
        return ", ".join(f"s.{c}" if c in present else f"NULL AS {c}" for c in SAMPLE_COLUMNS)

    def newest_samples(self) -> pd.DataFrame:
        """Every per-sample row of the newest eval cells, with the cell's model, dataset, seed and attack."""
        return self.frame(NEWEST + f"""
            SELECT ch.model, ch.dataset, ch.seed, ch.attack, s.idx, {self._sample_columns()},
                   s.cell_key
            FROM samples s JOIN chosen ch ON ch.cell_key = s.cell_key
            WHERE ch.kind = 'eval' ORDER BY ch.model, ch.dataset, ch.seed, ch.attack, s.idx""")

    # every metric ----------------------------------------------------------------------------------
    def metric_values(self) -> dict[tuple[str, str], float | None]:
        """Every stored metric value by (cell_key, metric), whatever the cell's status or run."""
        return {(k, m): v for k, m, v in self.conn.execute("SELECT cell_key, metric, value FROM metrics")}
