"""SQLite results store (stdlib), one file per run folder.

Each grid cell's outcome (its metrics, its per-sample results and its 'done' mark) is written in one
transaction, so a run killed halfway leaves a consistent file, and a rerun finds exactly the cells
that are missing.

Only a run writes a store (``Store.open_for_run``): it refuses a file that is not an rbleak store,
untouched, writes in WAL mode while it runs, and on close folds the WAL back into the one file. Every
other command reads (``Store.open_existing``): read-only, and without SQLite's side files where no writer
is active, so rendering never changes a store or its folder.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

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
    PRIMARY KEY (cell_key, idx)) WITHOUT ROWID;
"""

STORE_NAME = "results.sqlite"
APPLICATION_ID = 0x72626C6B  # "rblk" in SQLite's header: marks a file as ours
OWN_TABLES = frozenset({"runs", "run_cells", "cells", "models", "metrics", "samples"})
SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(ValueError):
    """A file that cannot be used as a results store; the message names the file and why."""

# columns added after the first release: (table, column, type); added to older files on open
MIGRATIONS = [("models", "extra", "TEXT"),
              # perturbation spectra of minimum-norm attacks: share of |FFT(x_adv - x)|^2 above half-Nyquist,
              # and the radial spectral centroid in cycles per pixel
              ("samples", "hf_share", "REAL"), ("samples", "centroid", "REAL")]
