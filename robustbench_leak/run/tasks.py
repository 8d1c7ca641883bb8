"""Typed tasks: what plan builds once and every cell, executor and the driver take.

A ``TrainTask`` names one model to train (or load) and carries its validated training settings; an
``EvalTask`` names one attack on the model of its ``train`` task. Both are frozen and carry their
content key. ``spec()`` gives the JSON-able form a key hashes and the store records, unchanged from
the dicts earlier versions planned, so keys and stored specs stay the same. ``RunContext`` is what
every cell of a run shares; it crosses process and machine boundaries (Ray), so the device stays the
config's name there and is resolved once per process (``runtime.resolve_device`` caches it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..config.training import TrainSettings
from ..runtime import resolve_device
from .deadline import Deadline


@dataclass(frozen=True)
class TrainTask:
    model: str  # the entry's name, as leaderboards show it
    arch: str
    options: dict[str, Any]
    dataset: dict[str, Any]  # plan.dataset_spec: name, loader options, subsets, normalize
    training: TrainSettings
    seed: int  # fixes the initial weights, the data order and the augmentation draws
    key: str = ""
    match: dict[str, Any] | None = None  # what match_params resolved to
    checkpoint: dict[str, str] | None = None  # {"path", "sha256"}: weights loaded from a file, never trained

    def spec(self) -> dict[str, Any]:
        """The task as JSON-able data, without its key (what the key hashes and the store records)."""
        training = asdict(self.training)
        spec: dict[str, Any] = {"model": self.model, "arch": self.arch, "options": self.options,
                                "dataset": self.dataset,
                                "training": {**training, "milestones": list(training["milestones"])},
                                "seed": self.seed}
        if self.match:
            spec["match"] = self.match
        if self.checkpoint:
            spec["checkpoint"] = self.checkpoint
        return spec

    @property
    def label(self) -> str:
        return f"{self.model} / {self.dataset['name']} / seed {self.seed}"


@dataclass(frozen=True)
class EvalTask:
    train: TrainTask  # the one dependency: its weights are what this task attacks
    attack: dict[str, Any]  # the resolved attack's spec (kind, engine, n_samples, params, ...)
    attack_label: str
    key: str = ""
    masking: dict[str, Any] | None = None  # non-default gradient-masking settings (minnorm cells only)

    @property
    def seed(self) -> int:
        """The seed of the attack's random numbers and of its bootstrap intervals: the model's seed."""
        return self.train.seed

    def generator(self) -> torch.Generator:
        """A CPU generator for the attack's random draws, seeded with ``seed`` (no global seeding)."""
        return torch.Generator().manual_seed(self.seed)

    def spec(self) -> dict[str, Any]:
        """What the store records for this cell."""
        return {"train_key": self.train.key, "attack": self.attack}

    @property
    def label(self) -> str:
        return f"{self.train.model} / {self.attack_label} / seed {self.seed}"


Task = TrainTask | EvalTask


@dataclass(frozen=True)
class RunContext:
    """What every cell of a run shares; only what is in here is known on another machine."""

    device_name: str = "auto"  # the config's device: resolved where the cell runs
    cache_dir: str | None = None  # absolute, or None for this machine's default checkpoint cache
    progress: bool = True  # progress bars
    deadline: Deadline | None = None  # the run's time limit (rbleak run --time-limit)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.device_name)


def cell_label(task: Task) -> str:
    return f"eval {task.label}" if isinstance(task, EvalTask) else f"train {task.label}"
