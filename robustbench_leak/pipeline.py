"""One code path for ``rbleak run`` and the Python API: run a config's missing cells, then render its
leaderboard from the store (``run.driver`` stores records; ``report.leaderboard`` renders them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from .config import Config
from .run.deadline import Deadline
from .run.driver import CellsFailed, run_cells
from .run.executor import Executor

logger = logging.getLogger(__name__)

Log = Callable[[str], None]


def run_config(config: Config, out_dir: str | Path | None = None, executor: Executor | None = None,
               progress: bool = True, log: Log | None = None, formats: Sequence[str] | None = None,
               merge_from: Sequence[str | Path] = (), deadline: Deadline | None = None,
               claim_sets: Sequence = ()) -> Path:
    """Run every missing cell of ``config`` (``run.driver.run_cells``), then write the leaderboard into the
    run folder; returns the folder. ``formats``: leaderboard formats (default all; ``()`` writes none). The
    run records the definition hashes of the shipped claim sets written for the config and of
    ``claim_sets`` (report/registration.py).

    Raises what ``run_cells`` raises; when some cells failed (``CellsFailed``), the leaderboard of the
    cells that finished is written first."""
    import json

    from .report.registration import record, records_for_config

    log = log or logger.info
    records = records_for_config(config.path)
    records += [record(cs) for cs in claim_sets if cs.name not in {r["claim_set"] for r in records}]
    claims = json.dumps(records) if records else None
    try:
        out = run_cells(config, out_dir, executor, progress, log, merge_from, deadline, claims)
    except CellsFailed as failed:
        render_leaderboard(failed.out, formats, log, cells_failed=True)
        raise
    render_leaderboard(out, formats, log)
    return out


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
