"""Weights behind every published number: a run folder's weights/ holds the trained models (one file per
train key), every cell records the SHA-256 of the weights it made or attacked, a run stopped by its time
limit and resumed elsewhere from the folder alone equals an uninterrupted run cell for cell, and tables
flag cells of one train key that attacked different weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from robustbench_leak.cli import main
from robustbench_leak.models.checkpoints import read_checkpoint, state_sha256
from robustbench_leak.report.loader import RunData
from robustbench_leak.run.deadline import Deadline
from robustbench_leak.store import StoreReader

CONFIG = """
name: published
device: cpu
seeds: [0, 1]
datasets:
  - {name: synthetic, n_train: 96, n_test: 24}
training: {optimizer: sgd, lr: 0.05, epochs: 1, batch_size: 32}
models:
  - {name: small, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 3, window: none}}
attacks: [clean, {preset: deepfool, n_samples: 8}]
"""


def _cells(out: Path) -> dict[str, dict]:
    with StoreReader(out) as store:
        keys = [r[0] for r in store.conn.execute("SELECT cell_key FROM cells WHERE status = 'done'")]
        metrics = store.metric_values()
        return {k: {"info": store.cell_info(k), "arrays": store.sample_arrays(k),
                    "metrics": {m: v for (c, m), v in metrics.items() if c == k}} for k in keys}


def test_time_limited_run_resumed_from_the_folder_alone_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    config = tmp_path / "published.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache-a"))
    whole = tmp_path / "whole"
    assert main(["run", str(config), "--out", str(whole), "--quiet", "--publish-weights"]) == 0
    assert not (tmp_path / "cache-a").exists()  # the weights went to the folder, not the cache
    published = sorted((whole / "weights").glob("*.pt"))
    assert len(published) == 2

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache-b"))
    import robustbench_leak.run.executor as executor

    finished: list[str] = []
    real_run_job = executor.run_job

    def run_job(job, *args, **kwargs):
        out = real_run_job(job, *args, **kwargs)
        finished.append(job.key)
        return out

    def remaining(self):  # the clock says: once seed 0's three cells are done, the time is up
        return 0.0 if len(finished) >= 3 else 3600.0

    with monkeypatch.context() as m:
        m.setattr(executor, "run_job", run_job)
        m.setattr(Deadline, "remaining", remaining)
        stopped = tmp_path / "stopped"
        assert main(["run", str(config), "--out", str(stopped), "--quiet", "--publish-weights",
                     "--time-limit", "3600"]) == 75
    assert len(_cells(stopped)) == 3 and len(_cells(whole)) == 6
    clone = tmp_path / "clone" / "stopped"  # a fresh checkout: the folder (store and weights) and nothing else
    shutil.copytree(stopped, clone)
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache-c"))
    assert main(["run", str(config), "--out", str(clone), "--quiet"]) == 0
    assert not (tmp_path / "cache-c").exists()

    a, b = _cells(whole), _cells(clone)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key]["metrics"] == b[key]["metrics"], key
        assert a[key]["arrays"].keys() == b[key]["arrays"].keys()
        assert all(a[key]["arrays"][c].tobytes() == b[key]["arrays"][c].tobytes() for c in a[key]["arrays"]), key
        assert a[key]["info"]["weights_sha256"] == b[key]["info"]["weights_sha256"]
    files = {p.name: state_sha256(read_checkpoint(p)[0]) for p in published}
    assert files == {p.name: state_sha256(read_checkpoint(p)[0]) for p in sorted((clone / "weights").glob("*.pt"))}
    assert {cell["info"]["weights_sha256"] for cell in a.values()} == set(files.values())  # train and eval cells


def test_tables_flag_cells_of_one_model_that_attacked_different_weights():
    cells = pd.DataFrame({"train_key": ["t1", "t1", "t2", "t2"], "model": ["m", "m", "m", "m"],
                          "dataset": ["d"] * 4, "seed": [0, 0, 1, 1], "attack": ["clean", "deepfool", "clean", "deepfool"],
                          "info": [{"weights_sha256": "a" * 64}, {"weights_sha256": "b" * 64},
                                   {"weights_sha256": "c" * 64}, {}]})
    run = RunData(label="r", path=Path("x"), run={"run_id": "1", "status": "done"}, runs={}, results=pd.DataFrame(),
                  models=pd.DataFrame(), cells=cells, specs={}, samples=pd.DataFrame())
    (note,) = run.weights_conflicts()
    assert note.startswith("WEIGHTS DIFFER: the cells of m / d / seed 0") and "aaaaaaaaaaaa" in note
    assert note in run.status_notes()


def _run_then_lose_the_weights(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A one-seed run published in a folder, its weights then lost, and a config with one more attack."""
    config = tmp_path / "published.yaml"
    config.write_text(CONFIG.replace("seeds: [0, 1]", "seeds: [0]"))
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--publish-weights"]) == 0
    shutil.rmtree(out / "weights")
    (out / "weights").mkdir()
    more = tmp_path / "more.yaml"
    more.write_text(CONFIG.replace("seeds: [0, 1]", "seeds: [0]").replace(
        "attacks: [clean,", "attacks: [clean, {preset: pgd, label: pgd, n_samples: 8},"))
    return out, more


