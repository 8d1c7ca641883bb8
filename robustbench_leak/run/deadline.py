"""A run's time limit (``rbleak run --time-limit SECONDS``, ``run_config(time_limit=...)``,
``evaluate(time_limit=...)``): stop cleanly before it, resumable.

The limit is an absolute wall-clock time (``time.time()``), so it crosses process boundaries inside a
run's ``RunContext`` as plain numbers. Work stops at safe points: the driver starts no cell once too little
time is left, and a training stops at an epoch boundary when the next epoch would not end in time,
after writing an epoch checkpoint (``run.training.train_model``). Both raise ``TimeLimitReached``; the run is
stored as 'interrupted' and ``rbleak run`` exits with ``EXIT_TIME_LIMIT``. Rerunning the same command
resumes: finished cells are skipped and a half-trained model continues from its epoch checkpoint.

The soft stop is a check of the clock at those boundaries, in the run's own frames: no exception is
raised into arbitrary frames, where cleanup code (a ``__del__``, a weakref callback) would swallow it.
Work that overruns the soft checks (a long eval cell) meets the ``Backstop`` of a process that owns its
run (the CLI): at the limit it ends the process with ``EXIT_TIME_LIMIT``. The store stays consistent (each
cell is one SQLite transaction; the unfinished one is simply not stored); just before it ends the process it
calls the ``before_backstop`` hooks, by which the driver stores the run as 'interrupted', as a soft stop does.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

EXIT_TIME_LIMIT = 75  # EX_TEMPFAIL: try again later (the same command resumes)
SAFETY = 1.25  # an epoch (or cell) is expected to take up to this many times the last one
MARGIN_SHARE = 0.02  # kept free at the end of the limit for writing the store and leaderboard ...
MARGIN_MAX_S = 20.0  # ... at most this many seconds


class TimeLimitReached(Exception):
    """The run's time limit came before the work was done; what finished is stored."""


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Deadline:
    at: float  # absolute, time.time() seconds
    margin: float = 0.0  # seconds kept free before ``at``

    @classmethod
    def after(cls, seconds: float, name: str = "--time-limit") -> "Deadline":
        check_time_limit(seconds, name)
        return cls(_now() + seconds, min(MARGIN_MAX_S, MARGIN_SHARE * seconds))

    def remaining(self) -> float:
        return self.at - self.margin - _now()

    def allows(self, seconds: float) -> bool:
        """Whether work expected to take ``seconds`` (scaled by ``SAFETY``) ends before the limit."""
        return self.remaining() > SAFETY * seconds


MAX_TIME_LIMIT_S = 366 * 24 * 3600.0  # a year: beyond it a time limit is a typo


def check_time_limit(seconds: object, name: str = "--time-limit") -> float:
    """``seconds`` as a float when it is a finite number of seconds in (0, ``MAX_TIME_LIMIT_S``]; otherwise
    ``ValueError`` naming ``name``."""
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) \
        and 0 < seconds <= MAX_TIME_LIMIT_S
    if not ok:
        raise ValueError(f"{name}: {str(seconds)[:40]!r}: expected a positive number of seconds up to "
                         f"{MAX_TIME_LIMIT_S:.0f} (a year), e.g. 540")
    return float(seconds)


_BACKSTOP_HOOKS: list[Callable[[], None]] = []


@contextmanager
def before_backstop(hook: Callable[[], None]) -> Iterator[None]:
    """Within the block, a ``Backstop`` that ends the process first calls ``hook`` (from its own thread,
    while the main thread may still be computing; an exception in it is ignored: the process ends anyway)."""
    _BACKSTOP_HOOKS.append(hook)
    try:
        yield
    finally:
        _BACKSTOP_HOOKS.remove(hook)


class Backstop:
    """The hard stop behind the soft checks, for a process that owns its run (the CLI, never a library
    caller's process): a daemon thread that, if it is not cancelled before half the margin ahead of the
    limit, prints one line and ends the process with ``EXIT_TIME_LIMIT`` (``os._exit``: nothing is raised
    in the main thread, so nothing there can swallow it or print a traceback)."""

    def __init__(self, deadline: Deadline, message: str = "") -> None:
        self.deadline = deadline
        self.message = message or ("rbleak: time limit reached in the middle of a cell; finished cells and epoch "
                                   "checkpoints are stored; rerun the same command to resume")
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rbleak-time-limit", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        if self._cancelled.wait(max(0.0, self.deadline.remaining() + self.deadline.margin / 2)):
            return
        try:
            for hook in list(_BACKSTOP_HOOKS):
                try:
                    hook()
                except BaseException:  # the hook is a courtesy; the stop is not
                    pass
            sys.stdout.flush()
            print(self.message, file=sys.stderr, flush=True)
        finally:
            os._exit(EXIT_TIME_LIMIT)

    def cancel(self) -> None:
        """Disarm (every cell is stored, or the run ended otherwise): what follows may finish in peace."""
        self._cancelled.set()
