"""How grid cells are executed: jobs go in, outcomes stream out; the driver writes what comes back.

A ``Job`` is one cell to compute: a train job, or an eval job that ``needs`` a train job's weights (its
one dependency). An executor runs a train job before the eval jobs that need it, hands them its weights
(in memory here, through Ray's object store in ``ray_executor``), and yields an ``Outcome`` per job as it
starts and as it finishes. A cell that raises is an outcome with an ``error``, never an exception of
the executor: the rest of the grid goes on. Executors never open the results store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from .deadline import TimeLimitReached
from .tasks import RunContext, Task, TrainTask

logger = logging.getLogger(__name__)

Log = Callable[[str], None]
DEPENDENCY_FAILED = "its model failed to train"


@dataclass(frozen=True)
class Job:
    key: str  # the cell key
    kind: str  # "train" | "eval"
    task: Task  # the planned task (run/tasks.py)
    record: bool = True  # a train job whose records are stored already only provides weights
    needs: str | None = None  # an eval job: the key of the train job whose weights it attacks
    stored: dict[str, Any] | None = None  # a weights-only train job: the stored model's trained_on, weights_sha256


@dataclass
class Outcome:
    job: Job
    state: str  # "started" | "done" | "failed"
    records: dict[str, Any] | None = None  # what the cell returned (run/cells.py); None unless done
    error: str | None = None  # one line, when failed
    traceback: str | None = None
    logs: list[str] = field(default_factory=list)  # lines the cell logged that were not shown yet
    seconds: float | None = None


class Executor(Protocol):
    def execute(self, jobs: Sequence[Job], ctx: RunContext, log: Log) -> Iterator[Outcome]:
        """Run every job, each train job before the eval jobs that need it; yield a "started" outcome when
        a job starts (where the executor knows) and a "done" or "failed" one when it ends."""
        ...


def run_job(job: Job, ctx: RunContext, weights: Any, log: Log | None = None,
            fresh: bool = False) -> tuple[Outcome, Any]:
    """Run one cell, catching what it raises: ``(outcome, weights)``; a train job's weights, else None.

    ``log``: where the cell's lines go as they happen; without one they are kept in ``outcome.logs``."""
    from . import cells

    lines: list[str] = []
    sink = log or lines.append
    t0 = time.perf_counter()
    try:
        if job.kind == "train":
            records, weights = cells.train_cell(job.task, ctx, record=job.record, log=sink, fresh=fresh,
                                                stored=job.stored)
        else:
            records, weights = cells.eval_cell(job.task, ctx, weights, log=sink), None
    except TimeLimitReached:
        raise  # not the cell's failure: the run stops here, and the same command resumes it
    except Exception as exc:  # noqa: BLE001 - a failing cell is recorded, and the grid goes on
        return Outcome(job, "failed", error=cells.describe_error(exc), traceback=cells.format_traceback(exc),
                       logs=lines, seconds=time.perf_counter() - t0), None
    return Outcome(job, "done", records=records, logs=lines, seconds=time.perf_counter() - t0), weights


def dependency_failed(job: Job) -> Outcome:
    return Outcome(job, "failed", error=DEPENDENCY_FAILED)


class WeightLedger:
    """The trained weights an executor holds (``weights``: train key -> weights, or a handle to them):
    kept from a train job's end while evals of it remain, dropped after its last eval. ``failed``: train
    jobs that failed, whose evals fail without running."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.remaining: dict[str, int] = {}
        for job in jobs:
            if job.needs:
                self.remaining[job.needs] = self.remaining.get(job.needs, 0) + 1
        self.weights: dict[str, Any] = {}
        self.failed: set[str] = set()

    def settle(self, job: Job, state: str, weights: Any = None) -> None:
        """Account for a job that ended in ``state``; ``weights``: what a train job produced."""
        if job.kind == "train":
            if state == "failed":
                self.failed.add(job.key)
            elif self.remaining.get(job.key):
                self.weights[job.key] = weights
        elif job.needs is not None:
            self.remaining[job.needs] -= 1
            if not self.remaining[job.needs]:
                self.weights.pop(job.needs, None)  # its last eval is done: nothing needs these weights now


class LocalExecutor:
    """Sequential, in this process, in the jobs' order (the default; a 2-core machine gains little from more).

    Weights stay in memory from a train job to its evals and are dropped after its last eval. Train jobs
    that ``training.pack`` allows train together when the first of them comes up (``run/packing.py``)."""

    name = "local"

    def execute(self, jobs: Sequence[Job], ctx: RunContext, log: Log) -> Iterator[Outcome]:
        ledger = WeightLedger(jobs)
        deadline = ctx.deadline
        packs = _plan_packs(jobs, ctx, log)
        fresh: set[str] = set()
        # seconds the last eval cell of each attack took: what the next one is expected to take (a training
        # stops at its own epoch boundaries)
        took: dict[str, float] = {}
        for job in jobs:
            sort = "train" if isinstance(job.task, TrainTask) else f"eval {job.task.attack_label}"
            if deadline is not None and (deadline.remaining() <= 0
                                         or (sort in took and not deadline.allows(took[sort]))):
                model = job.task.model if isinstance(job.task, TrainTask) else job.task.train.model
                raise TimeLimitReached(f"the time limit came before this cell: {job.kind} {model}")
            if job.needs in ledger.failed:
                yield dependency_failed(job)
                continue
            if job.needs is not None and job.needs not in ledger.weights:
                raise RuntimeError(f"eval job {job.key} comes before the train job {job.needs} it needs")
            yield Outcome(job, "started")
            if job.key in packs:
                fresh |= _train_pack(packs.pop(job.key), ctx, log)
            started = time.perf_counter()
            outcome, result = run_job(job, ctx, ledger.weights.get(job.needs) if job.needs else None, log,
                                      fresh=job.key in fresh)
            if sort != "train":
                took[sort] = time.perf_counter() - started
            ledger.settle(job, outcome.state, result)
            yield outcome


def _plan_packs(jobs: Sequence[Job], ctx: RunContext, log: Log) -> dict[str, list[TrainTask]]:
    if not any(j.kind == "train" and j.task.training.pack not in ("off", 1) for j in jobs):
        return {}
    from .packing import plan_packs

    try:
        return plan_packs(jobs, ctx, log)
    except Exception as exc:  # noqa: BLE001 - packing is an optimisation: without it every cell still runs
        log(f"[pack] not packing ({type(exc).__name__}: {str(exc)[:200]}); training each model alone")
        return {}


def _train_pack(tasks: list[TrainTask], ctx: RunContext, log: Log) -> set[str]:
    from .packing import train_pack

    try:
        return train_pack(tasks, ctx, log)
    except TimeLimitReached:
        raise
    except Exception as exc:  # noqa: BLE001 - the members then train alone, each failing or not on its own
        log(f"[pack] the pack failed ({type(exc).__name__}: {str(exc)[:200]}); training its models alone")
        return set()
