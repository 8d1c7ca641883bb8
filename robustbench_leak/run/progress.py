"""One progress display for a run's cells: done, running, failed and queued.

On a terminal it is one bar (tqdm, on stderr); otherwise (a log file, CI) it is a plain line per finished
cell, through the run's log.
"""

from __future__ import annotations

from typing import Callable, TextIO

from tqdm.auto import tqdm


class CellProgress:
    def __init__(self, total: int, enabled: bool, log: Callable[[str], None], stream: TextIO) -> None:
        self.total, self.enabled, self.log = total, enabled, log
        self.done = self.failed = 0
        self._running: set[str] = set()
        tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, desc="cells", unit="cell", leave=False) if tty else None

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return self.total - self.done - self.failed - self.running

    def line(self) -> str:
        return (f"cells: {self.done} done, {self.running} running, {self.failed} failed, {self.queued} queued "
                f"(of {self.total})")

    def started(self, key: str) -> None:
        self._running.add(key)
        self._show(advance=0)

    def finished(self, key: str, ok: bool) -> None:
        self._running.discard(key)  # a cell that never ran (its model failed) was never started
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self._show(advance=1)
        if self.enabled and self.bar is None:
            self.log(self.line())

    def _show(self, advance: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.running} running, {self.failed} failed, {self.queued} queued",
                                     refresh=False)
            self.bar.update(advance)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
