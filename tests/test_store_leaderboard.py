"""Store transactions and the leaderboard rendered from stored records."""

import ast
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustbench_leak.report.leaderboard import build_table, to_markdown, write_outputs
from robustbench_leak.store import StoreReader, StoreWriter

SPEC_CLEAN = {"kind": "clean", "engine": "torch", "n_samples": None, "params": {"batch_size": 512}}
SPEC_DF = {"kind": "deepfool", "engine": "art", "n_samples": 10,
           "params": {"max_iter": 5, "overshoot": 0.02, "nb_grads": 10, "batch_size": 10}}


def fill(store: StoreWriter, run_id: str, models: dict[str, list[tuple[float, float]]]) -> None:
    """models: name -> per seed (clean accuracy, deepfool rho_mean)."""
    store.start_run(run_id, config_name="t", config_yaml="name: t\n")
    rows = []
    for name, per_seed in models.items():
        for seed, (acc, rho) in enumerate(per_seed):
            tk = f"{name}-{seed}"
            store.record_model(tk, {"arch": "tomen_cnn", "options": {}, "kernel": "3x3", "window": "none",
                                    "params": 100, "flops": 2000, "checkpoint": "x", "history": [],
                                    "train_seconds": 1.0, "trained_on": "cpu"})
            rows.append({"cell_key": tk, "kind": "train", "train_key": tk, "model": name, "arch": "tomen_cnn",
                         "dataset": "synthetic", "seed": seed, "attack": None})
            for label, spec, metrics in [("clean", SPEC_CLEAN, {"accuracy": acc}),
                                         ("deepfool", SPEC_DF, {"rho_mean": rho, "success_rate": 1.0})]:
                key = f"{tk}-{label}"
                store.record_cell(key, "eval", {"train_key": tk, "attack": spec}, run_id, "cpu", "t0", 1.0, metrics,
                                  {"label": np.zeros(2), "clean_pred": np.zeros(2), "adv_pred": np.ones(2),
                                   "l2": np.array([0.1, 0.2]), "rho": np.array([0.01, 0.02])})
                rows.append({"cell_key": key, "kind": "eval", "train_key": tk, "model": name, "arch": "tomen_cnn",
                             "dataset": "synthetic", "seed": seed, "attack": label})
    store.add_run_cells(run_id, rows)
    store.finish_run(run_id)


