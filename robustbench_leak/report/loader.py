"""Everything a leaderboard shows, read from the stores of one or more run folders.

A run folder's store can hold several runs (a resumed run adds one each time). Its leaderboard shows
the newest finished result of every cell (model, dataset, seed, attack), whichever run computed it, so
a later run that failed or was interrupted never hides what earlier runs stored; runs that did not
finish are named in a note. Per-row provenance lists the runs that actually computed each cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..store import STORE_NAME, StoreReader


@dataclass
class RunData:
    label: str  # short name of the run folder, unique among the merged runs
    path: Path  # the store file
    run: dict[str, Any]  # the latest run: its leaderboard is this folder's leaderboard
    runs: dict[str, dict[str, Any]]  # every run in the file, by run_id
    results: pd.DataFrame  # long: one row per (model, dataset, seed, attack, metric)
    models: pd.DataFrame  # one row per trained model (model, dataset, seed, train_key, kernel, history, ...)
    cells: pd.DataFrame  # finished eval cells; 'spec' and 'info' parsed into dicts
    specs: dict[str, dict[str, Any]]  # attack label -> attack spec, in the config's order
    samples: pd.DataFrame  # per-sample rows of minimum-norm attacks (with l2)
    planned_evals: int = 0  # eval cells the latest run planned
    missing_evals: int = 0  # of those, the ones no run has finished
    _config: dict[str, Any] | None = None

    def incomplete(self) -> str:
        """'' when every cell of the latest run has a result, else a sentence saying what is missing."""
        if self.run.get("status") == "done" and self.missing_evals == 0:
            return ""
        done = self.planned_evals - self.missing_evals
        return (f"run {self.label} is not complete ({self.run.get('status') or 'unknown status'}: {done} of "
                f"{self.planned_evals} evaluations finished); missing values show as –")

    def status_notes(self) -> list[str]:
        """What a table of this run must say about its completeness: the latest run, then unfinished ones."""
        return [n for n in (self.incomplete(),) if n] + self.unfinished_runs() + self.weights_conflicts()

    def weights_conflicts(self) -> list[str]:
        """One sentence per trained model (train key) whose eval cells attacked different weights (each eval
        cell records the SHA-256 of the weights it attacked; cells stored before 2026-12-07 have none):
        their numbers do not describe one model, so comparisons over them are flagged."""
        if self.cells.empty or "train_key" not in self.cells:
            return []
        out = []
        hashes = [info.get("weights_sha256") for info in self.cells["info"]]
        frame = self.cells.assign(weights=hashes).dropna(subset=["weights"])
        for _, group in frame.groupby("train_key", sort=False):
            if group["weights"].nunique() < 2:
                continue
            first = group.iloc[0]
            parts = [f"{a} ({w[:12]})" for a, w in zip(group["attack"], group["weights"])]
            out.append(f"WEIGHTS DIFFER: the cells of {first['model']} / {first['dataset']} / seed {first['seed']} "
                       f"attacked different weights under one train key ({', '.join(parts)}); do not compare them "
                       "until they are rerun on one set of weights")
        return out

    def unfinished_runs(self) -> list[str]:
        """One sentence per way earlier runs ended unfinished (the latest run is covered by ``incomplete``),
        naming each such run: a store resumed over many sessions has many interrupted runs."""
        by_status: dict[str, list[tuple[str, dict]]] = {}
        for run_id, run in self.runs.items():
            status = run.get("status") or "unknown"
            if run_id != self.run["run_id"] and status != "done":
                by_status.setdefault(status, []).append((run_id, run))
        out = []
        for status, runs in by_status.items():
            what = {"running": "never finished (killed, or still running)"}.get(status, f"ended {status}")
            if len(runs) == 1:
                run_id, run = runs[0]
                out.append(f"run {run_id} of {self.label} (started {run.get('started_at')}) {what}; the results it "
                           "stored are shown where they are the newest")
            else:
                out.append(f"{len(runs)} runs of {self.label} {what} ({', '.join(r for r, _ in runs)}); the results "
                           "they stored are shown where they are the newest")
        return out

    def description(self) -> str:
        """The config's ``description`` (e.g. "CPU-scale protocol: ..."), which every table of the run repeats."""
        return str(self.config().get("description") or "").strip()[:2000]

    def protocol(self) -> str:
        desc = self.description()
        return f"protocol of run {self.label}: {desc}" if desc else ""

    def flags(self, model: str, dataset: str, attack: str) -> list[str]:
        """Sanity-check flags of a (model, dataset, attack) over seeds, each once, in order."""
        sub = self.cells[(self.cells.model == model) & (self.cells.dataset == dataset) & (self.cells.attack == attack)]
        out: list[str] = []
        for info in sub["info"]:
            for flag in info.get("flags") or []:
                if str(flag) not in out:
                    out.append(str(flag))
        return out

    def config(self) -> dict[str, Any]:
        if self._config is None:  # parsed once: a stored config is read by several tables
            self._config = parse_config(self.run.get("config_yaml"))
        return self._config


