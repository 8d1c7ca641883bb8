"""The one writer of a results store: the run driver's.

Each grid cell's outcome (its metrics, its per-sample results and its 'done' mark) is written in one
transaction, so a run killed halfway leaves a consistent file, and a rerun finds exactly the cells
that are missing. The writer works in WAL mode while it runs and, on close, folds the WAL back into the
one file.
"""

from __future__ import annotations

import json
import lzma
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .arrays import encode
from .queries import StoreReader
from .schema import SAMPLE_COLUMNS, STORE_TABLES, close_writer, connect_for_writing, now, table_columns


class StoreWriter(StoreReader):
    """Writes runs and cells; reads as a ``StoreReader`` does (the driver asks which cells are done)."""

    def __init__(self, path: str | Path, timeout: float = 60) -> None:
        """Open the store file ``path`` for writing (where the base opens read-only), creating it where
        missing; ``StoreError`` for a file that is not an rbleak store (left untouched) or one that cannot
        be written. ``timeout``: seconds to wait for another writer's lock."""
        self.path = Path(path)
        self.conn = connect_for_writing(self.path, timeout)
        self._has_arrays = True

    def close(self) -> None:
        """Close; the WAL is first folded back into the file, which is then a single file again."""
        close_writer(self.conn)

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

    def record_looks(self, run_id: str, looks: str) -> None:
        """The looks of a sequential run so far (JSON, read by report/sequential_looks.py) on run ``run_id``."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET looks = ? WHERE run_id = ?", (looks, run_id))

    def finish_run(self, run_id: str, status: str = "done") -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET finished_at = ?, status = ? WHERE run_id = ?", (now(), status, run_id))

    def interrupt_run(self, run_id: str) -> None:
        """Store run ``run_id`` as 'interrupted' if it still reads 'running' (a run that finished stays
        as it finished)."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET finished_at = ?, status = 'interrupted' WHERE run_id = ? AND status = 'running'",
                      (now(), run_id))

    def add_run_cells(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO run_cells VALUES (:run_id, :cell_key, :kind, :train_key, :model, :arch, "
                ":dataset, :seed, :attack)", [{"run_id": run_id, **r} for r in rows])

    def import_finished(self, source: StoreReader, keys: list[str]) -> int:
        """Copy from ``source`` the finished cells among ``keys`` that this store does not have finished:
        each with its metrics, samples, model record and the record (and planned row) of the run that
        computed it. All or nothing; returns the number of cells copied."""
        wanted = [k for k in dict.fromkeys(keys) if not self.is_done(k)]
        copied = 0
        have = {t: table_columns(self.conn, t) for t in STORE_TABLES}
        with self.transaction() as c:
            for key in wanted:
                rows = source.finished_cell_rows(key)
                if rows is None:
                    continue
                _insert(c, "cells", rows["cells"], have["cells"], replace=True)
                for table in ("metrics", "samples", "sample_arrays"):
                    c.execute(f"DELETE FROM {table} WHERE cell_key = ?", (key,))
                    _insert(c, table, rows[table], have[table])
                _insert(c, "models", rows["models"], have["models"], replace=True)
                _insert(c, "runs", rows["runs"], have["runs"], ignore=True)
                _insert(c, "run_cells", rows["run_cells"], have["run_cells"], ignore=True)
                copied += 1
        return copied

    # cells --------------------------------------------------------------------------------------
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
            c.execute("DELETE FROM sample_arrays WHERE cell_key = ?", (cell_key,))
            c.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                          [(cell_key, m, _float(v), *intervals.get(m, (None, None)))
                           for m, v in (metrics or {}).items()])
            if samples:
                c.execute("INSERT INTO sample_arrays VALUES (?, ?, ?, ?)",
                          (cell_key, *encode({col: samples[col] for col in SAMPLE_COLUMNS if col in samples})))
            c.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, 'done', ?, ?, ?, ?, ?, ?)",
                      (cell_key, kind, json.dumps(spec, sort_keys=True), run_id, device, started_at, now(),
                       seconds, pack_info(info or {})))

    def record_failure(self, cell_key: str, kind: str, spec: dict[str, Any], run_id: str, device: str,
                       error: str, traceback: str | None = None) -> None:
        """Mark a cell 'failed' with its one-line error (and traceback, in ``info``); a cell already done
        keeps its result. A later run retries it; readers take only status 'done' as results."""
        with self.transaction() as c:
            c.execute("INSERT INTO cells VALUES (?, ?, ?, 'failed', ?, ?, NULL, ?, NULL, ?) "
                      "ON CONFLICT(cell_key) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, "
                      "status = 'failed', run_id = excluded.run_id, device = excluded.device, started_at = NULL, "
                      "finished_at = excluded.finished_at, seconds = NULL, info = excluded.info "
                      "WHERE cells.status != 'done'",
                      (cell_key, kind, json.dumps(spec, sort_keys=True), run_id, device, now(),
                       pack_info({"error": error, "traceback": traceback})))


def pack_info(info: dict[str, Any]) -> bytes:
    """A cell's ``info`` as stored: JSON, xz-compressed (a spatial cell's grid is 60 kB of text, 5 kB packed)."""
    return lzma.compress(json.dumps(info, default=str).encode())


def _insert(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]], have: set[str],
            replace: bool = False, ignore: bool = False) -> None:
    """Insert rows read from another store, by column name: only the columns this store ``have``s (an
    older source may lack newer columns, and a newer one have more)."""
    if not rows:
        return
    cols = [k for k in rows[0] if k in have]
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE" if ignore else "INSERT"
    conn.executemany(f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [tuple(r[k] for k in cols) for r in rows])


def _text(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _float(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


