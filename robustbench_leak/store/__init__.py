"""SQLite results store (stdlib), one file per run folder; the only part of the package that holds SQL.

- ``schema``: the tables, the marks that make a file ours (``check_store_file``), connecting.
- ``queries``: ``StoreReader``, read-only; what every command but a run uses, so rendering never
  changes a store or its folder.
- ``writer``: ``StoreWriter``, the run driver's; each cell's outcome in one transaction.
- ``migrations``: corrections of stored numbers from the stored per-sample arrays, once per store.
"""

from __future__ import annotations

from pathlib import Path

from .queries import StoreReader
from .schema import APPLICATION_ID, SCHEMA, STORE_NAME, StoreError, check_store_file, now
from .writer import StoreWriter


class Store(StoreWriter):
    """The one store class of earlier versions, kept so code written against it runs: ``Store(path)`` opens
    for writing (``StoreWriter``), ``Store.open_existing(path)`` for reading (``StoreReader``)."""

    @classmethod
    def open_existing(cls, path: str | Path) -> StoreReader:
        return StoreReader(path)


__all__ = ["APPLICATION_ID", "SCHEMA", "STORE_NAME", "Store", "StoreError", "StoreReader", "StoreWriter",
           "check_store_file", "now"]