def test_a_stored_model_trained_on_another_device_is_not_retrained_here(tmp_path, monkeypatch, capsys):
    """Its stored cells attacked weights this machine cannot reproduce (another device type): the cells added
    to it fail in one line each before any training, and the stored cells stay as they were."""
    import sqlite3

    out, more = _run_then_lose_the_weights(tmp_path, monkeypatch)
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("UPDATE models SET trained_on = 'cuda'")
    before = _cells(out)
    import robustbench_leak.run.cells as cells

    trained = []
    monkeypatch.setattr(cells, "train_model", lambda *a, **k: trained.append(1))
    capsys.readouterr()
    assert main(["run", str(more), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "trained on cuda" in err and "retraining on cpu would give other weights" in err
    assert not trained
    after = _cells(out)
    assert set(after) == set(before)  # nothing added, nothing lost
    assert all(after[k]["info"] == before[k]["info"] for k in before)


def test_retrained_weights_must_be_those_the_stored_cells_attacked(tmp_path, monkeypatch, capsys):
    """On the same device the model is retrained (CPU training is bitwise deterministic, so the new cell
    attacks the same weights); when the retrained weights differ from the stored hash, the new cells fail."""
    out, more = _run_then_lose_the_weights(tmp_path, monkeypatch)
    assert main(["run", str(more), "--out", str(out), "--quiet"]) == 0  # deterministic retrain: same hash
    with StoreReader(out) as store:
        hashes = {store.cell_info(k).get("weights_sha256") for k in _cells(out)}
    assert len(hashes) == 1 and None not in hashes

    shutil.rmtree(out / "weights")
    (out / "weights").mkdir()
    more.write_text(more.read_text().replace("attacks: [clean,", "attacks: [clean, {preset: pgd, label: pgd2, "
                                                                  "n_samples: 4},"))
    import robustbench_leak.run.cells as cells

    monkeypatch.setattr(cells, "state_sha256", lambda weights: "0" * 64)  # as if training did not reproduce
    capsys.readouterr()
    assert main(["run", str(more), "--out", str(out), "--quiet"]) == 1
    assert "are not those its stored cells attacked" in capsys.readouterr().err


def test_earlier_unfinished_runs_are_named_in_one_note_per_way_they_ended():
    """A store resumed over many sessions has many interrupted runs: one note per status names them all."""
    runs = {"a": {"status": "interrupted", "started_at": "t0"}, "b": {"status": "interrupted", "started_at": "t1"},
            "c": {"status": "failed", "started_at": "t2"}, "d": {"status": "done"}, "e": {"status": "running"}}
    run = RunData(label="r", path=Path("x"), run={"run_id": "e", "status": "running"}, runs=runs,
                  results=pd.DataFrame(), models=pd.DataFrame(), cells=pd.DataFrame(), specs={},
                  samples=pd.DataFrame())
    notes = run.unfinished_runs()
    assert notes == ["2 runs of r ended interrupted (a, b); the results they stored are shown where they are the newest",
                     "run c of r (started t2) ended failed; the results it stored are shown where they are the newest"]
