"""robustbench-leak: robustness-vs-accuracy leaderboards for windowed large-kernel CNNs.

Python API (``import robustbench_leak as rb``): ``rb.evaluate(model, ...)`` runs any ``nn.Module`` through
the same cells as ``rbleak run``; ``rb.load_results(path)`` gives a run folder's results as tidy
DataFrames, whose columns ``rb.COLUMNS`` defines. Both import their dependencies on first use.
``rb.register_attack``, ``rb.register_model``, ``rb.register_dataset`` and ``rb.Metric`` extend it
(docs/extending.md).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["COLUMNS", "Attack", "AttackResult", "Metric", "Results", "evaluate", "load_results", "register_attack",
           "register_dataset", "register_model"]
# the public names for extending the package (docs/extending.md), and the modules that hold them
_EXTENDING = {"Attack": "attacks", "AttackResult": "attacks", "register_attack": "attacks", "Metric": "metrics",
              "register_model": "models", "register_dataset": "data"}


def __getattr__(name: str) -> Any:  # lazy: `import robustbench_leak` stays cheap for the CLI and workers
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    if name in ("COLUMNS", "Results", "load_results"):
        from . import results

        return getattr(results, name)
    if name in _EXTENDING:
        import importlib

        return getattr(importlib.import_module(f".{_EXTENDING[name]}", __name__), name)
    raise AttributeError(f"module 'robustbench_leak' has no attribute {name!r}")
