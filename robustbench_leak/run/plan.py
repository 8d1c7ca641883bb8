"""Planning: a config becomes train tasks and eval tasks, each a JSON-able spec with a content key.

Pure: nothing here trains, reads the store or touches the checkpoint cache (a ``checkpoint:`` file is
hashed, so that its content is part of its key). An eval task names its train task (``task["train"]``),
which is its one dependency: the train cell runs first and hands its weights to the eval cell.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..config import Config, canonical_hash
from ..config.schema import MaskingCfg
from ..config.training import weight_settings

WEIGHTS_VERSION = 1  # bump when a code change alters what the same spec trains to


def dataset_spec(ds) -> dict[str, Any]:
    return {"name": ds.name, "options": ds.loader_options, "train_subset": ds.train_subset,
            "test_subset": ds.test_subset, "subset_seed": ds.subset_seed, "normalize": ds.normalize}


def train_key(task: dict[str, Any]) -> str:
    ds = {k: v for k, v in task["dataset"].items() if k != "test_subset"}  # the test split does not shape weights
    return canonical_hash({"v": WEIGHTS_VERSION, "arch": task["arch"], "options": task["options"], "dataset": ds,
                           "training": weight_settings(task["training"]), "seed": task["seed"]})


def loaded_key(task: dict[str, Any]) -> str:
    """Key of a model loaded from a ``checkpoint:`` file: its content, not a training recipe, fixes the weights."""
    ds = {k: v for k, v in task["dataset"].items() if k != "test_subset"}
    return canonical_hash({"v": WEIGHTS_VERSION, "arch": task["arch"], "options": task["options"], "dataset": ds,
                           "checkpoint_sha256": task["checkpoint"]["sha256"], "seed": task["seed"]})


def eval_key(task: dict[str, Any]) -> str:
    train = task["train"].get("key") or train_key(task["train"])
    parts = {"train": train, "test_subset": task["train"]["dataset"]["test_subset"], "attack": task["attack"]}
    if "masking" in task:  # only non-default masking checks: cells stored with the defaults keep their keys
        parts["masking"] = task["masking"]
    return canonical_hash(parts)


def checks_masking(kind: str, engine: str) -> bool:
    """Whether the attack's cells run the gradient-masking checks (the minnorm ensemble)."""
    from ..attacks import attack_class

    return hasattr(attack_class(kind, engine), "check_masking")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan(config: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train tasks and eval tasks of the grid datasets x seeds x models (x attacks), seed-major, so a run
    stopped part-way has every model of the first seeds rather than every seed of the first models."""
    trains, evals = [], []
    sha: dict[str, str] = {}
    for ds in config.run.datasets:
        for seed in config.run.seeds:
            for model in config.run.models:
                settings = config.training_for(model).__dict__
                t = {"model": model.name, "arch": model.arch, "options": model.options,
                     "dataset": dataset_spec(ds), "training": {**settings, "milestones": list(settings["milestones"])},
                     "seed": seed}
                if model.match_report:
                    t["match"] = model.match_report
                if model.checkpoint:
                    if model.checkpoint not in sha:
                        sha[model.checkpoint] = file_sha256(model.checkpoint)
                    t["checkpoint"] = {"path": model.checkpoint, "sha256": sha[model.checkpoint]}
                    t["key"] = loaded_key(t)
                else:
                    t["key"] = train_key(t)
                trains.append(t)
                masking = config.run.masking.model_dump()
                for attack in config.attacks:
                    e = {"train": t, "attack": attack.spec(), "attack_label": attack.label}
                    if masking != MaskingCfg().model_dump() and checks_masking(attack.kind, attack.engine):
                        e["masking"] = masking
                    e["key"] = eval_key(e)
                    evals.append(e)
    return trains, evals


def interleave(trains: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each train task followed by its eval tasks: finished rows accumulate as a long run goes on."""
    by_train: dict[str, list[dict[str, Any]]] = {}
    for e in evals:
        by_train.setdefault(e["train"]["key"], []).append(e)
    return [task for t in trains for task in (t, *by_train.get(t["key"], []))]


def run_cell_rows(trains: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that tie a run to its planned cells (the store's ``run_cells``)."""
    return [{"cell_key": t["key"], "kind": "train", "train_key": t["key"], "model": t["model"], "arch": t["arch"],
             "dataset": t["dataset"]["name"], "seed": t["seed"], "attack": None} for t in trains] + [
        {"cell_key": e["key"], "kind": "eval", "train_key": e["train"]["key"], "model": e["train"]["model"],
         "arch": e["train"]["arch"], "dataset": e["train"]["dataset"]["name"], "seed": e["train"]["seed"],
         "attack": e["attack_label"]} for e in evals]


def train_label(task: dict[str, Any]) -> str:
    return f"{task['model']} / {task['dataset']['name']} / seed {task['seed']}"


def eval_label(task: dict[str, Any]) -> str:
    return f"{task['train']['model']} / {task['attack_label']} / seed {task['train']['seed']}"


def cell_label(task: dict[str, Any]) -> str:
    return f"eval {eval_label(task)}" if "attack" in task else f"train {train_label(task)}"
