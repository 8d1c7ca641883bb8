"""Stored results as tidy pandas DataFrames: ``load_results(path)`` for notebooks and scripts.

It reads run folders through the same loader as ``rbleak leaderboard`` (the newest finished result of
every cell, whichever run in the folder computed it), and names every column once, in ``COLUMNS``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .report.loader import load_runs
from .store import StoreReader

# every column of every table, defined once (docs/python-api.md lists the same, checked by a test)
COLUMNS: dict[str, dict[str, str]] = {
    "metrics": {
        "run": "run folder the row comes from (its name; made unique when several folders share one)",
        "model": "model name from the run config (or evaluate's name)",
        "arch": "registered architecture, timm:<name>, or user-module for evaluate's own nn.Module",
        "dataset": "dataset the model was evaluated on",
        "seed": "training seed (for evaluate: the seed of the attacks' random numbers)",
        "attack": "attack label from the config (a preset name unless relabelled)",
        "metric": "metric name, e.g. accuracy, rho_mean, robust_accuracy (docs/attacks.md defines each)",
        "value": "the metric's value in this cell",
        "lo": "lower end of the 95% bootstrap interval over the test images (empty when the metric has none)",
        "hi": "upper end of the same interval",
        "interval": "what lo/hi cover: 'images' (test-set sampling of this one cell), or empty",
        "device": "device the cell ran on",
        "finished_at": "when the cell finished (UTC, ISO 8601)",
        "cell_key": "content hash of the cell's spec (its identity in the store)",
        "train_key": "content hash of the model's training recipe or loaded weights",
    },
    "samples": {
        "run": "run folder", "model": "model name", "dataset": "dataset", "seed": "training seed",
        "attack": "attack label",
        "idx": "index of the image in the test set",
        "label": "true class",
        "clean_pred": "prediction on the clean image",
        "adv_pred": "prediction after the attack",
        "l2": "L2 norm of the perturbation (minimum-norm attacks; else empty)",
        "rho": "l2 / ||x||_2 (minimum-norm attacks; else empty)",
        "hf_share": "share of the perturbation's energy above half-Nyquist (minimum-norm attacks)",
        "centroid": "energy-weighted mean radial frequency of the perturbation, cycles per pixel",
        "linf": "L-inf norm of the perturbation (minimum-norm attacks and AutoAttack; empty where none is recorded)",
        "broken_by": "AutoAttack: the member that broke the image first (empty: robust, or misclassified clean)",
        "cell_key": "the cell the row belongs to",
    },
    "models": {
        "run": "run folder", "model": "model name", "dataset": "dataset", "seed": "training seed",
        "arch": "architecture", "kernel": "spatial kernel sizes of its convolutions",
        "window": "window multiplied into its spatial kernels ('none' for plain ones)",
        "params": "trainable parameters (the fixed input normalisation excluded)",
        "flops": "FLOPs of one forward pass on one image (PyTorch's FLOP counter)",
        "options": "the architecture's options (a dict)",
        "checkpoint": "the weights file: the checkpoint cache's, or the loaded checkpoint: file",
        "trained_on": "device it was trained on (empty for loaded weights)",
        "train_seconds": "training time in seconds (empty for cached or loaded weights)",
        "protocol": "the run config's description (e.g. 'CPU-scale protocol: ...'), empty if it has none",
        "train_key": "content hash of the training recipe or loaded weights",
    },
    "runs": {
        "run": "run folder", "run_id": "the run's id (start time and a random suffix)",
        "config_name": "the config's name", "config_path": "the config file the run read",
        "config_hash": "hash of the config's text", "device": "device the run used",
        "git_commit": "commit of the code that ran", "command": "the command line",
        "started_at": "start (UTC)", "finished_at": "end (UTC)",
        "status": "done, failed, interrupted or running (never finished)",
    },
}


class Results:
    """Tidy tables of one or more run folders; ``COLUMNS[<table>]`` defines every column.

    ``metrics``: one row per (run, model, dataset, seed, attack, metric); ``models``: one per (run, model,
    dataset, seed); ``runs``: one per run recorded in the folders (a resumed folder holds several);
    ``samples``: one per (run, model, dataset, seed, attack, test image), read on first use (it can hold
    millions of rows)."""

    def __init__(self, metrics: pd.DataFrame, models: pd.DataFrame, runs: pd.DataFrame,
                 stores: list[tuple[str, Path]]) -> None:
        self.metrics, self.models, self.runs = metrics, models, runs
        self._stores = stores
        self._samples: pd.DataFrame | None = None

    @property
    def samples(self) -> pd.DataFrame:
        if self._samples is None:
            parts = []
            for label, path in self._stores:
                with StoreReader(path) as store:
                    s = store.newest_samples()
                s.insert(0, "run", pd.Categorical.from_codes(np.zeros(len(s), dtype=np.int8), categories=[label]))
                parts.append(s)
            self._samples = _lean_concat(parts, list(COLUMNS["samples"]))
        return self._samples

    def __repr__(self) -> str:
        return (f"Results({len(self.metrics)} metric rows, {len(self.models)} models, {len(self.runs)} runs; "
                "per-image rows in .samples)")


def _json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) and text else {}


def load_results(path: str | Path | Sequence[str | Path]) -> Results:
    """The stored results of a run folder (or its ``results.sqlite``), or of several, as tidy DataFrames."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    runs = load_runs(paths)
    metrics, models, records = [], [], []
    for run in runs:
        m = run.results.copy()
        m["interval"] = m["lo"].notna().map({True: "images", False: None})
        metrics.append(m)
        md = run.models.copy()
        md.insert(0, "run", run.label)
        md["options"] = md["options"].map(_json)
        md["protocol"] = run.description()
        models.append(md)
        records += [{"run": run.label, **r} for r in run.runs.values()]
    return Results(metrics=_frame(metrics, "metrics"), models=_frame(models, "models"),
                   runs=_frame([pd.DataFrame(records)], "runs"), stores=[(r.label, r.path) for r in runs])


def _lean_concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Per-image frames of several stores in one, keeping categorical columns categorical (their categories
    united) and the small integer types; ``columns`` in that order."""
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    if len(parts) > 1:
        from pandas.api.types import union_categoricals

        for col in columns:
            if all(isinstance(p[col].dtype, pd.CategoricalDtype) for p in parts):
                united = union_categoricals([p[col] for p in parts]).categories
                parts = [p.assign(**{col: p[col].cat.set_categories(united)}) for p in parts]
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame[columns].reset_index(drop=True)


def _frame(parts: list[pd.DataFrame], table: str) -> pd.DataFrame:
    columns = list(COLUMNS[table])
    parts = [p for p in parts if not p.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame.reindex(columns=columns).reset_index(drop=True)


__all__ = ["COLUMNS", "Results", "load_results"]
