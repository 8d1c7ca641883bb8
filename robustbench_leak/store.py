"""SQLite results store (stdlib), one file per run folder.

Each grid cell's outcome (its metrics, its per-sample results and its 'done' mark) is written in one
transaction, so a run killed halfway leaves a consistent file, and a rerun finds exactly the cells
that are missing.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, config_name TEXT, config_path TEXT, config_hash TEXT, config_yaml TEXT,
    device TEXT, versions TEXT, git_commit TEXT, command TEXT, started_at TEXT, finished_at TEXT,
    status TEXT);
CREATE TABLE IF NOT EXISTS run_cells (
    run_id TEXT, cell_key TEXT, kind TEXT, train_key TEXT, model TEXT, arch TEXT, dataset TEXT,
    seed INTEGER, attack TEXT, PRIMARY KEY (run_id, cell_key));
CREATE TABLE IF NOT EXISTS cells (
    cell_key TEXT PRIMARY KEY, kind TEXT, spec TEXT, status TEXT, run_id TEXT, device TEXT,
    started_at TEXT, finished_at TEXT, seconds REAL, info TEXT);
CREATE TABLE IF NOT EXISTS models (
    train_key TEXT PRIMARY KEY, arch TEXT, options TEXT, kernel TEXT, window TEXT, params INTEGER,
    flops INTEGER, checkpoint TEXT, history TEXT, train_seconds REAL, trained_on TEXT, extra TEXT);
CREATE TABLE IF NOT EXISTS metrics (
    cell_key TEXT, metric TEXT, value REAL, lo REAL, hi REAL, PRIMARY KEY (cell_key, metric));
CREATE TABLE IF NOT EXISTS samples (
    cell_key TEXT, idx INTEGER, label INTEGER, clean_pred INTEGER, adv_pred INTEGER, l2 REAL, rho REAL,
    PRIMARY KEY (cell_key, idx));
"""

STORE_NAME = "results.sqlite"

# columns added after the first release: (table, column, type); added to older files on open
MIGRATIONS = [("models", "extra", "TEXT"),
              # perturbation spectra of minimum-norm attacks: share of |FFT(x_adv - x)|^2 above half-Nyquist,
              # and the radial spectral centroid in cycles per pixel
              ("samples", "hf_share", "REAL"), ("samples", "centroid", "REAL")]
