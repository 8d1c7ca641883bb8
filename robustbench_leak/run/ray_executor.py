"""Cells as Ray tasks: a local Ray cluster by default, or an existing one by address.

Each train job is a task that returns two objects: its outcome (records, small) and its weights (a CPU
state dict). The weights stay in Ray's object store; an eval task gets them as an argument (Ray moves
them to the eval's node, no shared filesystem needed), and the driver never downloads them. With
``ship_weights=False`` the train task returns no weights and eval tasks load the checkpoint from
``cache_dir``, which must then be on storage every node shares.

Resource requests: when the cluster has GPUs (and the config's device is not ``cpu``), each cell asks
for a whole GPU, or a quarter of one for a model under ``SMALL_MODEL_PARAMS`` parameters; otherwise
it asks for ``cpus_per_cell`` CPUs, and torch in the worker uses that many threads. A worker killed in
the middle of a cell (node lost, out of memory, ``kill -9``) is retried up to ``max_retries`` times; a
cell that raises is not retried: it comes back as a failed outcome. Outcomes stream back to the driver
as cells finish (``ray.wait``). Ray is imported only when this executor runs.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config.address import check_address
from .executor import Job, Log, Outcome, WeightLedger, dependency_failed, run_job
from .tasks import RunContext, TrainTask

SMALL_MODEL_PARAMS = 1_000_000  # below this (CPU-scale models), a cell shares a GPU with up to three others
SMALL_MODEL_GPU_SHARE = 0.25
KILL_DIR_ENV = "RBLEAK_TEST_KILL_DIR"  # tests only: see _test_kill_hook


# joins the cluster in a child process, so that a connection that hangs can be ended at the deadline
_PROBE = ("import sys, ray; print('imported', flush=True); "
          "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); print('connected', flush=True); "
          "ray.shutdown()")


def probe_address(address: str, timeout: float) -> None:
    """``ValueError`` unless a Ray cluster at ``address`` accepts a driver within ``timeout`` seconds: first
    a TCP connection, then ``ray.init`` in a child process (its ``import ray`` is not counted)."""
    def unreachable(reason: str) -> ValueError:
        return ValueError(f"--address {address}: no Ray cluster reachable there within {timeout:g} s ({reason}); "
                          "check the address, start one (ray start --head), or raise --connect-timeout")

    started = time.monotonic()
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise unreachable("no answer" if isinstance(exc, (socket.timeout, TimeoutError))
                          else exc.strerror or str(exc)) from None
    left = max(0.1, timeout - (time.monotonic() - started))
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, address], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line.strip())
        lines.put("")  # the child ended

    threading.Thread(target=read, daemon=True).start()
    try:
        try:
            imported = lines.get(timeout=120) == "imported"
        except queue.Empty:
            imported = False
        if not imported:
            raise ValueError("executor ray: 'import ray' failed or took over 120 s in a child process")
        try:
            answer = lines.get(timeout=left)  # the clock for the cluster starts after the import
        except queue.Empty:
            raise unreachable("it accepts connections but did not answer as a Ray cluster") from None
        if answer != "connected":
            raise unreachable("it is not a Ray cluster, or refused this driver")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class RayExecutor:
    name = "ray"
    cell_progress_bars = False  # workers' bars would interleave on the driver's terminal

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_cell: int = 1,
                 max_retries: int = 2, ship_weights: bool = True, connect_timeout: float = 10.0) -> None:
        if address is not None:
            address = check_address(address, "address")
        if not 0 < connect_timeout <= 3600:
            raise ValueError(f"connect_timeout: must be between 0 and 3600 seconds, got {connect_timeout}")
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus: must be >= 1, got {num_cpus}")
        if cpus_per_cell < 1:
            raise ValueError(f"cpus_per_cell: must be >= 1, got {cpus_per_cell}")
        if not 0 <= max_retries <= 10:
            raise ValueError(f"max_retries: must be between 0 and 10, got {max_retries}")
        self.address, self.num_cpus, self.cpus_per_cell = address, num_cpus, cpus_per_cell
        self.max_retries, self.ship_weights = max_retries, ship_weights
        self.connect_timeout = connect_timeout

    def preflight(self) -> None:
        """Before any work: Ray importable, and the cluster named by the address (else ``RAY_ADDRESS``)
        reachable within ``connect_timeout`` seconds; a local cluster needs no check."""
        if import_ray().is_initialized():  # connect() uses the Ray this process already joined
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address and address != "auto":
            probe_address(check_address(address, "RAY_ADDRESS" if not self.address else "--address"),
                          self.connect_timeout)

    # connection ---------------------------------------------------------------------------------
    def connect(self, ray: Any) -> bool:
        """Join ``address`` (else ``RAY_ADDRESS``), or start a local cluster; True when started here.

        A Ray already initialised in this process (a test's fixture, a notebook) is used as it is."""
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False)  # None: Ray counts the machine's CPUs
        return True

    def resources(self, task: TrainTask, ctx: RunContext, gpus: float) -> dict[str, float]:
        if gpus > 0 and ctx.device_name != "cpu":
            return {"num_cpus": 1, "num_gpus": gpu_share(task)}
        return {"num_cpus": self.cpus_per_cell, "num_gpus": 0}

    # execution ----------------------------------------------------------------------------------
    def execute(self, jobs: Sequence[Job], ctx: RunContext, log: Log) -> Iterator[Outcome]:
        if not jobs:  # every cell is stored already: no cluster to start
            return
        ray = import_ray()
        started_here = self.connect(ray)
        inflight: dict[Any, Job] = {}
        try:
            cluster = ray.cluster_resources()
            gpus = float(cluster.get("GPU", 0))
            # as many cells in flight as the cluster runs at once, so 'running' means running
            slots = max(1, int(cluster.get("CPU", 1)) // self.cpus_per_cell)
            log(f"ray: {int(cluster.get('CPU', 0))} CPUs, {gpus:g} GPUs; up to {slots} cells at once")
            train_fn = ray.remote(_train_task)
            eval_fn = ray.remote(_eval_task)
            common = {"max_retries": self.max_retries, "retry_exceptions": False}
            pending = list(jobs)
            ledger = WeightLedger(jobs)  # its weights: ObjectRefs, freed by Ray once dropped
            unclaimed: dict[str, Any] = {}  # train key -> ObjectRef of its weights, for train tasks still running
            while pending or inflight:
                i = 0
                while i < len(pending) and len(inflight) < slots:
                    job = pending[i]
                    if job.needs in ledger.failed:
                        pending.pop(i)
                        yield dependency_failed(job)
                        continue
                    if job.kind == "eval" and job.needs not in ledger.weights:
                        i += 1  # its train task has not finished yet
                        continue
                    pending.pop(i)
                    opts = {**common, **self.resources(job.task if job.kind == "train" else job.task.train,
                                                       ctx, gpus)}
                    if job.kind == "train":
                        ref, unclaimed[job.key] = train_fn.options(num_returns=2, **opts).remote(
                            job, ctx, self.ship_weights)
                    else:
                        ref = eval_fn.options(**opts).remote(job, ctx, ledger.weights[job.needs])
                    inflight[ref] = job
                    yield Outcome(job, "started")
                if not inflight:
                    if pending:
                        raise RuntimeError(f"eval job {pending[0].key} needs train job {pending[0].needs}, "
                                           "which is not in this run's jobs")
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    job = inflight.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # retries used up, or the task could not run
                        outcome = _lost(job, exc, self.max_retries)
                    ledger.settle(job, outcome.state, unclaimed.pop(job.key) if job.kind == "train" else None)
                    yield outcome
        finally:
            for ref in inflight:  # interrupted: stop what still runs
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort; shutdown below ends them too
                    pass
            if started_here:
                ray.shutdown()


RAY_MISSING = ("Ray is not installed (an optional extra): pip install 'robustbench-leak[ray]', or use executor: "
               "local")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(f"executor: ray: {RAY_MISSING}") from None
    return ray


def gpu_share(task: TrainTask) -> float:
    """A GPU for a model of ``SMALL_MODEL_PARAMS`` or more (every paper-scale model), else a quarter of one
    (a CPU-scale model leaves most of a GPU idle); a model whose size cannot be counted without loading
    data gets a whole one."""
    from ..data import get_dataset_entry
    from ..models.match import params_of

    ds = task.dataset
    entry = get_dataset_entry(ds["name"])
    if entry.shape is None:
        return 1.0
    in_chans, num_classes, _ = entry.shape({**entry.options(), **ds["options"]})
    params = params_of(task.arch, task.options, in_chans, num_classes)
    return 1.0 if params >= SMALL_MODEL_PARAMS else SMALL_MODEL_GPU_SHARE


def _lost(job: Job, exc: Exception, retries: int) -> Outcome:
    from .cells import describe_error, format_traceback

    what = "worker died" if type(exc).__name__ in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError") \
        else "task could not run"
    return Outcome(job, "failed", error=f"{what} ({retries} retries used): {describe_error(exc)}",
                   traceback=format_traceback(exc))


# ------------------------------------------------------------------------------------------------
# what runs in a worker
def _worker_setup(kind: str) -> None:
    import ray
    import torch

    _test_kill_hook(kind)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def _test_kill_hook(kind: str) -> None:
    """Tests only: with ``RBLEAK_TEST_KILL_DIR`` set, the first ``kind`` cell to find the file
    ``kill-<kind>`` there claims it (renames it ``killed-<kind>``) and kills its worker process."""
    folder = os.environ.get(KILL_DIR_ENV)
    if not folder:
        return
    armed = Path(folder) / f"kill-{kind}"
    try:
        os.rename(armed, armed.with_name(f"killed-{kind}"))
    except FileNotFoundError:
        return
    os._exit(1)


def _train_task(job: Job, ctx: RunContext, ship_weights: bool) -> tuple[Outcome, Any]:
    _worker_setup("train")
    outcome, weights = run_job(job, ctx, None)
    return outcome, (weights if ship_weights else None)


def _eval_task(job: Job, ctx: RunContext, weights: Any) -> Outcome:
    _worker_setup("eval")
    outcome, _ = run_job(job, ctx, weights)
    return outcome
