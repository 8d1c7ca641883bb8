"""Planning: a config becomes typed train and eval tasks (``tasks.py``), each with a content key.

Pure: nothing here trains, reads the store or touches the checkpoint cache (a ``checkpoint:`` file is
hashed, so that its content is part of its key). An eval task names its train task (``task.train``),
which is its one dependency: the train cell runs first and hands its weights to the eval cell. Every
parameter was validated when the config was loaded; plan only arranges and keys them.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from ..attacks import attack_class
from ..config import Config, canonical_hash
from ..config.schema import MaskingCfg
from ..config.training import weight_settings
from .tasks import EvalTask, Task, TrainTask

WEIGHTS_VERSION = 1  # bump when a code change alters what the same spec trains to


def dataset_spec(ds) -> dict[str, Any]:
    return {"name": ds.name, "options": ds.loader_options, "train_subset": ds.train_subset,
            "test_subset": ds.test_subset, "subset_seed": ds.subset_seed, "normalize": ds.normalize}


def _weights_part(task: TrainTask) -> dict[str, Any]:
    ds = {k: v for k, v in task.dataset.items() if k != "test_subset"}  # the test split does not shape weights
    return {"v": WEIGHTS_VERSION, "arch": task.arch, "options": task.options, "dataset": ds}


def train_key(task: TrainTask) -> str:
    return canonical_hash({**_weights_part(task), "training": weight_settings(task.spec()["training"]),
                           "seed": task.seed})


def loaded_key(task: TrainTask) -> str:
    """Key of a model loaded from a ``checkpoint:`` file: its content, not a training recipe, fixes the weights."""
    return canonical_hash({**_weights_part(task), "checkpoint_sha256": task.checkpoint["sha256"], "seed": task.seed})


def eval_key(task: EvalTask) -> str:
    parts = {"train": task.train.key or train_key(task.train), "test_subset": task.train.dataset["test_subset"],
             "attack": task.attack}
    if task.masking is not None:  # only non-default masking checks: cells stored with the defaults keep their keys
        parts["masking"] = task.masking
    return canonical_hash(parts)


def checks_masking(kind: str, engine: str) -> bool:
    """Whether the attack's cells run the gradient-masking checks (the minnorm ensemble)."""
    return hasattr(attack_class(kind, engine), "check_masking")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan(config: Config) -> tuple[list[TrainTask], list[EvalTask]]:
    """Train tasks and eval tasks of the grid datasets x seeds x models (x attacks), seed-major, so a run
    stopped part-way has every model of the first seeds rather than every seed of the first models."""
    trains: list[TrainTask] = []
    evals: list[EvalTask] = []
    sha: dict[str, str] = {}
    masking = config.run.masking.model_dump()
    custom_masking = masking != MaskingCfg().model_dump()
    attacks = [(attack, attack.spec()) for attack in config.attacks]
    for ds in config.run.datasets:
        for seed in config.run.seeds:
            for model in config.run.models:
                checkpoint = None
                if model.checkpoint:
                    if model.checkpoint not in sha:
                        sha[model.checkpoint] = file_sha256(model.checkpoint)
                    checkpoint = {"path": model.checkpoint, "sha256": sha[model.checkpoint]}
                t = TrainTask(model=model.name, arch=model.arch, options=model.options, dataset=dataset_spec(ds),
                              training=config.training_for(model), seed=seed, match=model.match_report,
                              checkpoint=checkpoint)
                t = replace(t, key=loaded_key(t) if checkpoint else train_key(t))
                trains.append(t)
                for attack, spec in attacks:
                    checked = custom_masking and checks_masking(attack.kind, attack.engine)
                    e = EvalTask(train=t, attack=spec, attack_label=attack.label, masking=masking if checked else None)
                    evals.append(replace(e, key=eval_key(e)))
    return trains, evals


def interleave(trains: list[TrainTask], evals: list[EvalTask]) -> list[Task]:
    """Each train task followed by its eval tasks: finished rows accumulate as a long run goes on."""
    by_train: dict[str, list[EvalTask]] = {}
    for e in evals:
        by_train.setdefault(e.train.key, []).append(e)
    return [task for t in trains for task in (t, *by_train.get(t.key, []))]


def run_cell_rows(trains: list[TrainTask], evals: list[EvalTask]) -> list[dict[str, Any]]:
    """The rows that tie a run to its planned cells (the store's ``run_cells``)."""
    return [{"cell_key": t.key, "kind": "train", "train_key": t.key, "model": t.model, "arch": t.arch,
             "dataset": t.dataset["name"], "seed": t.seed, "attack": None} for t in trains] + [
        {"cell_key": e.key, "kind": "eval", "train_key": e.train.key, "model": e.train.model,
         "arch": e.train.arch, "dataset": e.train.dataset["name"], "seed": e.seed,
         "attack": e.attack_label} for e in evals]
