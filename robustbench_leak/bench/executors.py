"""``rbleak bench --executors``: one grid's wall-clock time on the local executor and on Ray, as a ratio.

Both runs start from an empty checkpoint cache (training included) and write into fresh folders. The
local run uses this process (torch's default thread count); the Ray run uses a local cluster of
``workers`` CPUs, one single-threaded cell per CPU. Ray's start-up overhead is measured apart, before the
grid: the time of ``ray.init``, of the first trivial task (which starts a worker process) and of warming
``workers`` workers (each imports the package); so the grid's time is the steady state.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

from ..run.provenance import provenance
from ..run.ray_executor import import_ray
from ..store import StoreReader

Log = Callable[[str], None]
TARGET_RATIO = 1.6  # the target for 2 workers on 2 cores


def _metrics(out: Path) -> dict[tuple[str, str], float | None]:
    with StoreReader(out) as store:
        return store.metric_values()


def _largest_difference(a: dict[tuple[str, str], float | None], b: dict[tuple[str, str], float | None]) -> float | None:
    """Largest absolute difference of a metric stored by both runs; None when they stored different metrics."""
    if a.keys() != b.keys():
        return None
    return max((abs(a[k] - b[k]) for k in a if a[k] is not None and b[k] is not None), default=0.0)


def _timed_run(config_path: str, out: Path, executor: Any, log: Log) -> float:
    from ..config import load_config
    from ..run.driver import run_cells

    config = load_config(config_path)
    cache = str(out.parent / f"cache-{out.name}")  # empty: every model is trained
    config = config.model_copy(update={"run": config.run.model_copy(update={"cache_dir": cache})})
    t0 = time.perf_counter()
    run_cells(config, out, executor=executor, progress=False, log=lambda line: None)
    seconds = time.perf_counter() - t0
    log(f"{out.name}: {seconds:.1f} s")
    return seconds


def ray_startup(workers: int) -> dict[str, float]:
    """Seconds of ``ray.init`` (a local cluster of ``workers`` CPUs), of the first trivial task, and of
    ``workers`` tasks at once that import the package (what each worker pays before its first cell)."""
    ray = import_ray()  # the optional extra: one line saying how to install it when it is missing

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0

    @ray.remote
    def nothing() -> int:
        return 0

    @ray.remote(num_cpus=1)
    def warm_up() -> int:
        import robustbench_leak.run.cells  # noqa: F401 - what a cell's worker imports first (torch included)

        time.sleep(0.5)  # keeps this worker busy so that the next task starts another one
        return os.getpid()

    t0 = time.perf_counter()
    ray.get(nothing.remote())
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    pids = ray.get([warm_up.remote() for _ in range(workers)])
    return {"init_seconds": t_init, "first_task_seconds": t_first,
            "worker_warm_up_seconds": time.perf_counter() - t0, "warm_workers": len(set(pids))}


def run_executor_bench(out: Path, grid: str, workers: int = 2, log: Log = print) -> dict[str, Any]:
    ray = import_ray()
    from ..config import load_config
    from ..run.executor import LocalExecutor
    from ..run.ray_executor import RayExecutor

    if workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {workers}")
    config = load_config(grid)  # fail on a bad config before any timing
    if ray.is_initialized():
        raise ValueError("rbleak bench --executors: Ray is already running in this process; the start-up "
                         "overhead must be measured from a fresh start")
    n_models = len(config.run.models) * len(config.run.seeds) * len(config.run.datasets)
    n_cells = n_models * (1 + len(config.attacks))
    log(f"grid {grid}: {n_models} models, {n_cells} cells; local executor, then Ray with {workers} workers")
    with tempfile.TemporaryDirectory(prefix="rbleak-bench-executors-") as tmp:
        folder = Path(tmp)
        local_seconds = _timed_run(grid, folder / "local", LocalExecutor(), log)
        local_threads = torch.get_num_threads()
        try:
            startup = ray_startup(workers)
            log(f"ray start-up: init {startup['init_seconds']:.1f} s, first task "
                f"{startup['first_task_seconds']:.1f} s, {workers} workers importing the package {startup['worker_warm_up_seconds']:.1f} s")
            ray_seconds = _timed_run(grid, folder / "ray", RayExecutor(cpus_per_cell=1), log)
        finally:
            ray.shutdown()
        local_metrics, ray_metrics = _metrics(folder / "local"), _metrics(folder / "ray")
    same, difference = local_metrics == ray_metrics, _largest_difference(local_metrics, ray_metrics)
    ratio = local_seconds / ray_seconds
    overhead = startup["init_seconds"] + startup["first_task_seconds"] + startup["worker_warm_up_seconds"]
    results = {
        "grid": grid, "config_hash": config.config_hash(), "models": n_models, "cells": n_cells,
        "workers": workers, "cpus": os.cpu_count(), "local_torch_threads": local_threads,
        "local_seconds": local_seconds, "ray_seconds": ray_seconds, "ray_startup": startup,
        "speedup": ratio, "speedup_with_startup": local_seconds / (ray_seconds + overhead),
        "target_speedup": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
        # exact equality needs equal torch thread counts; the local run may use more threads than a worker
        "same_metrics": same, "largest_metric_difference": difference, "ray_version": metadata.version("ray"),
        "provenance": provenance(torch.device("cpu")),
    }
    log(f"local {local_seconds:.1f} s, Ray ({workers} workers) {ray_seconds:.1f} s: {ratio:.2f}x "
        f"({results['speedup_with_startup']:.2f}x counting Ray's start-up of {overhead:.1f} s); "
        f"target {TARGET_RATIO}x {'met' if results['target_met'] else 'NOT met'}; same metrics: {same}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {out}")
    return results
