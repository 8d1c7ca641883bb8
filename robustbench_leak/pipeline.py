"""One code path for ``rbleak run`` and the Python API: run a config's missing cells, then render its
leaderboard from the store (``run.driver`` stores records; ``report.leaderboard`` renders them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from .config import Config
from .run.deadline import Backstop, Deadline
from .run.driver import CellsFailed, run_cells
from .run.executor import Executor

logger = logging.getLogger(__name__)

Log = Callable[[str], None]


def run_config(config: Config, out_dir: str | Path | None = None, executor: Executor | None = None,
               progress: bool = True, log: Log | None = None, formats: Sequence[str] | None = None,
               merge_from: Sequence[str | Path] = (), deadline: Deadline | None = None,
               time_limit: float | None = None, hard_stop: bool = False, claim_sets: Sequence = ()) -> Path:
    """Run every missing cell of ``config`` (``run.driver.run_cells``), then write the leaderboard into the
    run folder; returns the folder. ``formats``: leaderboard formats (default all; ``()`` writes none). The
    run records the definition hashes of the shipped claim sets written for the config and of
    ``claim_sets`` (report/registration.py).

    ``time_limit``: seconds from now (or ``deadline``, an absolute one): no cell or epoch starts that would
    not end in time; then ``TimeLimitReached`` with everything finished stored (the same call resumes).
    ``hard_stop``: also end this process at the limit when a cell overruns it (``run.deadline.Backstop``;
    for a process that owns its run, as the CLI). Once every cell is stored the limit no longer applies:
    the leaderboard is written however long it takes.

    Raises what ``run_cells`` raises; when some cells failed (``CellsFailed``), the leaderboard of the
    cells that finished is written first."""
    import json

    from .report.registration import record, records_for_config

    log = log or logger.info
    if time_limit is not None:
        if deadline is not None:
            raise ValueError("run_config: give time_limit or deadline, not both")
        deadline = Deadline.after(time_limit, "time_limit")
    backstop = Backstop(deadline) if hard_stop and deadline is not None else None
    records = records_for_config(config.path)
    records += [record(cs) for cs in claim_sets if cs.name not in {r["claim_set"] for r in records}]
    claims = json.dumps(records) if records else None
    try:
        out = run_cells(config, out_dir, executor, progress, log, merge_from, deadline, claims)
    except CellsFailed as failed:
        _cancel(backstop)
        render_leaderboard(failed.out, formats, log, cells_failed=True)
        raise
    finally:
        _cancel(backstop)
    render_leaderboard(out, formats, log)
    return out


def _cancel(backstop: Backstop | None) -> None:
    if backstop is not None:
        backstop.cancel()


def render_leaderboard(out: Path, formats: Sequence[str] | None, log: Log, cells_failed: bool = False) -> list[Path]:
    """The leaderboard files of run folder ``out``; with ``cells_failed``, an empty grid is no error (the
    failures are the news)."""
    from .report.leaderboard import FORMATS, write_outputs

    try:
        written = write_outputs([out], out, formats=tuple(FORMATS if formats is None else formats))
    except ValueError as exc:
        if not cells_failed:
            raise
        log(f"no leaderboard written: {exc}")
        return []
    plots = [p for p in written if p.parent.name == "plots"]
    if written:
        log("wrote " + ", ".join(str(p) for p in written if p not in plots)
            + (f" and {len(plots)} plot files in {out / 'plots'}" if plots else ""))
    return written
