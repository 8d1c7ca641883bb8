"""The driver: the one process that writes a run's store.

It plans the grid, decides from the store which cells are missing, hands the executor jobs (train jobs
first, each eval job depending on its train job), and writes every outcome the executor streams back:
a finished cell in one transaction, a failed one as 'failed' with its error. A driver killed mid-run
loses nothing already written, and the same command resumes: finished cells are skipped. It stores
records and returns; leaderboards are rendered from the store by ``robustbench_leak.pipeline``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import Config
from ..models.checkpoints import default_cache_dir
from ..options import nearest_existing
from ..store import STORE_NAME, StoreReader, StoreWriter
from .deadline import Deadline, TimeLimitReached, before_backstop
from .executor import Executor, Job, LocalExecutor, Outcome
from .lock import locked_out_dir
from .plan import interleave, plan, run_cell_rows
from .progress import CellProgress
from .tasks import EvalTask, RunContext, TrainTask, cell_label
from .provenance import provenance

logger = logging.getLogger(__name__)

Log = Callable[[str], None]


class CellsFailed(RuntimeError):
    """Some cells of a run failed (each is stored as 'failed' with its error); the rest finished."""

    def __init__(self, out: Path, failed: list[Outcome], total: int) -> None:
        self.out = out
        self.failed = failed
        lines = [f"  {cell_label(o.job.task)}{'' if o.job.record else ' (weights for its evals)'}: {o.error}"
                 for o in failed]
        super().__init__(f"{out}: {len(failed)} of the {total} cells run failed (finished cells are stored; rerun the "
                         "same command to retry the failed ones):\n" + "\n".join(lines))


def make_executor(name: str, address: str | None = None, where: str = "config",
                  connect_timeout: float = 10.0) -> Executor:
    """The executor a config names (``where``: the config's path, for messages)."""
    if name == "local":
        if address:
            raise ValueError(f"{where}: address: only the ray executor joins a cluster; set executor: ray (or "
                             "--executor ray) or remove the address")
        return LocalExecutor()
    if name == "ray":
        import importlib.util

        from .ray_executor import RAY_MISSING, RayExecutor

        if importlib.util.find_spec("ray") is None:  # before any work, not when the first cell is due
            raise ValueError(f"{where}: executor: ray: {RAY_MISSING}")
        return RayExecutor(address=address, connect_timeout=connect_timeout)
    raise ValueError(f"{where}: executor: unknown executor {name!r}; expected local or ray")


def jobs_to_run(trains: list[TrainTask], evals: list[EvalTask], store: StoreReader, log: Log) -> list[Job]:
    """The missing cells as jobs, in the local order (each train job followed by its eval jobs).

    A train cell already stored keeps the record of the run that trained it; it becomes a job only when
    one of its evals is missing, and then only provides the weights: those its stored cells attacked
    (``stored``: the device it was trained on and its weights' SHA-256, checked by ``cells.train_cell``)."""
    missing_evals: dict[str, int] = {}
    for e in evals:
        if not store.is_done(e.key):
            missing_evals[e.train.key] = missing_evals.get(e.train.key, 0) + 1
    jobs: list[Job] = []
    seen: set[str] = set()
    for task in interleave(trains, evals):
        if task.key in seen:  # two model entries with one recipe are one cell
            continue
        seen.add(task.key)
        if isinstance(task, EvalTask):
            if store.is_done(task.key):
                log(f"[skip] {task.label}: already in the store")
            else:
                jobs.append(Job(task.key, "eval", task, needs=task.train.key))
        elif store.is_done(task.key):
            log(f"[skip] {task.label}: model already in the store")
            if missing_evals.get(task.key):
                stored = {"trained_on": store.trained_on(task.key),
                          "weights_sha256": store.cell_info(task.key).get("weights_sha256")}
                jobs.append(Job(task.key, "train", task, record=False, stored=stored))
        else:
            jobs.append(Job(task.key, "train", task))
    return jobs


def write_outcome(store: StoreWriter, outcome: Outcome, run_id: str, ctx: RunContext) -> None:
    job = outcome.job
    if outcome.state == "failed":
        if job.record:  # a stored train cell that only had to provide weights keeps its record
            store.record_failure(job.key, job.kind, job.task.spec(), run_id, ctx.device_name, outcome.error or "failed",
                                 outcome.traceback)
        return
    if job.kind == "train":
        if outcome.records is None:  # weights only
            return
        store.record_model(job.key, outcome.records["model"])
    cell = outcome.records["cell"]
    store.record_cell(job.key, job.kind, cell["spec"], run_id, cell["device"], cell["started_at"], cell["seconds"],
                      cell.get("metrics"), cell.get("samples"), info=cell.get("info"), intervals=cell.get("intervals"))


def run_cells(config: Config, out_dir: str | Path | None = None, executor: Executor | None = None,
              progress: bool = True, log: Log | None = None, merge_from: Sequence[str | Path] = (),
              deadline: Deadline | None = None, claims: str | None = None) -> Path:
    """Run every missing cell of ``config`` and store it in ``out_dir`` (absolute from here on); returns it.

    ``executor``: default from the config's ``executor:`` key; ``merge_from``: stores (or run folders) of
    other runs, e.g. the same config run seed by seed on other machines, whose finished cells of this plan
    are copied in before anything is computed; ``deadline``: stop cleanly before it (``TimeLimitReached``;
    the run is stored as interrupted). Raises ``OutDirLocked`` when another run holds ``out_dir``, and
    ``CellsFailed`` (after storing everything else) when some cells failed."""
    log = log or logger.info
    executor = executor or make_executor(config.run.executor, config.run.address, config.path,
                                         config.run.connect_timeout)
    out = (Path(out_dir) if out_dir else Path("runs") / config.name).expanduser().resolve()
    if deadline is not None and getattr(executor, "name", "local") != "local":
        raise ValueError(f"--time-limit: only the local executor stops at a time limit ({config.path} runs on "
                         f"{executor.name}); use --executor local")
    trains, evals = plan(config)
    rows = run_cell_rows(trains, evals)
    check_merge_sources(config, rows, merge_from)
    _check_cache_dir(config, out)
    getattr(executor, "preflight", lambda: None)()  # e.g. Ray: is the cluster there? (before any record)
    with locked_out_dir(out):
        return _run_locked(config, trains, evals, rows, out, executor, progress, log, merge_from, deadline, claims)


def _interrupt_run(out: Path, run_id: str) -> None:
    """Store run ``run_id`` as interrupted, from the hard stop's thread (``run.deadline.Backstop``): its own
    connection, waiting briefly for a cell being written, as the process ends right after."""
    store = StoreWriter(out / STORE_NAME, timeout=5)
    try:
        store.interrupt_run(run_id)
    finally:
        store.conn.close()  # no WAL checkpoint: the main thread's connection may still be reading


def record_looks(out: Path, run_id: str, looks: str) -> None:
    """Store the looks of a sequential run so far (JSON, sequential_run.py) on its run ``run_id``."""
    with StoreWriter(Path(out) / STORE_NAME) as store:
        store.record_looks(run_id, looks)


def check_merge_sources(config: Config, rows: list[dict[str, Any]], merge_from: Sequence[str | Path]) -> None:
    """``ValueError`` naming the first source that holds a cell this config does not plan (``rows``: its
    ``run_cell_rows``; a shard of another config, or of an earlier version of this one): merged results are
    the cells the config plans."""
    if not merge_from:
        return
    planned = {(r["kind"], r["cell_key"], r["model"], r["dataset"], r["seed"], r["attack"]) for r in rows}
    for source_path in merge_from:
        with StoreReader(source_path) as source:
            rows = source.planned_cells()
        for r in rows.itertuples():
            attack = None if r.attack is None or r.attack != r.attack else r.attack
            if (r.kind, r.cell_key, r.model, r.dataset, int(r.seed), attack) not in planned:
                what = f"model {r.model!r}" + (f", attack {attack!r}" if attack else "") + f", seed {r.seed}"
                raise ValueError(f"--merge: {source_path}: a shard of another config ({r.config_path or r.config_name}): "
                                 f"it holds a cell {config.path} does not plan ({what}); merge only shards of this "
                                 "config (rbleak run CONFIG --seeds S)")


def _run_locked(config: Config, trains: list[TrainTask], evals: list[EvalTask], rows: list[dict[str, Any]],
                out: Path, executor: Executor, progress: bool, log: Log, merge_from: Sequence[str | Path] = (),
                deadline: Deadline | None = None, claims: str | None = None) -> Path:
    # every cell of a run shares this; on another machine, only what is in here is known
    ctx = RunContext(device_name=config.run.device, cache_dir=str(_cache_dir(config, out).resolve()),
                     progress=progress and getattr(executor, "cell_progress_bars", True), deadline=deadline)
    prov = provenance(ctx.device)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    store = StoreWriter(out / STORE_NAME)
    failed: list[Outcome] = []
    with before_backstop(lambda: _interrupt_run(out, run_id)):
        try:
            store.start_run(run_id, config_name=config.name, config_path=config.path, config_hash=config.config_hash(),
                            config_yaml=config.text, device=prov["device"], versions=prov["versions"],
                            git_commit=prov["git_commit"], command=prov["command"], claims=claims)
            store.add_run_cells(run_id, rows)
            (out / "config.yaml").write_text(config.text)
            log(f"run {run_id}: {len(trains)} train cells, {len(evals)} eval cells -> {out}")
            keys = [t.key for t in trains] + [e.key for e in evals]
            for source_path in merge_from:
                with StoreReader(source_path) as source:
                    log(f"[merge] {store.import_finished(source, keys)} finished cells of this plan copied from "
                        f"{source.path}")
            jobs = jobs_to_run(trains, evals, store, log)
            display = CellProgress(len(jobs), enabled=progress and bool(jobs), log=log, stream=sys.stdout)
            outcomes = executor.execute(jobs, ctx, log)
            try:
                for outcome in outcomes:
                    for line in outcome.logs:
                        log(line)
                    if outcome.state == "started":
                        display.started(outcome.job.key)
                        continue
                    write_outcome(store, outcome, run_id, ctx)
                    if outcome.state == "failed":
                        failed.append(outcome)
                        log(f"[failed] {cell_label(outcome.job.task)}: {outcome.error}")
                    display.finished(outcome.job.key, outcome.state == "done")
            finally:
                getattr(outcomes, "close", lambda: None)()  # a generator executor cleans up now (Ray: cancels)
                display.close()
        except BaseException as exc:
            stopped = isinstance(exc, (KeyboardInterrupt, SystemExit, TimeLimitReached))
            store.finish_run(run_id, status="interrupted" if stopped else "failed")
            store.close()
            raise
    store.finish_run(run_id, status="failed" if failed else "done")
    store.close()
    (out / "provenance.json").write_text(json.dumps({**prov, "run_id": run_id, "config": config.path,
                                                     "config_hash": config.config_hash(),
                                                     "seeds": config.run.seeds,
                                                     "executor": getattr(executor, "name", type(executor).__name__)},
                                                    indent=2) + "\n")
    if failed:
        raise CellsFailed(out, failed, len(jobs))
    return out


WEIGHTS_DIR = "weights"  # a run folder's published weights, one file per train key


def _check_cache_dir(config: Config, out: Path) -> None:
    """The checkpoint cache is a folder, or can be made one: refused in one line naming where it came from
    (the config's ``cache_dir``, ``RBLEAK_CACHE_DIR`` or the default) before the run is recorded."""
    path = _cache_dir(config, out)
    probe = nearest_existing(path)
    if probe.exists() and not probe.is_dir():
        source = (f"{config.path}: cache_dir" if config.run.cache_dir and path != out / WEIGHTS_DIR
                  else "RBLEAK_CACHE_DIR" if os.environ.get("RBLEAK_CACHE_DIR") else "the default checkpoint cache")
        raise ValueError(f"{source}: {path}: {probe} is a file; a folder for trained weights is expected")


def _cache_dir(config: Config, out: Path) -> Path:
    """Where the run's trained weights are looked up and saved: the run folder's ``weights/`` when it has
    one (weights published beside the store, so anyone can re-attack them and a rerun reuses them; each
    eval cell records the SHA-256 of the weights it attacked), else the config's cache_dir or the default."""
    if (out / WEIGHTS_DIR).is_dir():
        return out / WEIGHTS_DIR
    return Path(config.run.cache_dir).expanduser() if config.run.cache_dir else default_cache_dir()
