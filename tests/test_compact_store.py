"""The compact store: per-sample arrays as one typed, compressed blob per cell and compressed infos, read
exactly as the one-row-per-image format was (which stays readable), and ``rbleak migrate`` converting a
store of the old format in place, bit for bit, or not at all."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustbench_leak.cli import main
from robustbench_leak.store import StoreReader, StoreWriter
from robustbench_leak.store.arrays import decode, encode
from robustbench_leak.store.migrate import migrate_store
from robustbench_leak.store.schema import SAMPLE_COLUMNS


def _floats(rng: np.random.Generator, n: int) -> np.ndarray:
    special = np.array([0.0, -0.0, 5e-324, np.finfo(np.float64).max, 1 / 3, np.nan])
    return np.concatenate([special, rng.standard_normal(n - len(special)) * 10.0 ** rng.integers(-300, 300, n - 6)])


def test_codec_round_trips_bit_for_bit_with_the_smallest_integer_types():
    rng = np.random.default_rng(0)
    n = 500
    columns = {"label": rng.integers(0, 10, n), "big": rng.integers(-2**40, 2**40, n),
               "neg": rng.integers(-100, 100, n), "l2": _floats(rng, n), "none": [None] * n,
               "partial": [None if i % 3 else float(i) for i in range(n)],
               "broken_by": np.array([None if i % 4 == 0 else ("square" if i % 3 else "apgd-ce") for i in range(n)],
                                     dtype=object)}
    count, header, blob = encode(columns)
    assert count == n
    types = {entry[0]: entry[1] for entry in json.loads(header)["columns"]}
    assert {k: v for k, v in types.items() if k != "broken_by"} == {"label": "<u1", "big": "<i8", "neg": "<i1",
                                                                      "l2": "<f8", "partial": "<f8"}  # "none" left out
    back = decode(count, header, blob)
    assert back["label"].dtype == np.int64 and np.array_equal(back["label"], columns["label"])
    assert np.array_equal(back["big"], columns["big"]) and np.array_equal(back["neg"], columns["neg"])
    assert back["l2"].tobytes() == columns["l2"].astype(np.float64).tobytes()  # -0.0, subnormals, NaN: same bits
    assert np.isnan(back["partial"][1]) and back["partial"][3] == 3.0
    assert list(back["broken_by"]) == list(columns["broken_by"])  # text: codes and the values in the header
    with pytest.raises(ValueError, match="codec"):
        decode(count, json.dumps({"codec": "other", "columns": []}), blob)


def _cell(rng: np.random.Generator, n: int, perturbation: bool) -> dict[str, np.ndarray]:
    y = rng.integers(0, 10, n)
    cell = {"label": y, "clean_pred": np.where(rng.random(n) < 0.9, y, (y + 1) % 10),
            "adv_pred": rng.integers(0, 10, n)}
    if perturbation:
        l2 = rng.random(n) * 3
        l2[::7] = np.nan  # images the attack did not process
        cell.update(l2=l2, rho=l2 / 9.0, hf_share=rng.random(n))
    return cell


def _write(path: Path, cells: dict[str, dict[str, np.ndarray]]) -> None:
    store = StoreWriter(path)
    store.start_run("r1", config_name="t")
    rows = [{"cell_key": k, "kind": "eval", "train_key": "t0", "model": f"m{i % 2}", "arch": "a", "dataset": "d",
             "seed": i // 2, "attack": "deepfool" if "l2" in c else "clean"} for i, (k, c) in enumerate(cells.items())]
    store.add_run_cells("r1", rows)
    for k, c in cells.items():
        store.record_cell(k, "eval", {"attack": {"kind": "deepfool" if "l2" in c else "clean", "params": {}}}, "r1", "cpu", "2026-12-07", 1.0, {"accuracy": 0.5}, c,
                          info={"grid": list(range(50)), "note": "é"})
    store.finish_run("r1")
    store.close()


def _to_rows(path: Path) -> None:
    """Rewrite a compact store in the format of stores written before 2026-12-07: one row per image, info text."""
    con = sqlite3.connect(path)
    with con:
        for key, n, header, blob in con.execute("SELECT cell_key, n, header, data FROM sample_arrays").fetchall():
            arrays = decode(n, header, blob)
            rows = [(key, i, *[(None if np.isnan(arrays[c][i]) else float(arrays[c][i])) if c in arrays
                               and arrays[c].dtype.kind == "f" else (int(arrays[c][i]) if c in arrays else None)
                               for c in SAMPLE_COLUMNS]) for i in range(n)]
            con.executemany(f"INSERT INTO samples (cell_key, idx, {', '.join(SAMPLE_COLUMNS)}) VALUES "
                            f"({', '.join('?' * (len(SAMPLE_COLUMNS) + 2))})", rows)
        con.execute("DROP TABLE sample_arrays")
        for key, info in con.execute("SELECT cell_key, info FROM cells").fetchall():
            import lzma

            con.execute("UPDATE cells SET info = ? WHERE cell_key = ?", (lzma.decompress(info).decode(), key))
    con.close()


def _reads(path: Path) -> dict[str, pd.DataFrame]:
    with StoreReader(path) as s:
        return {"samples": s.samples("c0"), "perturbation": s.newest_perturbation_samples(),
                "run_perturbation": s.perturbation_samples("r1"), "cells": s.newest_eval_cells(),
                "info": pd.DataFrame([s.cell_info("c2")])}


def _sql_reference(path: Path) -> dict[str, pd.DataFrame]:
    """What the one-row-per-image reader returned: pandas over the SQL the store used to run."""
    con = sqlite3.connect(path)
    try:
        return {"samples": pd.read_sql_query("SELECT * FROM samples WHERE cell_key = 'c0' ORDER BY idx", con),
                "perturbation": pd.read_sql_query("SELECT * FROM samples WHERE l2 IS NOT NULL ORDER BY cell_key, idx",
                                                  con)}
    finally:
        con.close()


def test_old_and_compact_formats_read_alike_and_migrate_converts_bit_for_bit(tmp_path, capsys):
    rng = np.random.default_rng(1)
    cells = {f"c{i}": _cell(rng, 300, perturbation=i >= 2) for i in range(4)}
    compact = tmp_path / "compact" / "results.sqlite"
    _write(compact, cells)
    old = tmp_path / "old" / "results.sqlite"
    old.parent.mkdir()
    shutil.copy(compact, old)
    _to_rows(old)
    reference = _sql_reference(old)
    read_old, read_compact = _reads(old), _reads(compact)
    for name in read_old:
        pd.testing.assert_frame_equal(read_old[name], read_compact[name], check_exact=True)
    pd.testing.assert_frame_equal(read_old["samples"], reference["samples"], check_exact=True)
    pd.testing.assert_frame_equal(read_old["perturbation"], reference["perturbation"], check_exact=True)
    assert read_old["info"].iloc[0]["note"] == "é"

    assert main(["migrate", str(old.parent)]) == 0
    assert "4 cells' per-sample rows packed, 4 infos compressed" in capsys.readouterr().out
    with sqlite3.connect(old) as con:
        assert con.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
    migrated = _reads(old)
    for name in read_old:
        pd.testing.assert_frame_equal(read_old[name], migrated[name], check_exact=True)
    assert sorted(p.name for p in old.parent.iterdir()) == [".rbleak.lock", "results.sqlite"]  # no leftovers


def test_migrate_leaves_the_store_untouched_when_a_cell_does_not_convert(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    path = tmp_path / "results.sqlite"
    _write(path, {"c0": _cell(rng, 50, True), "c1": _cell(rng, 50, False)})
    _to_rows(path)
    before = path.read_bytes()
    import robustbench_leak.store.migrate as migrate

    monkeypatch.setattr(migrate, "decode", lambda *a: {})  # a codec that loses the columns
    with pytest.raises(ValueError, match="does not survive the conversion"):
        migrate_store(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_migrate_refuses_a_store_a_run_is_writing_and_a_missing_folder(tmp_path, capsys):
    path = tmp_path / "run" / "results.sqlite"
    _write(path, {"c0": _cell(np.random.default_rng(3), 20, False)})
    Path(f"{path}-wal").write_bytes(b"")
    assert main(["migrate", str(path.parent)]) == 2
    assert "a run is writing this store" in capsys.readouterr().err
    assert main(["migrate", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results store here" in err and not (tmp_path / "nowhere").exists()


def test_python_api_samples_are_lean(tmp_path):
    import robustbench_leak as rb

    rng = np.random.default_rng(4)
    path = tmp_path / "run" / "results.sqlite"
    _write(path, {f"c{i}": _cell(rng, 200, perturbation=i % 2 == 1) for i in range(4)})
    samples = rb.load_results(path.parent).samples
    assert list(samples.columns) == list(rb.COLUMNS["samples"])
    for col in ("run", "model", "dataset", "attack", "cell_key"):
        assert isinstance(samples[col].dtype, pd.CategoricalDtype), col
    assert samples["label"].dtype == np.int8 and samples["idx"].dtype == np.int16
    assert samples["l2"].dtype == np.float64 and samples["centroid"].dtype == np.float64
    with StoreReader(path) as s:
        first = s.sample_arrays("c1")
    got = samples[samples.cell_key == "c1"]
    assert got["l2"].to_numpy().tobytes() == first["l2"].tobytes()
    assert (got["adv_pred"].to_numpy() == first["adv_pred"]).all()