def parse_config(config_yaml: str | None) -> dict[str, Any]:
    """A stored run's config text as a dict ({} when missing, not a mapping, or over the config limits:
    a store may come from anywhere, so its config text is parsed with the same bounds as a config file)."""
    from ..config import MAX_CONFIG_BYTES, ConfigError, parse_yaml_text

    if not config_yaml or len(config_yaml) > MAX_CONFIG_BYTES:
        return {}
    try:
        data = parse_yaml_text(config_yaml, "stored config") or {}
    except ConfigError:
        return {}
    return data if isinstance(data, dict) else {}


def config_description(config_yaml: str | None) -> str:
    return str(parse_config(config_yaml).get("description") or "").strip()[:2000]


def store_path(path: str | Path) -> Path:
    path = Path(path)
    return path / STORE_NAME if path.is_dir() else path


def load_run(path: str | Path, label: str | None = None) -> RunData:
    with StoreReader(path) as store:
        run = store.latest_run()
        if run is None:
            raise ValueError(f"{store.path}: the store holds no run")
        run_id = run["run_id"]
        runs = {r["run_id"]: r for r in store.runs().to_dict("records")}
        results = store.newest_results()
        models = store.newest_model_info()
        cells = store.newest_eval_cells()
        samples = store.newest_perturbation_samples()
        order = {label: i for i, label in enumerate(store.attack_order(run_id))}
        planned = store.planned_evals(run_id)
        missing = store.missing_slots(run_id)
    # columns follow the config's attack order, whichever run computed each cell
    cells = cells.sort_values("attack", key=lambda col: col.map(order), kind="stable").reset_index(drop=True)
    cells["spec"] = [json.loads(s) for s in cells["spec"]]
    cells["info"] = [json.loads(i) if i else {} for i in cells["info"]]
    specs: dict[str, dict[str, Any]] = {}
    for attack, spec in zip(cells["attack"], cells["spec"]):
        specs.setdefault(attack, spec["attack"])
    label = label or default_label(Path(path))
    results["run"] = label
    return RunData(label=label, path=store_path(path), run=run, runs=runs, results=results, models=models,
                   cells=cells, specs=specs, samples=samples, planned_evals=planned, missing_evals=missing)


def default_label(path: Path) -> str:
    path = store_path(path)
    return path.parent.name if path.name == STORE_NAME else path.stem


def run_labels(paths: list[Path]) -> list[str]:
    """Folder names, made unique with their parent folder (and a counter) where two are the same."""
    resolved = [store_path(p).resolve() for p in paths]
    seen: dict[Path, int] = {}
    for i, r in enumerate(resolved):
        if r in seen:
            raise ValueError(f"{paths[i]}: given twice (same store as {paths[seen[r]]})")
        seen[r] = i
    names = [default_label(p) for p in paths]
    labels = []
    for path, name in zip(paths, names):
        folder = store_path(path).resolve().parent
        parent = folder.parent if store_path(path).name == STORE_NAME else folder
        labels.append(f"{parent.name}/{name}" if names.count(name) > 1 and parent.name else name)
    return [f"{label}#{labels[:i].count(label) + 1}" if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


def load_runs(paths: list[str | Path]) -> list[RunData]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no run folder given")
    return [load_run(p, label) for p, label in zip(paths, run_labels(paths))]


def parse_json(text: Any, default: Any) -> Any:
    if text is None or (isinstance(text, float) and text != text):
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default