SAMPLE_COLUMNS = ["label", "clean_pred", "adv_pred", "l2", "rho", "hf_share", "centroid"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        with self.conn:
            for table, column, kind in MIGRATIONS:
                have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @classmethod
    def open_existing(cls, path: str | Path) -> "Store":
        path = Path(path)
        if path.is_dir():
            path = path / STORE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no results store here (expected a run folder holding {STORE_NAME})")
        return cls(path)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.conn:  # commits on success, rolls back on any exception
            yield self.conn

    # runs ---------------------------------------------------------------------------------------
    def start_run(self, run_id: str, **fields: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO runs (run_id, started_at, status) VALUES (?, ?, 'running')", (run_id, now()))
            for key, value in fields.items():
                c.execute(f"UPDATE runs SET {key} = ? WHERE run_id = ?", (_text(value), run_id))

    def finish_run(self, run_id: str, status: str = "done") -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET finished_at = ?, status = ? WHERE run_id = ?", (now(), status, run_id))

    def add_run_cells(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO run_cells VALUES (:run_id, :cell_key, :kind, :train_key, :model, :arch, "
                ":dataset, :seed, :attack)", [{"run_id": run_id, **r} for r in rows])

    def latest_run(self) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1")
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    # cells --------------------------------------------------------------------------------------
    def is_done(self, cell_key: str) -> bool:
        row = self.conn.execute("SELECT status FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        return bool(row and row[0] == "done")

    def record_model(self, train_key: str, info: dict[str, Any]) -> None:
        """``info``: arch, options, kernel, window, params, flops, checkpoint, history, train_seconds,
        trained_on, and optionally ``extra`` (a dict, e.g. what a parameter-matched width was matched to)."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO models (train_key, arch, options, kernel, window, params, flops, "
                      "checkpoint, history, train_seconds, trained_on, extra) VALUES (:train_key, :arch, :options, "
                      ":kernel, :window, :params, :flops, :checkpoint, :history, :train_seconds, :trained_on, :extra)",
                      {"train_key": train_key, "extra": None, **{k: _text(v) for k, v in info.items()}})

    def record_cell(self, cell_key: str, kind: str, spec: dict[str, Any], run_id: str, device: str,
                    started_at: str, seconds: float, metrics: dict[str, float] | None = None,
                    samples: dict[str, np.ndarray] | None = None, info: dict[str, Any] | None = None,
                    intervals: dict[str, tuple[float, float]] | None = None) -> None:
        """Write a finished cell: metrics, per-sample rows and its 'done' mark, all or nothing."""
        intervals = intervals or {}
        with self.transaction() as c:
            c.execute("DELETE FROM metrics WHERE cell_key = ?", (cell_key,))
            c.execute("DELETE FROM samples WHERE cell_key = ?", (cell_key,))
            c.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                          [(cell_key, m, _float(v), *intervals.get(m, (None, None)))
                           for m, v in (metrics or {}).items()])
            if samples:
                n = len(next(iter(samples.values())))
                rows = [(cell_key, i, *[_item(samples[col][i]) if col in samples else None for col in SAMPLE_COLUMNS])
                        for i in range(n)]
                c.executemany(f"INSERT INTO samples (cell_key, idx, {', '.join(SAMPLE_COLUMNS)}) "
                              f"VALUES ({', '.join('?' * (len(SAMPLE_COLUMNS) + 2))})", rows)
            c.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?)",
                      (cell_key, kind, json.dumps(spec, sort_keys=True), run_id, device, started_at, now(),
                       seconds, json.dumps(info or {}, default=str)))

    # reading ------------------------------------------------------------------------------------
    def frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        return pd.read_sql_query(sql, self.conn, params=params)

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

    def runs(self) -> pd.DataFrame:
        """Every run recorded in this file (a resumed folder holds several), oldest first."""
        return self.frame("SELECT * FROM runs ORDER BY started_at, rowid")

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

    def cell_info(self, cell_key: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT info FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    # readers of the claims and compare reports ----------------------------------------------------
    def done_eval_cells(self, run_id: str, model: str, attack: str | None = None) -> pd.DataFrame:
        """A model's finished eval cells in a run (cell_key, dataset, seed, attack; spec and info as JSON
        text), optionally of one attack label only."""
        sql = ("SELECT rc.cell_key, rc.dataset, rc.seed, rc.attack, c.spec, c.info FROM run_cells rc JOIN cells c "
               "ON c.cell_key = rc.cell_key AND c.status = 'done' WHERE rc.run_id = ? AND rc.kind = 'eval' "
               "AND rc.model = ?")
        if attack is None:
            return self.frame(sql + " ORDER BY rc.rowid", (run_id, model))
        return self.frame(sql + " AND rc.attack = ? ORDER BY rc.rowid", (run_id, model, attack))

    def run_model_names(self, run_id: str) -> list[str]:
        """The model names a run planned, in order of first appearance."""
        return [r[0] for r in self.conn.execute(
            "SELECT model FROM run_cells WHERE run_id = ? GROUP BY model ORDER BY MIN(rowid)", (run_id,))]

    def eval_coverage(self, run_id: str) -> pd.DataFrame:
        """Per (model, seed) of a run: eval cells finished ('done') and planned."""
        return self.frame("""
            SELECT rc.model, rc.seed, COALESCE(SUM(c.status = 'done'), 0) AS done, COUNT(*) AS planned
            FROM run_cells rc LEFT JOIN cells c ON c.cell_key = rc.cell_key WHERE rc.run_id = ? AND rc.kind = 'eval'
            GROUP BY rc.model, rc.seed ORDER BY rc.model, rc.seed""", (run_id,))


def _text(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _float(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _item(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and np.isnan(value) else value