def test_aggregates_seeds_and_ranks(tmp_path):
    store = StoreWriter(tmp_path / "results.sqlite")
    fill(store, "r1", {"a": [(0.8, 0.05), (0.9, 0.07)], "b": [(0.7, 0.10), (0.6, 0.12)]})
    store.close()
    table, legend, rank_col = build_table([tmp_path])
    assert rank_col == "deepfool.rho_mean"
    assert list(table.model) == ["b", "a"] and list(table["rank"]) == [1, 2]
    a = table[table.model == "a"].iloc[0]
    assert a["clean.accuracy"] == pytest.approx(0.85)
    assert a["clean.accuracy.std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert a.seeds == 2 and a.params == 100
    md = to_markdown(table, legend, rank_col, "T")
    assert "85.0% ± 7.1" in md and "## Legend" in md and "**deepfool.rho_mean**" in md
    table2, _, _ = build_table([tmp_path], rank_by="clean.accuracy")
    assert list(table2.model) == ["a", "b"]
    with pytest.raises(ValueError, match="not a leaderboard column"):
        build_table([tmp_path], rank_by="nope")


def test_write_outputs_and_merge(tmp_path):
    for name, models in [("run1", {"a": [(0.8, 0.05)]}), ("run2", {"c": [(0.95, 0.01)]})]:
        s = StoreWriter(tmp_path / name / "results.sqlite")
        fill(s, name, models)
        s.close()
    written = write_outputs([tmp_path / "run1", tmp_path / "run2"], tmp_path / "merged")
    assert {p.name for p in written} == {"leaderboard.csv", "leaderboard.meta.json", "leaderboard.md"}
    csv = pd.read_csv(tmp_path / "merged" / "leaderboard.csv")
    assert set(csv.model) == {"a", "c"}
    assert csv.loc[csv.model == "a", "deepfool.rho_mean"].item() == pytest.approx(0.05)


def test_every_runs_newest_results_are_shown(tmp_path):
    """A folder's leaderboard shows the newest finished result of every cell, whichever run computed it:
    a later run with other cells does not hide an earlier run's."""
    s = StoreWriter(tmp_path / "results.sqlite")
    fill(s, "old", {"earlier": [(0.5, 0.5)]})
    fill(s, "new", {"later": [(0.6, 0.1)]})
    s.close()
    table, _, _ = build_table([tmp_path])
    assert list(table.model) == ["earlier", "later"]


def test_record_cell_is_atomic(tmp_path):
    s = StoreWriter(tmp_path / "results.sqlite")
    with pytest.raises(sqlite3.Error):
        # metrics and samples are written first; an unbindable 'seconds' makes the final 'done' insert fail
        s.record_cell("k", "eval", {}, "r", "cpu", "t", object(), {"accuracy": 0.5},
                      {"label": np.zeros(3), "clean_pred": np.zeros(3), "adv_pred": np.zeros(3),
                       "l2": np.zeros(3), "rho": np.zeros(3)})
    assert not s.is_done("k")
    assert s.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
    assert s.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
    assert s.conn.execute("SELECT COUNT(*) FROM sample_arrays").fetchone()[0] == 0
    s.close()


def test_reader_refuses_a_folder_without_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store"):
        StoreReader(tmp_path)


def test_infinite_metric_in_one_seed_has_no_spread_and_no_warning(tmp_path):
    """A metric that is infinite in one seed (a convergence signal, say) averages to inf; its spread across
    seeds is undefined (NaN), and rendering emits no numpy warning on the user's terminal."""
    import warnings

    store = StoreWriter(tmp_path / "results.sqlite")
    fill(store, "r1", {"a": [(0.8, 0.05), (0.9, float("inf"))], "b": [(0.7, 0.10), (0.6, 0.12)]})
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table, _, _ = build_table([tmp_path])
    a = table.set_index("model").loc["a"]
    assert np.isinf(a["deepfool.rho_mean"]) and np.isnan(a["deepfool.rho_mean.std"])
    assert table.set_index("model").loc["b", "deepfool.rho_mean.std"] == pytest.approx(np.std([0.10, 0.12], ddof=1))


# the store package is the only place with SQL, and only the run driver writes ------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "robustbench_leak"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE \w+ SET|DELETE FROM|CREATE TABLE|ALTER TABLE|PRAGMA)\b")


def _sources_outside_store() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))
            if (PACKAGE / "store") not in p.parents}


def test_no_sql_outside_the_store_package():
    found = []
    for name, tree in _sources_outside_store().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{name}: imports {m}" for m in modules if m.split(".")[0] == "sqlite3"]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("read_sql"):
                found.append(f"{name}: calls {node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{name}:{node.lineno}: SQL text {node.value[:60]!r}")
    assert not found, found


def test_only_the_run_driver_imports_the_writer():
    importers = set()
    for name, tree in _sources_outside_store().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module, names = node.module or "", {a.name for a in node.names}
                if ("StoreWriter" in names or module.endswith("store.writer")
                        or (module.split(".")[-1] == "store" and "writer" in names)):
                    importers.add(name)
            elif isinstance(node, ast.Import) and any(a.name.endswith("store.writer") for a in node.names):
                importers.add(name)
    assert importers == {"robustbench_leak/run/driver.py"}


def test_reader_cannot_write(tmp_path):
    s = StoreWriter(tmp_path / "results.sqlite")
    fill(s, "r1", {"a": [(0.8, 0.05)]})
    s.close()
    reader = StoreReader(tmp_path)
    try:
        assert not hasattr(reader, "record_cell") and reader.latest_run()["run_id"] == "r1"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("DELETE FROM metrics")
    finally:
        reader.close()
