"""The Ray executor on a local 2-CPU Ray cluster (one per module): the same leaderboard as the local executor,
a worker killed mid-cell is retried, a raising cell is reported while the rest finishes."""

import os
import sqlite3

import pandas as pd
import pytest
import ray
import torch

from robustbench_leak.config import load_config
from robustbench_leak.pipeline import run_config
from robustbench_leak.run.driver import CellsFailed
from robustbench_leak.run.ray_executor import KILL_DIR_ENV, RayExecutor
from conftest import stored_samples

GRID = """
name: ray-grid
device: cpu
seeds: [0]
datasets:
  - name: synthetic
    n_train: 128
    n_test: 64
training: {optimizer: sgd, lr: 0.1, epochs: 1, batch_size: 32, schedule: cosine}
models:
  - name: small-3x3
    arch: tomen_cnn
    options: {n_layers: 3, width: 8, kernel_size: 3, window: none}
  - name: small-7x7-hamming
    arch: tomen_cnn
    options: {n_layers: 3, width: 8, kernel_size: 7, window: hamming}
attacks:
  - clean
  - preset: deepfool
    n_samples: 16
    params: {max_iter: 10, batch_size: 16}
"""
VOLATILE = ("run",)  # columns that name the run folder, not what was computed
CSV = ("csv",)  # the leaderboard table alone: rendering plots takes longer than these grids


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    kill_dir = tmp_path_factory.mktemp("kill")
    os.environ[KILL_DIR_ENV] = str(kill_dir)  # before ray.init: the workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield kill_dir
    finally:
        ray.shutdown()
        os.environ.pop(KILL_DIR_ENV, None)


def grid(tmp_path, text=GRID):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return load_config(path)


def stable(board: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in board.columns if not any(v in c for v in VOLATILE)]
    return board[keep].sort_values("model").reset_index(drop=True)


def test_ray_leaderboard_equals_local(ray_cluster, tmp_path, monkeypatch):
    config = grid(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each 1-CPU Ray worker, so that floating-point sums agree bit for bit
    try:
        monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache-local"))
        local = run_config(config, tmp_path / "local", progress=False, log=lambda line: None, formats=CSV)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache-ray"))  # the Ray workers train their own
    lines: list[str] = []
    out = run_config(config, tmp_path / "ray", executor=RayExecutor(), progress=True, log=lines.append,
                     formats=CSV)
    assert sum(line.startswith("[train]") and "done in" in line for line in lines) == 2
    assert len(list((tmp_path / "cache-ray").glob("*.pt"))) == 2
    assert lines[-2].startswith("cells: 6 done, 0 running, 0 failed, 0 queued (of 6)")  # plain lines: no TTY
    a, b = stable(pd.read_csv(local / "leaderboard.csv")), stable(pd.read_csv(out / "leaderboard.csv"))
    assert {"clean.accuracy", "deepfool.rho_mean", "params"} <= set(a.columns)
    pd.testing.assert_frame_equal(a, b)
    # per-sample results too, value for value
    assert stored_samples(local) == stored_samples(out)


def test_killed_worker_is_retried_and_the_run_completes(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    for kind in ("train", "eval"):
        (ray_cluster / f"kill-{kind}").touch()  # the first train cell and the first eval cell die once
    out = run_config(grid(tmp_path), tmp_path / "out", executor=RayExecutor(max_retries=1), progress=False,
                     log=lambda line: None, formats=CSV)
    assert sorted(p.name for p in ray_cluster.iterdir()) == ["killed-eval", "killed-train"]
    status = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall()
    assert status == [("done", 6)]
    assert pd.read_csv(out / "leaderboard.csv")["deepfool.rho_mean"].notna().all()


def test_raising_cell_is_reported_and_the_rest_completes(ray_cluster, tmp_path):
    # a config error is caught before any work, so the failure here happens at run time: training diverges
    text = GRID.replace("kernel_size: 7, window: hamming}\n", "kernel_size: 7, window: hamming}\n"
                        "    training: {lr: 1.0e+12}\n")
    assert text != GRID
    with pytest.raises(CellsFailed) as info:
        run_config(grid(tmp_path, text), tmp_path / "out", executor=RayExecutor(), progress=False,
                   log=lambda line: None, formats=CSV)
    failed = str(info.value).splitlines()[1:]
    assert failed and all("small-7x7-hamming" in f for f in failed)
    assert any("non-finite" in f for f in failed)
    rows = sqlite3.connect(tmp_path / "out" / "results.sqlite").execute(
        "SELECT rc.model, rc.attack, c.status FROM cells c JOIN run_cells rc ON rc.cell_key = c.cell_key "
        "WHERE rc.kind = 'eval'").fetchall()
    assert sorted(rows) == [("small-3x3", "clean", "done"), ("small-3x3", "deepfool", "done"),
                            ("small-7x7-hamming", "clean", "failed"), ("small-7x7-hamming", "deepfool", "failed")]


def test_resource_requests(repo):
    from robustbench_leak.run.plan import plan
    from robustbench_leak.run.ray_executor import SMALL_MODEL_GPU_SHARE, gpu_share
    from robustbench_leak.run.tasks import RunContext

    quick, _ = plan(load_config(repo / "configs" / "quickstart.yaml"))
    paper, _ = plan(load_config(repo / "configs" / "paper-fashion-mnist-gpu.yaml"))
    assert {gpu_share(t) for t in quick} == {SMALL_MODEL_GPU_SHARE}  # CPU-scale models share a GPU
    assert {gpu_share(t) for t in paper} == {1.0}  # paper-scale ones (2.7M to 14.5M parameters) get one each
    executor = RayExecutor(cpus_per_cell=2)
    assert executor.resources(paper[0], RunContext(device_name="auto"), gpus=8) == {"num_cpus": 1, "num_gpus": 1.0}
    assert executor.resources(paper[0], RunContext(device_name="cpu"), gpus=8) == {"num_cpus": 2, "num_gpus": 0}
    assert executor.resources(paper[0], RunContext(device_name="auto"), gpus=0) == {"num_cpus": 2, "num_gpus": 0}
    with pytest.raises(ValueError, match="max_retries"):
        RayExecutor(max_retries=-1)
