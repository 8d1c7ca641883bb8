"""Run a config's grid: the public entry points, kept in one place.

The work is split by concern: ``plan`` (config -> train and eval tasks, pure), ``cells`` (what one
cell computes, returning records; no store access), ``executor`` / ``ray_executor`` (where cells run)
and ``driver`` (the only writer of the results store). Finished cells are skipped, which makes a
rerun after a crash recompute only what is missing.
"""

from __future__ import annotations

from .cells import (DEFAULT_FIT_SAMPLES, build_model, describe_kernels, describe_window, ensure_model, eval_cell,
                    fit_split, get_dataset, sanity_checks, train_cell)
from .driver import CellsFailed, make_executor, run_config
from .executor import Executor, Job, LocalExecutor, Outcome
from .plan import (WEIGHTS_VERSION, dataset_spec, eval_key, file_sha256, interleave, loaded_key, plan,
                   train_key)

__all__ = ["DEFAULT_FIT_SAMPLES", "WEIGHTS_VERSION", "CellsFailed", "Executor", "Job", "LocalExecutor", "Outcome",
           "build_model", "dataset_spec", "describe_kernels", "describe_window", "ensure_model", "eval_cell",
           "eval_key", "file_sha256", "fit_split", "get_dataset", "interleave", "loaded_key", "make_executor", "plan",
           "run_config", "sanity_checks", "train_cell", "train_key"]
