"""The results store's file: its tables, the marks that make a file ours, and the two ways to connect.

A writer (``connect_for_writing``) creates or upgrades the tables in WAL mode; a reader
(``connect_readonly``) opens an existing file read-only, without SQLite's side files where no writer is
active. Both first refuse, untouched, any file that is not an rbleak store (``check_store_file``).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

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
CREATE TABLE IF NOT EXISTS sample_arrays (
    cell_key TEXT PRIMARY KEY, n INTEGER, header TEXT, data BLOB);
"""
# Per-sample results are written as one compressed blob per cell (``sample_arrays``, codec in
# ``store/arrays.py``); ``samples`` (one row per image) is the format of stores written before
# 2026-12-07, still read, and converted by ``rbleak migrate``. Likewise ``cells.info`` is written
# xz-compressed (a BLOB) and read in either form.

STORE_NAME = "results.sqlite"
APPLICATION_ID = 0x72626C6B  # "rblk" in SQLite's header: marks a file as ours
OWN_TABLES = frozenset({"runs", "run_cells", "cells", "models", "metrics", "samples"})  # every store has these
STORE_TABLES = OWN_TABLES | {"sample_arrays"}  # what this version writes
SQLITE_MAGIC = b"SQLite format 3\x00"

# columns added after the first release: (table, column, type); added to older files on open
MIGRATIONS = [("models", "extra", "TEXT"),
              # perturbation spectra of minimum-norm attacks: share of |FFT(x_adv - x)|^2 above half-Nyquist,
              # and the radial spectral centroid in cycles per pixel
              ("samples", "hf_share", "REAL"), ("samples", "centroid", "REAL"),
              # the definitions and SHA-256 of the claims written for the run's config, when it started
              # (report/registration.py), and the looks of a sequential run (report/sequential.py)
              ("runs", "claims", "TEXT"), ("runs", "looks", "TEXT"),
              # the perturbation's L-inf norm (minimum-norm attacks, AutoAttack) and the AutoAttack member that
              # broke the image (NULL: none)
              ("samples", "linf", "REAL"), ("samples", "broken_by", "TEXT")]
SAMPLE_COLUMNS = ["label", "clean_pred", "adv_pred", "l2", "rho", "hf_share", "centroid", "linf", "broken_by"]


class StoreError(ValueError):
    """A file that cannot be used as a results store; the message names the file and why."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _header_size(header: bytes) -> int | None:
    """The database size an SQLite header records (page size x page count), or None where the header's count
    is not current (files written by SQLite before 3.7.0; the count is valid when offsets 24 and 92 agree)."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] != header[92:96] or not pages:
        return None
    return page_size * pages


_CHECKED: dict[tuple, None] = {}  # stores that passed, by file identity (path, inode, size, times)


def check_store_file(path: Path) -> None:
    """Raise ``StoreError`` unless ``path`` is an rbleak store (or does not exist yet); reads only the header
    and, through a read-only connection, the table names and every page's structure. A file that passed is
    not checked again in this process until it changes (a writer in another process changes its mtime)."""
    path = Path(path)
    try:
        st = path.stat()
        # as git's racy-clean rule: a file changed within the last 2 s may change again inside the same
        # timestamp tick, so only older files are remembered
        key = None if Path(f"{path}-wal").exists() or time.time() - st.st_mtime < 2 else \
            (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except (OSError, RuntimeError):  # not there, a name the system refuses, a symlink loop: the full check says
        key = None
    if key is not None and key in _CHECKED:
        return
    _check_store_file(path)
    if key is not None and path.is_file():
        if len(_CHECKED) >= 64:
            _CHECKED.pop(next(iter(_CHECKED)))
        _CHECKED[key] = None


def _check_store_file(path: Path) -> None:
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
    expected = _header_size(header)
    live = Path(f"{path}-wal").exists()  # a writer's checkpoint may write page 1 before it extends the file
    if expected is not None and not live and path.stat().st_size < expected:
        # SQLite reads the missing pages as absent rows: a cut copy would give partial results, silently
        raise StoreError(f"{path}: truncated ({path.stat().st_size:,} bytes where its header says {expected:,}); "
                         "copy the store again (an interrupted download or copy); left untouched")
    conn = _connect_readonly_unchecked(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not OWN_TABLES <= tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{path}: an SQLite database without rbleak's tables ({shown or 'no tables'}): another "
                             "program's file; left untouched")
        # every page's structure (about 70 ms for a 20 MB store): a damaged page would otherwise surface
        # mid-report as a database error, or as rows silently missing from a query
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    finally:
        conn.close()
    if problems != ["ok"]:
        raise StoreError(f"{path}: a damaged SQLite file ({'; '.join(problems)[:200]}); restore it from a copy "
                         "(e.g. git checkout, or the run folder's backup); left untouched")


def store_file(path: str | Path) -> Path:
    """The store file of a run folder, or ``path`` itself when it names a file."""
    path = Path(path)
    return path / STORE_NAME if path.is_dir() else path


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to the existing rbleak store ``path``: ``FileNotFoundError`` where there is
    none, ``StoreError`` for any other file, or one SQLite cannot read."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results store here (expected a run folder holding {STORE_NAME})")
    check_store_file(path)
    conn = _connect_readonly_unchecked(path)
    try:
        conn.execute("SELECT COUNT(*) FROM runs").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: cannot read the results store ({exc})") from None
    return conn


def _connect_readonly_unchecked(path: Path) -> sqlite3.Connection:
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


def connect_for_writing(path: Path, timeout: float = 60) -> sqlite3.Connection:
    """A connection in WAL mode to the store ``path``, created (with its folder) where missing and given
    any columns added since it was written; refuses, untouched, a file that is not an rbleak store.
    ``timeout``: seconds to wait for another connection's write lock."""
    check_store_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=timeout)
        conn.execute("PRAGMA journal_mode=WAL")
        if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.executescript(SCHEMA)
        _migrate(conn)
    except sqlite3.OperationalError as exc:
        raise StoreError(f"{path}: cannot write the results store ({exc}); check the file's and the "
                         "folder's permissions") from None
    return conn


def close_writer(conn: sqlite3.Connection) -> None:
    """Close a writer's connection, first folding the WAL back into the file, which is then a single file again."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError:
        pass  # another connection still holds the file: it stays in WAL mode until the last one closes
    conn.close()


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _migrate(conn: sqlite3.Connection) -> None:
    with conn:
        for table, column, kind in MIGRATIONS:
            if column not in table_columns(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
