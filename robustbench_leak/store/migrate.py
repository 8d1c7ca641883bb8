"""``rbleak migrate``: convert a store written before 2026-12-07 to the compact format, one way.

Per-image rows (``samples``) become one compressed blob per cell (``sample_arrays``) and every cell's
``info`` text is xz-compressed. The conversion works on a copy beside the store, checks that every cell's
arrays decode to exactly the stored values (bit for bit; SQLite's NULL is NaN), compacts the copy and
only then replaces the store, so an interrupted or failed migration leaves the store as it was.
"""

from __future__ import annotations

import lzma
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import column_array, decode, encode
from .queries import info_text
from .schema import SAMPLE_COLUMNS, StoreError, check_store_file, close_writer, connect_for_writing, store_file


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and list(a) == list(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        a, b = a.astype(np.float64), b.astype(np.float64)
        return a.shape == b.shape and a.tobytes() == b.tobytes()
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _convert(conn: sqlite3.Connection) -> dict[str, int]:
    cells = [r[0] for r in conn.execute("SELECT DISTINCT cell_key FROM samples")]
    for key in cells:
        rows = conn.execute(f"SELECT idx, {', '.join(SAMPLE_COLUMNS)} FROM samples WHERE cell_key = ? ORDER BY idx",
                            (key,)).fetchall()
        if [r[0] for r in rows] != list(range(len(rows))):
            raise StoreError(f"cell {key}: per-sample rows are not numbered 0..{len(rows) - 1}; not converted")
        columns = {name: column_array([r[i + 1] for r in rows]) for i, name in enumerate(SAMPLE_COLUMNS)}
        n, header, blob = encode({k: v for k, v in columns.items() if v is not None})
        back = decode(n, header, blob)
        for name, values in columns.items():
            if not _same(values, back.get(name)):
                raise StoreError(f"cell {key}: column {name} does not survive the conversion; not converted")
        conn.execute("INSERT OR REPLACE INTO sample_arrays VALUES (?, ?, ?, ?)", (key, n, header, blob))
        conn.execute("DELETE FROM samples WHERE cell_key = ?", (key,))
    packed = 0
    for key, info in conn.execute("SELECT cell_key, info FROM cells").fetchall():
        if isinstance(info, str):
            conn.execute("UPDATE cells SET info = ? WHERE cell_key = ?", (pack_info_text(info), key))
            packed += 1
    return {"cells_converted": len(cells), "infos_packed": packed}


def pack_info_text(text: str) -> bytes:
    """Stored info text, compressed as the writer's ``pack_info`` does, kept character for character."""
    packed = lzma.compress(text.encode())
    if info_text(packed) != text:
        raise StoreError("a cell's info does not survive compression")
    return packed


def migrate_store(path: str | Path) -> dict[str, Any]:
    """Convert the store of a run folder (or the file ``path``) in place; returns what was done
    (cells converted, infos packed, bytes before and after). A store already compact is left as it is."""
    path = store_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results store here")
    check_store_file(path)
    if Path(f"{path}-wal").exists():
        raise StoreError(f"{path}: a run is writing this store (its -wal file exists); migrate after it ends")
    before = path.stat().st_size
    work = path.with_name(f".{path.name}.migrating-{os.getpid()}")
    compact = path.with_name(f".{path.name}.compact-{os.getpid()}")
    try:
        shutil.copy2(path, work)
        conn = connect_for_writing(work)
        try:
            with conn:
                done = _convert(conn)
            if not done["cells_converted"] and not done["infos_packed"]:
                return {"path": str(path), **done, "bytes_before": before, "bytes_after": before}
            conn.execute(f"VACUUM INTO '{compact}'")
        finally:
            close_writer(conn)
        compact_conn = sqlite3.connect(compact)
        compact_conn.execute("PRAGMA journal_mode=DELETE")
        compact_conn.close()
        os.replace(compact, path)
    finally:
        for leftover in (work, compact, Path(f"{work}-wal"), Path(f"{work}-shm")):
            leftover.unlink(missing_ok=True)
    return {"path": str(path), **done, "bytes_before": before, "bytes_after": path.stat().st_size}
