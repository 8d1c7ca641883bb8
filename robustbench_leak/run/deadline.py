"""A run's time limit (``rbleak run --time-limit SECONDS``): stop cleanly before it, resumable.

The limit is an absolute wall-clock time (``time.time()``), so it crosses process boundaries inside a
run's ``RunContext`` as plain numbers. Work stops at safe points: the driver starts no cell once too little
time is left, and a training stops at an epoch boundary when the next epoch would not end in time,
after writing an epoch checkpoint (``run.training.train_model``). Both raise ``TimeLimitReached``; the run is
stored as 'interrupted' and ``rbleak run`` exits with ``EXIT_TIME_LIMIT``. Rerunning the same command
resumes: finished cells are skipped and a half-trained model continues from its epoch checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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
    def after(cls, seconds: float) -> "Deadline":
        if not seconds > 0:
            raise ValueError(f"--time-limit: {seconds!r}: must be a positive number of seconds")
        return cls(_now() + seconds, min(MARGIN_MAX_S, MARGIN_SHARE * seconds))

    def remaining(self) -> float:
        return self.at - self.margin - _now()

    def allows(self, seconds: float) -> bool:
        """Whether work expected to take ``seconds`` (scaled by ``SAFETY``) ends before the limit."""
        return self.remaining() > SAFETY * seconds
