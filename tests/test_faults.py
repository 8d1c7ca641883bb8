"""Faults on the local executor: a failing cell is stored as failed and reported while the rest of the grid
finishes; a second run into a folder that a run holds refuses and leaves the store alone."""

import json
import os
import sqlite3

import pandas as pd
import pytest

from robustbench_leak.cli import main
from robustbench_leak.config import load_config
from robustbench_leak.pipeline import run_config
from robustbench_leak.run.driver import CellsFailed
from robustbench_leak.run.lock import LOCK_NAME, OutDirLocked, locked_out_dir
from robustbench_leak.store import StoreWriter
from conftest import stored_info

FAULTY = """
name: faulty
device: cpu
seeds: [0]
datasets:
  - name: synthetic
    n_train: 128
    n_test: 64
training: {optimizer: sgd, lr: 0.1, epochs: 1, batch_size: 32, schedule: cosine}
models:
  - name: ok
    arch: tomen_cnn
    options: {n_layers: 2, width: 4, kernel_size: 3, window: none}
  - name: diverges
    arch: tomen_cnn
    options: {n_layers: 2, width: 4, kernel_size: 5, window: none}
    training: {lr: 1.0e+12}
attacks:
  - clean
  # a valid attack whose engine the test makes raise when it runs (a config error would stop the run first)
  - {preset: spatial, label: overlap, n_samples: 16, fit_samples: 16, params: {num_translations: 2, num_rotations: 2}}
"""
CSV = ("csv",)  # the leaderboard table alone: rendering plots takes longer than this grid


def cells(out):
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT c.status, rc.kind, rc.model, rc.attack, c.info FROM cells c JOIN run_cells rc "
                       "ON rc.cell_key = c.cell_key").fetchall()
    con.close()
    return {(kind, model, attack): (status, stored_info(info)) for status, kind, model, attack, info in rows}


def test_failed_cells_are_stored_reported_and_retried(tmp_path, capsys, monkeypatch):
    from robustbench_leak.attacks.native_spatial import NativeSpatial

    def broken(self, *args, **kwargs):
        raise ValueError("injected fault: the spatial engine raised")

    monkeypatch.setattr(NativeSpatial, "run", broken)
    path = tmp_path / "faulty.yaml"
    path.write_text(FAULTY)
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(CellsFailed) as info:
        run_config(load_config(path), out, progress=False, log=lines.append, formats=CSV)
    message = str(info.value)
    # one line per failed cell, each naming it and its error
    assert "4 of the 6 cells run failed" in message
    assert "train diverges / synthetic / seed 0: FloatingPointError: diverges: loss became" in message
    assert "eval diverges / clean / seed 0: its model failed to train" in message
    assert "eval diverges / overlap / seed 0: its model failed to train" in message
    assert "eval ok / overlap / seed 0: ValueError: injected fault: the spatial engine raised" in message
    assert len(message.splitlines()) == 1 + 4

    stored = cells(out)
    assert stored[("train", "ok", None)][0] == "done" and stored[("eval", "ok", "clean")][0] == "done"
    assert stored[("eval", "ok", "overlap")][0] == "failed"
    assert "Traceback" in stored[("eval", "ok", "overlap")][1]["traceback"]
    assert stored[("train", "diverges", None)][0] == "failed"
    assert stored[("eval", "diverges", "clean")][1]["error"] == "its model failed to train"
    assert json.loads((out / "provenance.json").read_text())["executor"] == "local"
    # the leaderboard holds what finished; the failed run says it is not complete
    board = pd.read_csv(out / "leaderboard.csv")
    assert board.set_index("model").loc["ok", "clean.accuracy"] > 0
    status = sqlite3.connect(out / "results.sqlite").execute("SELECT status FROM runs").fetchone()[0]
    assert status == "failed"

    # the same command retries only the failed cells; the CLI exits non-zero naming them
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"rbleak: error: {out}: 4 of the 5 cells run failed")
    assert "[skip] ok / clean / seed 0: already in the store" in captured.out
    assert "[failed] eval ok / overlap / seed 0: ValueError" in captured.out
    assert cells(out)[("eval", "ok", "clean")][0] == "done"


def test_second_run_into_a_held_folder_refuses_and_leaves_the_store_alone(tiny_config, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    StoreWriter(out / "results.sqlite").close()  # a store another run is writing
    before = (out / "results.sqlite").read_bytes()
    with locked_out_dir(out):
        assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"rbleak: error: {out.resolve()}: another rbleak run (pid {os.getpid()})")
        assert len(err.splitlines()) == 1
        with pytest.raises(OutDirLocked, match=str(out.resolve())):
            run_config(load_config(tiny_config), out, progress=False, log=lambda line: None, formats=CSV)
    assert (out / "results.sqlite").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, "results.sqlite"])
    # released with the holder: the lock can be taken again at once
    with locked_out_dir(out):
        pass


def test_address_needs_the_ray_executor(tiny_config, tmp_path, capsys):
    tiny_config.write_text(tiny_config.read_text() + "address: 10.0.0.5:6379\n")
    assert main(["run", str(tiny_config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"rbleak: error: {tiny_config}: address: only the ray executor joins a cluster; set executor: ray " \
                  "(or --executor ray) or remove the address\n"
    assert not (tmp_path / "out").exists()
