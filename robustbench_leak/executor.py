"""How grid cells are executed. Cells are plain JSON-able tasks, so any executor can ship them."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol


class Executor(Protocol):
    def map(self, fn: Callable[[dict[str, Any]], Any], tasks: Iterable[dict[str, Any]]) -> Iterator[Any]:
        """Run ``fn`` on every task; tasks are independent and may run in any order."""
        ...


class LocalExecutor:
    """Sequential, in this process (the default; a 2-core machine gains nothing from more)."""

    def map(self, fn: Callable[[dict[str, Any]], Any], tasks: Iterable[dict[str, Any]]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)
