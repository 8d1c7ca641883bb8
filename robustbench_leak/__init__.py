"""robustbench-leak: robustness-vs-accuracy leaderboards for windowed large-kernel CNNs.

Python API (``import robustbench_leak as rb``): ``rb.evaluate(model, ...)`` runs any ``nn.Module`` through
the same cells as ``rbleak run``; ``rb.load_results(path)`` gives a run folder's results as tidy
DataFrames, whose columns ``rb.COLUMNS`` defines. Both import their dependencies on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["COLUMNS", "Results", "evaluate", "load_results"]


def __getattr__(name: str) -> Any:  # lazy: `import robustbench_leak` stays cheap for the CLI and workers
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    if name in ("COLUMNS", "Results", "load_results"):
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module 'robustbench_leak' has no attribute {name!r}")
