"""SQLite results store (stdlib), one file per run folder; the only part of the package that holds SQL.

- ``schema``: the tables, the marks that make a file ours (``check_store_file``), connecting.
- ``queries``: ``StoreReader``, read-only; what every command but a run uses, so rendering never
  changes a store or its folder.
- ``writer``: ``StoreWriter``, the run driver's; each cell's outcome in one transaction.
- ``arrays``: a cell's per-sample results as one typed, compressed blob; ``migrate``: old stores to it.
- ``migrations``: corrections of stored numbers from the stored per-sample arrays, once per store.
"""

from __future__ import annotations

from .queries import StoreReader
from .schema import APPLICATION_ID, SCHEMA, STORE_NAME, StoreError, check_store_file, now, store_file
from .writer import StoreWriter

__all__ = ["APPLICATION_ID", "SCHEMA", "STORE_NAME", "StoreError", "StoreReader", "StoreWriter",
           "check_store_file", "now", "store_file"]
