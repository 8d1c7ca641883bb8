"""A grid run seed by seed (``rbleak run --seeds``) in separate processes or machines, then merged
(``--merge``), equals the grid run in one go: same cells, same per-sample results, nothing recomputed."""

import sqlite3
from pathlib import Path

import pytest
from conftest import REPO, TINY_CONFIG, stored_samples

from robustbench_leak.cli import main
from robustbench_leak.store import StoreReader

TWO_SEEDS = TINY_CONFIG.replace("seeds: [0]", "seeds: [0, 1]")


def _cells(folder: Path) -> dict[str, tuple]:
    with sqlite3.connect(f"file:{folder / 'results.sqlite'}?mode=ro", uri=True) as c:
        return {key: (kind, status) for key, kind, status in c.execute("SELECT cell_key, kind, status FROM cells")}


def _samples(folder: Path) -> dict[str, dict[str, bytes]]:
    return stored_samples(folder)


def test_shards_merged_equal_the_whole_grid(tmp_path, capsys):
    cfg = tmp_path / "two.yaml"
    cfg.write_text(TWO_SEEDS)
    assert main(["run", str(cfg), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    for seed in (0, 1):
        assert main(["run", str(cfg), "--seeds", str(seed), "--out", str(tmp_path / f"s{seed}"), "--quiet"]) == 0
    shard0 = _cells(tmp_path / "s0")
    assert shard0 and len(shard0) == len(_cells(tmp_path / "whole")) // 2
    capsys.readouterr()
    shard_files = {p: p.read_bytes() for p in sorted(tmp_path.glob("s[01]/*")) if p.is_file()}
    assert main(["run", str(cfg), "--merge", str(tmp_path / "s0"), str(tmp_path / "s1" / "results.sqlite"),
                 "--out", str(tmp_path / "merged"), "--quiet"]) == 0
    assert "[merge]" in capsys.readouterr().out
    # the sources are read, never written: same files, same bytes, no side files
    assert {p: p.read_bytes() for p in sorted(tmp_path.glob("s[01]/*")) if p.is_file()} == shard_files
    merged, whole = _cells(tmp_path / "merged"), _cells(tmp_path / "whole")
    assert merged == whole  # same cell keys, all done
    assert _samples(tmp_path / "merged") == _samples(tmp_path / "whole")  # CPU training is deterministic
    store = StoreReader(tmp_path / "merged")
    try:
        runs = store.runs()
        # the two shard runs that computed the cells, and the merging run that computed nothing
        assert len(runs) == 3 and set(runs["status"]) == {"done"}
        seconds = store.frame("SELECT SUM(seconds) AS s FROM cells WHERE run_id = ?",
                              (store.latest_run()["run_id"],))["s"].iloc[0]
        assert seconds is None or seconds != seconds  # no cell was computed by the merging run
        assert store.missing_slots(store.latest_run()["run_id"]) == 0
    finally:
        store.close()
    assert (tmp_path / "merged" / "leaderboard.csv").read_text().count("small-") == 2


def test_merge_then_runs_only_what_is_missing(tmp_path):
    cfg = tmp_path / "two.yaml"
    cfg.write_text(TWO_SEEDS)
    assert main(["run", str(cfg), "--seeds", "1", "--out", str(tmp_path / "s1"), "--quiet"]) == 0
    assert main(["run", str(cfg), "--merge", str(tmp_path / "s1"), "--out", str(tmp_path / "all"), "--quiet"]) == 0
    store = StoreReader(tmp_path / "all")
    try:
        latest = store.latest_run()["run_id"]
        by_run = store.frame("SELECT c.run_id, COUNT(*) AS n FROM cells c GROUP BY c.run_id")
        assert dict(zip(by_run["run_id"], by_run["n"]))[latest] == len(_cells(tmp_path / "s1"))  # seed 0 computed
        assert store.missing_slots(latest) == 0
    finally:
        store.close()


@pytest.mark.parametrize("case", ["not-a-store", "missing", "itself", "bad-seed", "unknown-seed"])
def test_bad_shard_or_merge_arguments_fail_before_any_work(tmp_path, capsys, case):
    cfg = tmp_path / "two.yaml"
    cfg.write_text(TWO_SEEDS)
    out = tmp_path / "out"
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    before = foreign.read_bytes()
    argv = {"not-a-store": ["--merge", str(foreign)],
            "missing": ["--merge", str(tmp_path / "nowhere")],
            "itself": ["--merge", str(out)],
            "bad-seed": ["--seeds", "0,x"],
            "unknown-seed": ["--seeds", "7"]}[case]
    if case == "itself":
        assert main(["run", str(cfg), "--seeds", "0", "--out", str(out), "--quiet"]) == 0
        capsys.readouterr()
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["run", str(cfg), "--out", str(out), "--quiet", *argv]) != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rbleak: error: ") and "Traceback" not in err
    assert ("--merge" in err) or ("--seeds" in err) or "foreign" in err or "nowhere" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing  # nothing created
    assert foreign.read_bytes() == before


def _sharded(tmp_path, *args, timeout=600):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", str(REPO / "scripts" / "sharded-run.sh"), *map(str, args)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_sharded_run_script(tmp_path):
    """scripts/sharded-run.sh: one process per seed, then the merge; the merged store has the whole grid.
    An unfinished shard merges nothing (exit 1), and a rerun resumes it."""
    cfg = tmp_path / "two.yaml"
    cfg.write_text(TWO_SEEDS)
    out = tmp_path / "out"
    cut = _sharded(tmp_path, cfg, out, 1)  # one second: the shards are interrupted while starting up
    assert cut.returncode == 1 and "nothing merged" in cut.stderr and not out.exists()
    done = _sharded(tmp_path, cfg, out)  # the same command again: the shards resume, then merge
    assert done.returncode == 0, done.stderr
    assert main(["run", str(cfg), "--out", str(tmp_path / "whole"), "--quiet"]) == 0
    assert _cells(out) == _cells(tmp_path / "whole")
    assert sorted(p.name for p in (tmp_path / "out.shards").glob("*.log")) == ["merge.log", "s0.log", "s1.log"]


@pytest.mark.parametrize("args, message", [
    (["{cfg}", "{out}", "soon"], "SECONDS: soon: expected a whole number"),
    (["{tmp}/missing.yaml", "{out}"], "missing.yaml"),
    (["{cfg}", "{foreign}"], "foreign"),
])
def test_sharded_run_script_refuses_bad_arguments_before_any_work(tmp_path, args, message):
    cfg = tmp_path / "two.yaml"
    cfg.write_text(TWO_SEEDS)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [a.format(cfg=cfg, out=tmp_path / "out", tmp=tmp_path, foreign=foreign) for a in args]
    result = _sharded(tmp_path, *argv, timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_every_cell_records_the_device_it_ran_on(tmp_path):
    """``device: auto`` is resolved in the records: train and eval cells name the device, not 'auto'."""
    cfg = tmp_path / "auto.yaml"
    cfg.write_text(TINY_CONFIG.replace("device: cpu", "device: auto"))
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    with sqlite3.connect(f"file:{tmp_path / 'out' / 'results.sqlite'}?mode=ro", uri=True) as c:
        devices = dict(c.execute("SELECT kind, GROUP_CONCAT(DISTINCT device) FROM cells GROUP BY kind").fetchall())
    expected = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    assert devices == {"train": expected, "eval": expected}
