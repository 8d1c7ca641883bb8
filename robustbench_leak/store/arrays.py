"""A cell's per-sample arrays as one compressed, typed blob (no SQL here: the codec the store uses).

One row per image cost the 5-seed Fashion-MNIST store 1.6 million SQLite rows (73 MB). A cell's arrays
are instead packed column by column: integer columns in the smallest integer type that holds them,
real columns as float64 (bit for bit what SQLite's REAL held; NaN stands for NULL, as SQLite cannot
store a NaN), and the whole blob compressed with LZMA. Decoding gives back exactly the numbers written.
"""

from __future__ import annotations

import json
import lzma
from typing import Any, Mapping

import numpy as np

CODEC = "npcols-xz-1"  # columns of little-endian numpy arrays, concatenated, xz-compressed; text as codes
_INT_TYPES = ("<u1", "<i1", "<i2", "<i4", "<i8")


def _int_type(values: np.ndarray) -> str:
    if values.size == 0:
        return "<u1"
    lo, hi = int(values.min()), int(values.max())
    for dtype in _INT_TYPES:
        info = np.iinfo(np.dtype(dtype))
        if info.min <= lo and hi <= info.max:
            return dtype
    raise ValueError(f"integer values {lo}..{hi} do not fit in 64 bits")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def column_array(values: Any) -> np.ndarray | None:
    """One column as a typed array: integers (no missing value) stay integers, text stays text (an object
    array, None for a missing value), anything else becomes float64 with NaN for a missing value; None when
    every value is missing (the column is not stored)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "US" or (arr.dtype == object and any(isinstance(v, (str, bytes)) for v in arr)):
        text = np.array([None if _missing(v) else (v.decode() if isinstance(v, bytes) else str(v)) for v in arr],
                        dtype=object)
        return None if all(v is None for v in text) else text
    if arr.dtype == object:
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in arr], dtype=bool)
        if missing.all():
            return None
        if not missing.any() and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr):
            return arr.astype(np.int64)
        out = np.full(arr.shape, np.nan)
        out[~missing] = np.array([float(v) for v in arr[~missing]])
        return out
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    arr = arr.astype(np.float64)
    return None if arr.size and np.isnan(arr).all() else arr


def encode(columns: Mapping[str, Any]) -> tuple[int, str, bytes]:
    """``(n, header, blob)`` of named equal-length columns; all-missing columns are left out."""
    n = len(next(iter(columns.values()))) if columns else 0
    header, parts = [], []
    for name, values in columns.items():
        arr = column_array(values)
        if arr is None:
            continue
        if len(arr) != n:
            raise ValueError(f"per-sample column {name!r} has {len(arr)} values, expected {n}")
        if arr.dtype == object:  # text: its distinct values in the header, a code per image (-1: missing)
            categories = sorted({v for v in arr if v is not None})
            index = {c: i for i, c in enumerate(categories)}
            codes = np.array([-1 if v is None else index[v] for v in arr], dtype=np.int64)
            dtype = _int_type(codes)
            header.append([name, dtype, categories])
            parts.append(np.ascontiguousarray(codes.astype(dtype)).tobytes())
            continue
        dtype = _int_type(arr) if arr.dtype.kind == "i" else "<f8"
        header.append([name, dtype])
        parts.append(np.ascontiguousarray(arr.astype(dtype)).tobytes())
    blob = lzma.compress(b"".join(parts), preset=9 | lzma.PRESET_EXTREME)
    return n, json.dumps({"codec": CODEC, "columns": header}), blob


def bounded_decompress(blob: bytes, limit: int) -> bytes:
    """``lzma.decompress`` that stops past ``limit`` bytes (a damaged or crafted blob cannot fill memory);
    ``ValueError`` for data that is not one complete xz stream of at most ``limit`` bytes."""
    try:
        d = lzma.LZMADecompressor()
        raw = d.decompress(bytes(blob), max_length=limit + 1)
    except lzma.LZMAError as exc:
        raise ValueError(f"not readable xz data ({exc})") from None
    if len(raw) > limit:
        raise ValueError(f"decompresses to more than the {limit:,} bytes expected")
    if not d.eof:
        raise ValueError("xz data cut short")
    return raw


def decode(n: int, header: str, blob: bytes) -> dict[str, np.ndarray]:
    """The columns ``encode`` packed: integer columns as int64, real ones as float64 (NaN = missing), text
    as object arrays (None = missing). ``ValueError`` (one line) for a blob or header that is damaged."""
    try:
        meta = json.loads(header)
        if meta.get("codec") != CODEC:
            raise ValueError(f"unknown per-sample codec {meta.get('codec')!r} (this version reads {CODEC})")
        columns = [(str(name), np.dtype(dtype), cats[0] if cats else None) for name, dtype, *cats in meta["columns"]]
        expected = sum(dtype.itemsize for _, dtype, _ in columns) * int(n)
    except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"per-sample header is damaged ({type(exc).__name__})") from None
    if int(n) < 0:
        raise ValueError(f"per-sample header counts {n} images")
    raw = bounded_decompress(blob, expected)
    if len(raw) != expected:
        raise ValueError(f"per-sample blob holds {len(raw)} bytes, its header describes {expected}")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, dtype, categories in columns:
        arr = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)
        if categories is not None:
            lookup = np.array([*categories, None], dtype=object)  # code -1 picks the trailing None
            codes = arr.astype(np.int64)
            if len(codes) and (codes.min() < -1 or codes.max() >= len(categories)):
                raise ValueError(f"per-sample column {name!r} has codes outside its {len(categories)} values")
            out[name] = lookup[codes]
        else:
            out[name] = arr.astype(np.int64) if dtype.kind in "iu" else arr.astype(np.float64)
        offset += dtype.itemsize * n
    return out