SAMPLE_COLUMNS = ["label", "clean_pred", "adv_pred", "l2", "rho", "hf_share", "centroid"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_store_file(path: Path) -> None:
    """Raise ``StoreError`` unless ``path`` is an rbleak store (or does not exist yet); reads only the header
    and, through a read-only connection, the table names."""
    if not path.exists():
        return
    if not path.is_file():
        raise StoreError(f"{path}: not a file (a results store is a single SQLite file)")
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not header:
        raise StoreError(f"{path}: an empty file, not an rbleak results store; move it away or choose another folder")
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise StoreError(f"{path}: not an SQLite database, so not an rbleak results store; move it away or choose "
                         "another folder")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(f"{path}: another program's SQLite database (application id {app_id:#x}); left untouched")
    conn = _connect_readonly(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a readable SQLite database ({exc}); left untouched") from None
    finally:
        conn.close()
    if not OWN_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{path}: an SQLite database without rbleak's tables ({shown or 'no tables'}): another "
                         "program's file; left untouched")


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection. A WAL-mode file with no active writer (no ``-wal`` beside it) is opened as
    immutable, so that SQLite creates no ``-shm``/``-wal`` side files in the folder."""
    wal_mode = False
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
        wal_mode = len(header) == 20 and header[18] == 2
    except OSError:
        pass
    immutable = wal_mode and not Path(f"{path}-wal").exists()
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=60)


class Store:
    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        """Prefer ``open_for_run`` (the one writer) and ``open_existing`` (readers)."""
        self.path = Path(path)
        self.readonly = readonly
        check_store_file(self.path)
        if readonly:
            self.conn = _connect_readonly(self.path)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60)
            self.conn.execute("PRAGMA journal_mode=WAL")
            if self.conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.executescript(SCHEMA)
            self._migrate()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: cannot write the results store ({exc}); check the file's and the "
                             "folder's permissions") from None

    @classmethod
    def open_for_run(cls, path: str | Path) -> "Store":
        return cls(path)

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
        store = cls(path, readonly=True)
        try:
            store.conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        except sqlite3.DatabaseError as exc:
            store.conn.close()
            raise StoreError(f"{path}: cannot read the results store ({exc})") from None
        return store

    def close(self) -> None:
        """Close; a writer first folds the WAL back into the file, which is then a single file again."""
        if not self.readonly:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError:
                pass  # another connection still holds the file: it stays in WAL mode until the last one closes
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

    def import_finished(self, source: "Store", keys: list[str]) -> int:
        """Copy from ``source`` the finished cells among ``keys`` that this store does not have finished:
        each with its metrics, samples, model record and the record (and planned row) of the run that
        computed it. All or nothing; returns the number of cells copied."""
        wanted = [k for k in dict.fromkeys(keys) if not self.is_done(k)]
        copied = 0
        have = {t: {r[1] for r in self.conn.execute(f"PRAGMA table_info({t})")} for t in OWN_TABLES}
        with self.transaction() as c:
            for key in wanted:
                row = _rows(source.conn, "cells", "cell_key = ? AND status = 'done'", (key,))
                if not row:
                    continue
                cell = row[0]
                _insert(c, "cells", row, have["cells"], replace=True)
                for table in ("metrics", "samples"):
                    c.execute(f"DELETE FROM {table} WHERE cell_key = ?", (key,))
                    _insert(c, table, _rows(source.conn, table, "cell_key = ?", (key,)), have[table])
                if cell["kind"] == "train":
                    _insert(c, "models", _rows(source.conn, "models", "train_key = ?", (key,)), have["models"],
                            replace=True)
                _insert(c, "runs", _rows(source.conn, "runs", "run_id = ?", (cell["run_id"],)), have["runs"],
                        ignore=True)
                _insert(c, "run_cells", _rows(source.conn, "run_cells", "run_id = ? AND cell_key = ?",
                                              (cell["run_id"], key)), have["run_cells"], ignore=True)
                copied += 1
        return copied

    def planned_cells(self) -> pd.DataFrame:
        """Every cell any run in this file planned: kind, cell_key, model, dataset, seed, attack and the
        name of the config that planned it."""
        return self.frame("""
            SELECT DISTINCT rc.kind, rc.cell_key, rc.model, rc.dataset, rc.seed, rc.attack, r.config_name,
                            r.config_path
            FROM run_cells rc LEFT JOIN runs r ON r.run_id = rc.run_id ORDER BY rc.rowid""")

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

    # the newest finished result of every cell, whichever run computed it --------------------------
    # A slot is what a table row shows: (kind, model, dataset, seed, attack). Runs into one folder may
    # compute a slot several times (a changed preset, a rerun); the newest finished cell wins, so a later
    # run that failed or planned other cells never hides what earlier runs stored.
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

    def newest_results(self) -> pd.DataFrame:
        """Long table like ``results``, over the newest finished eval cell of every slot."""
        return self.frame(self.NEWEST + """
            SELECT ch.model, ch.arch, ch.dataset, ch.seed, ch.attack, m.metric, m.value, m.lo, m.hi,
                   ch.cell_key, ch.train_key, c.device, c.finished_at
            FROM chosen ch JOIN cells c ON c.cell_key = ch.cell_key JOIN metrics m ON m.cell_key = ch.cell_key
            WHERE ch.kind = 'eval' ORDER BY c.rowid, m.rowid""")

    def newest_model_info(self) -> pd.DataFrame:
        """Trained-model rows behind the newest eval cells (and newest train cells), one per (model, dataset,
        seed, train_key)."""
        return self.frame(self.NEWEST + """
            SELECT DISTINCT ch.model, ch.dataset, ch.seed, md.* FROM chosen ch
            JOIN models md ON md.train_key = ch.train_key ORDER BY ch.model, ch.dataset, ch.seed""")

    def newest_eval_cells(self) -> pd.DataFrame:
        """The newest finished eval cell of every slot, with spec, info (JSON text) and the run that computed it."""
        return self.frame(self.NEWEST + """
            SELECT ch.cell_key, ch.model, ch.dataset, ch.seed, ch.attack, ch.train_key, c.spec, c.info,
                   c.run_id AS computed_in, c.device, c.finished_at, c.seconds
            FROM chosen ch JOIN cells c ON c.cell_key = ch.cell_key WHERE ch.kind = 'eval' ORDER BY c.rowid""")

    def newest_perturbation_samples(self) -> pd.DataFrame:
        """Per-sample rows with a perturbation norm (minimum-norm attacks) of the newest eval cells."""
        return self.frame(self.NEWEST + """
            SELECT s.* FROM samples s JOIN chosen ch ON ch.cell_key = s.cell_key
            WHERE ch.kind = 'eval' AND s.l2 IS NOT NULL ORDER BY s.cell_key, s.idx""")

    def newest_samples(self) -> pd.DataFrame:
        """Every per-sample row of the newest eval cells, with the cell's model, dataset, seed and attack."""
        return self.frame(self.NEWEST + f"""
            SELECT ch.model, ch.dataset, ch.seed, ch.attack, s.idx, {', '.join('s.' + c for c in SAMPLE_COLUMNS)},
                   s.cell_key
            FROM samples s JOIN chosen ch ON ch.cell_key = s.cell_key
            WHERE ch.kind = 'eval' ORDER BY ch.model, ch.dataset, ch.seed, ch.attack, s.idx""")

    def attack_order(self, run_id: str) -> list[str]:
        """Attack labels in the order the run's config lists them; labels only earlier runs had come after."""
        return [r[0] for r in self.conn.execute("""
            SELECT attack FROM run_cells WHERE kind = 'eval' GROUP BY attack
            ORDER BY MIN(CASE WHEN run_id = ? THEN rowid END) IS NULL, MIN(CASE WHEN run_id = ? THEN rowid END),
                     MIN(rowid)""", (run_id, run_id))]

    def missing_slots(self, run_id: str) -> int:
        """Eval slots a run planned that have no finished result from any run."""
        return int(self.conn.execute(self.NEWEST + """
            SELECT COUNT(*) FROM run_cells rc WHERE rc.run_id = ? AND rc.kind = 'eval' AND NOT EXISTS (
                SELECT 1 FROM chosen ch WHERE ch.kind = 'eval' AND ch.model = rc.model AND ch.dataset = rc.dataset
                AND ch.seed = rc.seed AND ch.attack = rc.attack)""", (run_id,)).fetchone()[0])

    def planned_evals(self, run_id: str) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM run_cells WHERE run_id = ? AND kind = 'eval'",
                                     (run_id,)).fetchone()[0])

    def cell_info(self, cell_key: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT info FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    # failures (readers take only status 'done' as results) -------------------------------------
    def record_failure(self, cell_key: str, kind: str, spec: dict[str, Any], run_id: str, device: str,
                       error: str, traceback: str | None = None) -> None:
        """Mark a cell 'failed' with its one-line error (and traceback, in ``info``); a cell already done
        keeps its result. A later run retries it."""
        with self.transaction() as c:
            c.execute("INSERT INTO cells VALUES (?, ?, ?, 'failed', ?, ?, NULL, ?, NULL, ?) "
                      "ON CONFLICT(cell_key) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, "
                      "status = 'failed', run_id = excluded.run_id, device = excluded.device, started_at = NULL, "
                      "finished_at = excluded.finished_at, seconds = NULL, info = excluded.info "
                      "WHERE cells.status != 'done'",
                      (cell_key, kind, json.dumps(spec, sort_keys=True), run_id, device, now(),
                       json.dumps({"error": error, "traceback": traceback})))

    def failed_cells(self, run_id: str) -> pd.DataFrame:
        """A run's planned cells that are stored as failed, with their error (``info`` JSON text)."""
        return self.frame("""
            SELECT rc.cell_key, rc.kind, rc.model, rc.dataset, rc.seed, rc.attack, c.run_id AS failed_in, c.info
            FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'failed'
            WHERE rc.run_id = ? ORDER BY rc.rowid""", (run_id,))

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


def _rows(conn: sqlite3.Connection, table: str, where: str, params: tuple) -> list[dict[str, Any]]:
    cur = conn.execute(f"SELECT * FROM {table} WHERE {where}", params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


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


def _item(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and np.isnan(value) else value
