"""Hostile input and faults, one test per class: results never hidden, files that are not ours never touched,
paths never escape, inputs never hang or exhaust memory, and every failure is a one-line error before any work."""

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_CONFIG
from test_store_leaderboard import fill

from robustbench_leak.cli import main
from robustbench_leak.config import ConfigError, load_config
from robustbench_leak.report.leaderboard import build_table, write_outputs
from robustbench_leak.store import StoreError, StoreReader, StoreWriter


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _cli_error(capsys, *argv: str) -> str:
    """Run the CLI; it must fail with one or two lines on stderr and no traceback."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code != 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2 and lines[0].startswith("rbleak: error: "), err
    assert "Traceback" not in err
    return err


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# 1. a failed run never hides stored results ----------------------------------------------------------
def test_failed_later_run_keeps_earlier_results_visible(tmp_path):
    store = StoreWriter(tmp_path / "results.sqlite")
    fill(store, "r1", {"a": [(0.8, 0.05)], "b": [(0.7, 0.10)]})
    # a later run that planned other cells and failed before finishing any
    store.start_run("r2", config_name="t", config_yaml="name: t\n")
    store.add_run_cells("r2", [{"cell_key": "new", "kind": "eval", "train_key": "x", "model": "c",
                                "arch": "tomen_cnn", "dataset": "synthetic", "seed": 0, "attack": "clean"}])
    store.finish_run("r2", status="failed")
    store.close()
    table, _, _ = build_table([tmp_path])
    assert sorted(table.model) == ["a", "b"]
    written = write_outputs([tmp_path], tmp_path, formats=("md",))
    md = written[0].read_text()
    assert "(failed: 0 of 1 evaluations finished)" in md


def test_newest_finished_result_of_each_cell_wins(tmp_path):
    store = StoreWriter(tmp_path / "results.sqlite")
    fill(store, "r1", {"a": [(0.5, 0.05)]})
    store.close()
    store = StoreWriter(tmp_path / "results.sqlite")
    # the same slot computed again later (e.g. a changed preset gives a new cell key)
    store.start_run("r2", config_name="t", config_yaml="name: t\n")
    spec = {"kind": "clean", "engine": "torch", "n_samples": None, "params": {"batch_size": 512}}
    store.record_cell("a-0-clean-v2", "eval", {"train_key": "a-0", "attack": spec}, "r2", "cpu", "t1", 1.0,
                      {"accuracy": 0.9}, {"label": np.zeros(2), "clean_pred": np.zeros(2), "adv_pred": np.zeros(2)})
    store.add_run_cells("r2", [{"cell_key": "a-0-clean-v2", "kind": "eval", "train_key": "a-0", "model": "a",
                                "arch": "tomen_cnn", "dataset": "synthetic", "seed": 0, "attack": "clean"}])
    store.close()
    table, _, _ = build_table([tmp_path], rank_by="clean.accuracy")
    assert table.loc[0, "clean.accuracy"] == pytest.approx(0.9)
    assert table.loc[0, "deepfool.rho_mean"] == pytest.approx(0.05)  # r1's cell, not hidden by r2
    columns = list(table.columns)  # the config's attack order, although r2 computed 'clean' last
    assert columns.index("clean.accuracy") < columns.index("deepfool.rho_mean")


# 2. files that are not ours are never modified ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["foreign-sqlite", "empty", "random-bytes", "sqlite-no-tables"])
def test_foreign_store_refused_untouched(tmp_path, capsys, kind):
    store = tmp_path / "results.sqlite"
    if kind == "foreign-sqlite":
        conn = sqlite3.connect(store)
        conn.execute("CREATE TABLE songs (title TEXT)")
        conn.execute("INSERT INTO songs VALUES ('x')")
        conn.commit()
        conn.close()
    elif kind == "sqlite-no-tables":
        conn = sqlite3.connect(store)
        conn.execute("PRAGMA user_version = 7")
        conn.commit()
        conn.close()
    elif kind == "empty":
        store.write_bytes(b"")
    else:
        store.write_bytes(np.random.default_rng(0).bytes(4096))
    before, listing = _digest(store), _listing(tmp_path)
    with pytest.raises(StoreError, match="results.sqlite"):
        StoreWriter(store)
    _cli_error(capsys, "leaderboard", str(tmp_path))
    cfg = _write(tmp_path / "..", TINY_CONFIG, f"{kind}.yaml")
    _cli_error(capsys, "run", str(cfg), "--out", str(tmp_path))
    assert _digest(store) == before and _listing(tmp_path) == listing


def test_rendering_opens_the_store_read_only_and_leaves_no_side_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    store = StoreWriter(run / "results.sqlite")
    fill(store, "r1", {"a": [(0.8, 0.05)]})
    store.close()
    assert sorted(p.name for p in run.iterdir()) == ["results.sqlite"]  # a writer leaves one file
    reader = StoreReader(run)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.conn.execute("CREATE TABLE x (a)")
    reader.close()
    before, listing = _digest(run / "results.sqlite"), _listing(run)
    write_outputs([run], tmp_path / "board", formats=("csv", "md", "json", "latex", "html"))
    assert _digest(run / "results.sqlite") == before and _listing(run) == listing


def test_published_stores_are_single_files():
    for store in sorted((REPO / "results").glob("*/results.sqlite")):
        assert not Path(f"{store}-wal").exists() and not Path(f"{store}-shm").exists(), store
        assert store.read_bytes()[18] == 1, f"{store} is in WAL mode; close it with StoreWriter.close()"


# 3. paths never escape --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../../tmp/x", "a/b", "/abs", ".hidden", ""])
def test_run_name_must_be_a_safe_file_name(tmp_path, name):
    cfg = _write(tmp_path, TINY_CONFIG.replace("name: tiny", f"name: {name!r}"))
    with pytest.raises(ConfigError, match=r"cfg.yaml: name: "):
        load_config(cfg)


# 4. inputs that would hang or exhaust memory ----------------------------------------------------------
def test_yaml_alias_bomb_fails_fast_under_a_memory_limit(tmp_path):
    bomb = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        bomb += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    cfg = _write(tmp_path, bomb.replace("a: &a", "zz: &a") + TINY_CONFIG + "description: *i\n")
    code = textwrap.dedent(f"""
        import os, resource, sys
        import robustbench_leak.config  # torch and friends first: their address space is not the config's
        from robustbench_leak.cli import main
        used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), used + (1 << 30)))
        sys.exit(main(["run", {str(cfg)!r}, "--out", {str(tmp_path / "out")!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "YAML aliases" in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert len(proc.stderr) < 400  # the expanded value is never formatted into the message
    assert not (tmp_path / "out").exists()


def test_oversized_config_refused(tmp_path):
    cfg = _write(tmp_path, TINY_CONFIG + "#" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="at most"):
        load_config(cfg)


# 5 and 7. one-line errors, no traceback ---------------------------------------------------------------
def test_binary_garbage_config(tmp_path, capsys):
    cfg = tmp_path / "garbage.yaml"
    cfg.write_bytes(bytes([0xCF, 0xFA, 0xED, 0xFE]) + np.random.default_rng(1).bytes(256))
    err = _cli_error(capsys, "run", str(cfg))
    assert str(cfg) in err and "UTF-8" in err


@pytest.mark.parametrize("old,new,expect", [
    ("width: 8, kernel_size: 3", 'width: "wide", kernel_size: 3', ["models[0].options.width", "'wide'", "integer"]),
    ("width: 8, kernel_size: 3", "width: 0, kernel_size: 3", ["models[0].options.width", "greater than or equal to 1"]),
    ("    n_samples: 16\n    params: {max_iter", "    n_samples: 0\n    params: {max_iter",
     ["attacks[1].n_samples", "greater than or equal to 1"]),
    ("    n_samples: 16\n    params: {max_iter", "    n_samples: 100000\n    params: {max_iter",
     ["attacks[1].n_samples", "64 test images"]),
    ("n_train: 512", "n_train: 512\n    train_subset: 100000", ["datasets[0].train_subset", "512 train images"]),
    ("max_iter: 10", "max_iter: 0", ["attacks[1].params", "max_iter", ">= 1"]),
    ("max_iter: 10", "max_iter: 10, overshoot: -0.5", ["attacks[1].params", "overshoot", ">= 0"]),
    ("num_rotations: 3", "num_rotations: 0", ["attacks[2].params", "num_rotations", ">= 1"]),
    ("max_iter: 10, batch_size: 16", "max_iter: 10, batch_size: 0", ["attacks[1].params", "batch_size", ">= 1"]),
    ("name: tiny", "name: tiny\nrank_by: deepfool.nope", ["rank_by", "deepfool.nope", "deepfool.rho_mean"]),
    ("lr: 0.1", "lr: .nan", ["training.lr", "finite"]),
    ("seeds: [0]", "seeds: [0, 0]", ["seeds", "once"]),
    ("seeds: [0]", "seeds: [0]\nseeds: [1]", ["'seeds' appears twice"]),
    ("seeds: [0]", "seeds: [0]\ncache_dir: /etc/hostname/sub", ["cache_dir", "is a file"]),
    ("n_train: 512", "n_train: 1000000000000", ["datasets[0].n_train", "less than or equal to 1000000"]),
    ("n_train: 512", "n_train: lots", ["datasets[0].n_train", "valid integer"]),
    ("models:\n", "models:\n  - name: m\n    arch: tomen_cnn\n    match_params: m\n", ["match_params", "itself"]),
])
def test_bad_values_fail_before_any_work(tmp_path, capsys, old, new, expect):
    assert old in TINY_CONFIG
    cfg = _write(tmp_path, TINY_CONFIG.replace(old, new, 1))
    out = tmp_path / "out"
    err = _cli_error(capsys, "run", str(cfg), "--out", str(out))
    assert str(cfg) in err
    for part in expect:
        assert part in err, err
    assert not out.exists()


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    err = _cli_error(capsys, "run", str(_write(tmp_path, "name: x\nmodels: [\n  - {a: 1\n")))
    assert "malformed YAML: line" in err


def test_missing_dataset_root_is_one_line(tmp_path, capsys):
    cfg = _write(tmp_path, TINY_CONFIG.replace("name: synthetic\n    n_train: 512\n    n_test: 64",
                                               f"name: fashion-mnist\n    root: {tmp_path / 'nowhere'}"))
    err = _cli_error(capsys, "run", str(cfg))
    assert "datasets[0]" in err and "nowhere" in err


def test_data_file_with_labels_out_of_range_fails_at_config_time(tmp_path, capsys):
    from robustbench_leak.data import write_idx

    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)))
    write_idx(root / "train-labels-idx1-ubyte", np.full(20, 12))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 10))
    cfg = _write(tmp_path, TINY_CONFIG.replace("name: synthetic\n    n_train: 512\n    n_test: 64",
                                               f"name: fashion-mnist\n    root: {root}"))
    err = _cli_error(capsys, "run", str(cfg), "--out", str(tmp_path / "out"))
    assert "datasets[0]" in err and "labels range from 12 to 12" in err and "0 to 9" in err
    assert not (tmp_path / "out").exists()
    (root / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x0a\x01")  # truncated
    err = _cli_error(capsys, "run", str(cfg))
    assert "t10k-labels-idx1-ubyte" in err


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_out_that_is_a_file(tmp_path, capsys, tiny_config, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    out = blocker if where == "file" else blocker / "sub"
    err = _cli_error(capsys, "run", str(tiny_config), "--out", str(out))
    assert "blocker" in err and "is a file" in err
    assert blocker.read_text() == "mine"


def test_non_finite_loss_is_one_line(tmp_path, capsys, monkeypatch, tiny_config):
    import torch

    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    cfg = _write(tmp_path, TINY_CONFIG.replace("lr: 0.1", "lr: 0.0987"))  # a key of its own: nothing cached
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    # one line for the run, then one per failed cell (the cells that cannot run without the model say so)
    lines = err.splitlines()
    assert lines[0].startswith("rbleak: error: ") and "8 of the 8 cells" in lines[0] and "Traceback" not in err
    assert "loss became non-finite at epoch 1" in err and len(lines) == 9


def test_unexpected_error_goes_to_a_log_not_the_terminal(tmp_path, capsys, monkeypatch):
    import robustbench_leak.cli as cli

    def boom(args):
        raise KeyError("bug")

    monkeypatch.setattr(cli, "_cmd_list", boom)
    parser_args = ["list", "models"]
    err = _cli_error(capsys, *parser_args)
    assert "internal error" in err and "traceback in" in err
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert "KeyError" in log.read_text()
    log.unlink()


def test_bench_out_accepts_a_folder_or_says_what_is_expected(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _cli_error(capsys, "bench", "--out", str(tmp_path / "file" / "bench.json"))
    assert "file" in err
