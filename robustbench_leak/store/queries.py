"""Read-only queries of a results store: everything reports, leaderboards, claims, compare and the
Python API read.

``StoreReader(path)`` opens an existing store (a run folder or its ``results.sqlite``) read-only, so
reading never changes a store or its folder.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .arrays import bounded_decompress, column_array, decode
from .schema import SAMPLE_COLUMNS, StoreError, connect_readonly, store_file

INFO_LIMIT = 64 << 20  # a cell's info is JSON of at most about 80 KB in the published stores

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


# The runs of one config in a file (the one ``?`` names and every run with its config name): the same grid
# run seed by seed or resumed, whose slots read together.
FAMILY = """
    WITH family AS (SELECT run_id FROM runs WHERE run_id = ?1 OR config_name = (SELECT config_name FROM runs
                                                                                WHERE run_id = ?1))
"""


class StoreReader:
    """Queries of one store. Results are the cells stored as 'done'; failed cells only in ``failed_cells``."""

    def __init__(self, path: str | Path) -> None:
        """Open the store of a run folder, or the store file ``path``, read-only: ``FileNotFoundError``
        where there is none, ``StoreError`` for a file that is not an rbleak store."""
        self.path = store_file(path)
        self.conn: sqlite3.Connection = connect_readonly(self.path)
        self._has_arrays = self._has_table("sample_arrays")

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        """A query's rows; an ``info`` column comes back as JSON text whichever form the store holds."""
        frame = pd.read_sql_query(sql, self.conn, params=params)
        if "info" in frame.columns:
            frame["info"] = [info_text(v) for v in frame["info"]]
        return frame

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

    def model_weights(self) -> dict[str, set[str]]:
        """Every model name whose train cell a run of the store started -> the weights it stood for: the
        sha256 of the ``checkpoint:`` file it loaded, else (weights trained by a run) ``train:<train key>``."""
        found: dict[str, set[str]] = {}
        for model, key, spec in self.conn.execute("""
                SELECT DISTINCT rc.model, rc.train_key, c.spec FROM run_cells rc
                LEFT JOIN cells c ON c.cell_key = rc.train_key WHERE rc.kind = 'train'"""):
            if spec is None:
                continue  # planned, never started: no weights stand for it yet
            checkpoint = json.loads(spec).get("checkpoint") or {}
            found.setdefault(model, set()).add(checkpoint.get("sha256") or f"train:{key}")
        return found

    def attack_order(self, run_id: str) -> list[str]:
        """Attack labels in the order the run's config lists them; labels only earlier runs had come after."""
        return [r[0] for r in self.conn.execute("""
            SELECT attack FROM run_cells WHERE kind = 'eval' GROUP BY attack
            ORDER BY MIN(CASE WHEN run_id = ? THEN rowid END) IS NULL, MIN(CASE WHEN run_id = ? THEN rowid END),
                     MIN(rowid)""", (run_id, run_id))]

    def first_cell_start(self, run_id: str, attacks: list[str]) -> str | None:
        """When the earliest finished eval cell with one of these attack labels, of any run of run ``run_id``'s
        config in this file, started (None: none)."""
        marks = ", ".join(f"?{i + 2}" for i in range(len(attacks)))
        row = self.conn.execute(FAMILY + f"""
            SELECT MIN(c.started_at) FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'
            WHERE rc.run_id IN (SELECT run_id FROM family) AND rc.kind = 'eval' AND rc.attack IN ({marks})""",
                                (run_id, *attacks)).fetchone()
        return row[0] if row else None

    # cells --------------------------------------------------------------------------------------
    def is_done(self, cell_key: str) -> bool:
        row = self.conn.execute("SELECT status FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        return bool(row and row[0] == "done")

    def trained_on(self, train_key: str) -> str | None:
        """The device type ('cpu', 'cuda', ...) the stored model of ``train_key`` was trained on, if recorded."""
        row = self.conn.execute("SELECT trained_on FROM models WHERE train_key = ?", (train_key,)).fetchone()
        return row[0] if row and row[0] else None

    def cell_info(self, cell_key: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT info FROM cells WHERE cell_key = ?", (cell_key,)).fetchone()
        text = info_text(row[0]) if row else None
        return json.loads(text) if text else {}

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
                "sample_arrays": (self._rows("sample_arrays", "cell_key = ?", (cell_key,)) if self._has_arrays
                                  else []),
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
        """One cell's per-sample results: cell_key, idx and the sample columns, in image order."""
        return _samples_frame([(cell_key, self.sample_arrays(cell_key))])

    def sample_arrays(self, cell_key: str) -> dict[str, np.ndarray]:
        """One cell's per-sample columns as arrays (integers int64, reals float64 with NaN for missing);
        columns the cell did not record are absent; empty for a cell without per-sample results."""
        if self._has_arrays:
            row = self.conn.execute("SELECT n, header, data FROM sample_arrays WHERE cell_key = ?",
                                    (cell_key,)).fetchone()
            if row is not None:
                try:
                    return decode(*row)
                except ValueError as exc:
                    raise StoreError(f"{self.path}: cell {cell_key}: its per-sample arrays are damaged ({exc}); "
                                     "restore the store from a copy (e.g. git checkout)") from None
        names = [c for c in SAMPLE_COLUMNS if c in self._sample_table_columns()]  # an older file lacks newer ones
        rows = self.conn.execute(f"SELECT {', '.join(names)} FROM samples WHERE cell_key = ? ORDER BY idx",
                                 (cell_key,)).fetchall()
        if not rows:
            return {}
        columns = {name: column_array([r[i] for r in rows]) for i, name in enumerate(names)}
        return {name: arr for name, arr in columns.items() if arr is not None}

    def _sample_table_columns(self) -> set[str]:
        if getattr(self, "_sample_columns_cache", None) is None:
            self._sample_columns_cache = {r[1] for r in self.conn.execute("PRAGMA table_info(samples)")}
        return self._sample_columns_cache

    def _cells_samples(self, keys: Iterable[str]) -> list[tuple[str, dict[str, np.ndarray]]]:
        return [(key, self.sample_arrays(key)) for key in keys]

    def eval_cells(self, run_id: str) -> pd.DataFrame:
        """A run's finished eval cells with their spec, info (JSON text) and the run that computed them."""
        return self.frame("""
            SELECT rc.cell_key, rc.model, rc.dataset, rc.seed, rc.attack, rc.train_key, c.spec, c.info,
                   c.run_id AS computed_in, c.device, c.finished_at, c.seconds
            FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'
            WHERE rc.run_id = ? AND rc.kind = 'eval' ORDER BY rc.rowid""", (run_id,))

    def perturbation_samples(self, run_id: str) -> pd.DataFrame:
        """Per-sample rows of a run's eval cells that recorded a perturbation norm (minimum-norm attacks)."""
        keys = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT cell_key FROM run_cells WHERE run_id = ? AND kind = 'eval'", (run_id,))]
        return _perturbation_rows(self._cells_samples(sorted(keys)))

    def done_eval_cells(self, run_id: str, model: str, attack: str | None = None) -> pd.DataFrame:
        """A model's finished eval cells for run ``run_id``'s config (cell_key, dataset, seed, attack; spec and
        info as JSON text), optionally of one attack label only: the newest finished cell of every slot that
        any run of the same config in this file planned, so seeds added by later runs (``--seeds S``, one
        machine each) and the earlier seeds read together."""
        where = "" if attack is None else " AND rc.attack = ?"
        params = (run_id, model) if attack is None else (run_id, model, attack)
        return self.frame(FAMILY + f"""
            , ranked AS (
                SELECT rc.cell_key, rc.dataset, rc.seed, rc.attack, c.spec, c.info, MIN(rc.rowid) AS first_row,
                       ROW_NUMBER() OVER (PARTITION BY rc.dataset, rc.seed, rc.attack
                                          ORDER BY c.finished_at DESC, c.rowid DESC) AS newest
                FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'
                WHERE rc.run_id IN (SELECT run_id FROM family) AND rc.kind = 'eval' AND rc.model = ?{where}
                GROUP BY rc.cell_key, rc.dataset, rc.seed, rc.attack)
            SELECT cell_key, dataset, seed, attack, spec, info FROM ranked WHERE newest = 1
            ORDER BY first_row""", params)

    def eval_coverage(self, run_id: str) -> pd.DataFrame:
        """Per (model, seed) of run ``run_id``'s config (every run of it in this file): eval slots with a
        finished result ('done') and planned."""
        return self.frame(FAMILY + """
            , slots AS (SELECT DISTINCT rc.model, rc.seed, rc.dataset, rc.attack FROM run_cells rc
                        WHERE rc.run_id IN (SELECT run_id FROM family) AND rc.kind = 'eval'),
            done AS (SELECT DISTINCT rc.model, rc.seed, rc.dataset, rc.attack FROM run_cells rc
                     JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'
                     WHERE rc.run_id IN (SELECT run_id FROM family) AND rc.kind = 'eval')
            SELECT s.model, s.seed, COALESCE(SUM(d.model IS NOT NULL), 0) AS done, COUNT(*) AS planned
            FROM slots s LEFT JOIN done d ON d.model = s.model AND d.seed = s.seed AND d.dataset = s.dataset
                 AND d.attack = s.attack
            GROUP BY s.model, s.seed ORDER BY s.model, s.seed""", (run_id,))

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
        keys = [r[0] for r in self.conn.execute(NEWEST + "SELECT DISTINCT cell_key FROM chosen WHERE kind = 'eval'")]
        return _perturbation_rows(self._cells_samples(sorted(keys)))

    def newest_samples(self) -> pd.DataFrame:
        """Every per-sample row of the newest eval cells, with the cell's model, dataset, seed and attack;
        lean: text columns categorical, integer columns in the smallest type that holds them (reals stay
        float64, bit for bit as stored)."""
        cells = self.conn.execute(NEWEST + """
            SELECT ch.model, ch.dataset, ch.seed, ch.attack, ch.cell_key FROM chosen ch WHERE ch.kind = 'eval'
            ORDER BY ch.model, ch.dataset, ch.seed, ch.attack""").fetchall()
        parts = [(c, self.sample_arrays(c[4])) for c in cells]
        parts = [(c, a) for c, a in parts if a]
        n = [len(next(iter(a.values()))) for _, a in parts]
        frame: dict[str, Any] = {}
        for i, name in enumerate(("model", "dataset", "seed", "attack")):
            per_cell = [c[i] for c, _ in parts]
            frame[name] = (_small_int(np.repeat(np.array(per_cell, dtype=np.int64), n)) if name == "seed"
                           else _repeated_categorical(per_cell, n))
        frame["idx"] = _small_int(np.concatenate([np.arange(k) for k in n]) if n else np.zeros(0, np.int64))
        for name, values in _sample_columns([a for _, a in parts], n).items():
            frame[name] = (_small_int(values) if values.dtype.kind == "i"
                           else pd.Categorical(values) if values.dtype == object and any(v is not None for v in values)
                           else np.full(len(values), np.nan) if values.dtype == object else values)
        frame["cell_key"] = _repeated_categorical([c[4] for c, _ in parts], n)
        return pd.DataFrame(frame)

    # every metric ----------------------------------------------------------------------------------
    def metric_values(self) -> dict[tuple[str, str], float | None]:
        """Every stored metric value by (cell_key, metric), whatever the cell's status or run."""
        return {(k, m): v for k, m, v in self.conn.execute("SELECT cell_key, metric, value FROM metrics")}


def info_text(value: Any) -> str | None:
    """A cell's ``info`` as JSON text: stored as text by older versions, xz-compressed bytes since."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bounded_decompress(bytes(value), INFO_LIMIT).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"a cell's info in the store is damaged ({exc}); restore the store from a copy") from None
    return value


def _sample_columns(parts: list[dict[str, np.ndarray]], n: list[int]) -> dict[str, np.ndarray]:
    """The sample columns over several cells, typed as SQLite rows read by pandas were: int64 where every
    cell has the column, float64 (NaN for missing) where some lack it, None objects where all do."""
    out: dict[str, np.ndarray] = {}
    for name in SAMPLE_COLUMNS:
        have = [name in p for p in parts]
        if not any(have):
            out[name] = np.full(sum(n), None, dtype=object)
        elif any(p[name].dtype == object for p in parts if name in p):  # text
            out[name] = np.concatenate([p[name].astype(object) if name in p else np.full(k, None, dtype=object)
                                        for p, k in zip(parts, n)])
        elif all(have) and all(p[name].dtype.kind == "i" for p in parts):
            out[name] = np.concatenate([p[name] for p in parts]).astype(np.int64)
        else:
            out[name] = np.concatenate([p[name].astype(np.float64) if name in p else np.full(k, np.nan)
                                        for p, k in zip(parts, n)])
            if np.isnan(out[name]).all():  # SQLite holds no NaN: every value was NULL
                out[name] = np.full(sum(n), None, dtype=object)
    return out


def _samples_frame(cells: list[tuple[str, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """cell_key, idx and the sample columns of ``cells`` (in that order), one row per image."""
    cells = [(k, a) for k, a in cells if a]
    n = [len(next(iter(a.values()))) for _, a in cells]
    frame: dict[str, Any] = {
        "cell_key": np.repeat(np.array([k for k, _ in cells], dtype=object), n),
        "idx": np.concatenate([np.arange(k, dtype=np.int64) for k in n]) if n else np.zeros(0, np.int64)}
    frame.update(_sample_columns([a for _, a in cells], n))
    return pd.DataFrame(frame)


def _perturbation_rows(cells: list[tuple[str, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """The rows of ``cells`` with a perturbation norm (``l2`` recorded), typed as if only they were read."""
    kept = []
    for key, arrays in cells:
        if "l2" not in arrays:
            continue
        rows = ~np.isnan(arrays["l2"])
        if rows.all():
            kept.append((key, arrays, None))
        elif rows.any():
            kept.append((key, {c: a[rows] for c, a in arrays.items()}, np.flatnonzero(rows)))
    frame = _samples_frame([(k, a) for k, a, _ in kept])
    if any(idx is not None for _, _, idx in kept):
        frame["idx"] = np.concatenate([np.arange(len(a["l2"])) if idx is None else idx for _, a, idx in kept])
    return frame


def _repeated_categorical(per_cell: list[Any], n: list[int]) -> pd.Categorical:
    """A categorical column holding ``per_cell[i]`` on each of the ``n[i]`` rows of cell i."""
    categories = sorted(set(per_cell), key=str)
    code = {c: i for i, c in enumerate(categories)}
    codes = np.repeat(np.array([code[v] for v in per_cell], dtype=np.int32), n)
    return pd.Categorical.from_codes(codes, categories=categories)


def _small_int(values: np.ndarray) -> np.ndarray:
    if not len(values):
        return values.astype(np.int8)
    lo, hi = int(values.min()), int(values.max())
    for dtype in (np.int8, np.int16, np.int32):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values
