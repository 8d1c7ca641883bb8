"""A damaged results store (a bad page, a corrupt or crafted per-sample blob or info) fails every command in
one line that names the file (and the cell), leaves the file as it was, and never decompresses without bound."""

from __future__ import annotations

import hashlib
import os
import lzma
import shutil
import sqlite3
from pathlib import Path

import pytest
from test_hostile_v3 import _one_line_error

import robustbench_leak as rb
from robustbench_leak.cli import main
from robustbench_leak.store.arrays import decode, encode
from robustbench_leak.store.schema import StoreError, check_store_file


CONFIG = """
name: a
device: cpu
seeds: [0]
datasets: [{name: synthetic, n_train: 64, n_test: 32}]
training: {lr: 0.05, epochs: 1, batch_size: 32}
models:
  - {name: m1, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 3, window: none}}
  - {name: m2, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 5, window: none}}
attacks:
  - clean
  - {preset: deepfool, n_samples: 8, params: {max_iter: 5, batch_size: 8}}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("damaged")
    (tmp / "a.yaml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RBLEAK_CACHE_DIR", str(tmp / "cache"))
        assert main(["run", str(tmp / "a.yaml"), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _commands(folder: Path, tmp_path: Path) -> list[list[str]]:
    return [["leaderboard", str(folder), "--out", str(tmp_path / "lb")],
            ["compare", str(folder), "m1", "m2"],
            ["claims", str(folder), "--claims", "paper"]]


def test_a_damaged_page_fails_every_reader_in_one_line(finished_run, tmp_path, capsys):
    folder = _copy(finished_run, tmp_path / "bad")
    store = folder / "results.sqlite"
    data = bytearray(store.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 4 * page
    data[3 * page:3 * page + 200] = b"\x5a" * 200  # a page past the schema: table names still read
    store.write_bytes(bytes(data))
    before = _digest(store)
    with pytest.raises(StoreError, match="damaged SQLite file"):
        check_store_file(store)
    for argv in _commands(folder, tmp_path) + [["run", str(tmp_path / "a.yaml"), "--out", str(folder)]]:
        if argv[0] == "run":
            (tmp_path / "a.yaml").write_text(CONFIG)
        err = _one_line_error(capsys, argv)
        assert f"{store}" in err and "damaged" in err, (argv, err)
    with pytest.raises(StoreError, match="damaged SQLite file"):
        rb.load_results(folder)
    assert _digest(store) == before and not (tmp_path / "lb").exists()


def _rewrite_blobs(store: Path, fn) -> None:
    conn = sqlite3.connect(store)
    for key, n, header, blob in conn.execute("SELECT cell_key, n, header, data FROM sample_arrays").fetchall():
        conn.execute("UPDATE sample_arrays SET data = ? WHERE cell_key = ?", (fn(n, header, bytes(blob)), key))
    conn.commit()
    conn.close()


def _flip(n: int, header: str, blob: bytes) -> bytes:
    b = bytearray(blob)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _bomb(n: int, header: str, blob: bytes) -> bytes:
    return lzma.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in a few KB, where the header says n rows


@pytest.mark.parametrize("damage, expected", [(_flip, "not readable xz data"),
                                              (_bomb, "decompresses to more than")])
def test_damaged_per_sample_arrays_name_the_cell(finished_run, tmp_path, capsys, damage, expected):
    folder = _copy(finished_run, tmp_path / "bad")
    store = folder / "results.sqlite"
    _rewrite_blobs(store, damage)
    before = _digest(store)
    for argv in (["leaderboard", str(folder), "--out", str(tmp_path / "lb")], ["compare", str(folder), "m1", "m2"]):
        err = _one_line_error(capsys, argv)
        assert f"{store}: cell " in err and expected in err and "per-sample arrays are damaged" in err, argv
    with pytest.raises(StoreError, match=expected):
        rb.load_results(folder).samples
    assert _digest(store) == before


def test_a_crafted_info_blob_is_not_expanded(finished_run, tmp_path):
    folder = _copy(finished_run, tmp_path / "bad")
    store = folder / "results.sqlite"
    conn = sqlite3.connect(store)
    conn.execute("UPDATE cells SET info = ?", (lzma.compress(b" " * (80 << 20)),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="info in the store is damaged .*decompresses to more than"):
        rb.load_results(folder).cells


@pytest.mark.parametrize("header", ['{"codec": "npcols-xz-1"}', "not json", '{"codec": "npcols-xz-1", "columns": '
                                    '[["a", "<zz"]]}', '{"codec": "npcols-xz-1", "columns": [["a", "<u1", ["x"]]]}'])
def test_decode_refuses_a_damaged_header_in_one_line(header):
    n, _, blob = encode({"a": [0, 1, 2]})
    with pytest.raises(ValueError) as err:
        decode(n, header, blob)
    assert "\n" not in str(err.value)


def test_decode_reads_back_what_encode_wrote():
    import numpy as np

    cols = {"i": [1, 2, 300], "f": [0.5, float("nan"), 2.0], "t": ["a", None, "b"]}
    out = decode(*encode(cols))
    assert out["i"].tolist() == [1, 2, 300] and np.isnan(out["f"][1]) and out["t"].tolist() == ["a", None, "b"]
    with pytest.raises(ValueError, match="cut short"):
        n, header, blob = encode(cols)
        decode(n, header, blob[:len(blob) // 2])


def test_a_store_damaged_after_it_passed_is_checked_again(finished_run, tmp_path):
    """The check runs once per version of a file in a process (readers open a store several times per
    command), so a store damaged in place after it passed (same size) must be checked anew."""
    from robustbench_leak.store import schema

    folder = _copy(finished_run, tmp_path / "later")
    store = folder / "results.sqlite"
    check_store_file(store)
    check_store_file(store)  # just written (a copy): within git's "racy" 2 s, so not remembered
    old = store.stat().st_mtime - 60
    os.utime(store, (old, old))
    calls: list[Path] = []
    real = schema._check_store_file
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema, "_check_store_file", lambda p: (calls.append(p), real(p))[1])
        check_store_file(store)
        check_store_file(store)
        assert len(calls) == 1
        data = bytearray(store.read_bytes())
        page = int.from_bytes(data[16:18], "big")
        data[3 * page:3 * page + 200] = b"\x5a" * 200
        with open(store, "r+b") as fh:  # in place: same inode, same size
            fh.write(bytes(data))
        with pytest.raises(StoreError, match="damaged SQLite file"):
            check_store_file(store)
        assert len(calls) == 2
