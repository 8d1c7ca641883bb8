"""The run config's schema: keys, types and ranges (pydantic), and the resolved objects a run uses."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, field_validator,
                      model_validator)

from .training import TrainingCfg, TrainSettings, StrictModel

DEFAULT_FIT_SAMPLES = 500  # images a global spatial attack is fitted on (the END of the test set)

# a run's name becomes a folder under runs/: one safe path component
SafeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=100)]
LABEL_FORBIDDEN = "/\\|<>&`"


def _check_label(value: str) -> str:
    bad = sorted({c for c in value if c in LABEL_FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ValueError(f"contains {', '.join(repr(c) for c in bad)}; a name or label is one line of text without "
                         "/ \\ | < > & ` (they would be path separators in file names, or change the Markdown and "
                         "HTML tables it appears in)")
    if value[0] in "=+-@":
        raise ValueError(f"starts with {value[0]!r}; a name or label may not start with = + - @ (a spreadsheet "
                         "opening the leaderboard's CSV would run it as a formula)")
    if value != value.strip():
        raise ValueError("starts or ends with a space; a name or label is shown and matched as written")
    return value


# model names and attack labels appear in tables and file names: printable, no path separators, nothing a
# Markdown or HTML table reads as markup
Label = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_check_label)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]


class DatasetCfg(BaseModel):
    """``name`` plus subset options; any other key is an option of that dataset's loader (e.g. root)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str = Field(max_length=100)
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    subset_seed: Seed = 0
    normalize: bool = True

    @property
    def loader_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def label(self) -> str:
        return self.name


class ModelCfg(StrictModel):
    name: Label  # the label shown in leaderboards
    arch: str = Field(max_length=200)  # registered model name or timm:<name>
    options: dict[str, Any] = {}
    training: dict[str, Any] = {}  # overrides of the run's training settings for this model
    checkpoint: str | None = None  # load these weights instead of training (relative to the config's folder)
    match_params: str | None = None  # another entry's name: pick width_multiplier to match its parameter count
    match_tolerance: float = Field(0.02, gt=0, lt=1)  # relative; integer channel counts limit narrow nets
    _match: dict[str, Any] | None = PrivateAttr(None)  # what match_params resolved to (set by load_config)

    @property
    def match_report(self) -> dict[str, Any] | None:
        return self._match


class AttackCfg(StrictModel):
    preset: str = Field(max_length=200)  # a file attacks/<preset>.yaml
    label: Label | None = None
    engine: str | None = Field(None, max_length=100)
    n_samples: int | None = Field(None, ge=1)
    fit_samples: int | None = Field(None, ge=1)  # for attacks fitted on a held-out split (global spatial)
    params: dict[str, Any] = {}


class MaskingCfg(StrictModel):
    """The gradient-masking checks of every minnorm cell (attacks/masking.py); ``masking: false`` turns them off."""

    enabled: bool = True
    images: int = Field(16, ge=1, le=100_000)  # clean-correct images the checks run on
    directions: int = Field(16, ge=1, le=10_000)  # random directions of the black-box search per image
    search_steps: int = Field(8, ge=1, le=100)  # bisection steps along each direction
    pgd_steps: int = Field(10, ge=1, le=10_000)
    min_success: float = Field(0.99, gt=0, le=1)
    tolerance: float = Field(0.01, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else v


class RunConfig(StrictModel):
    name: SafeName
    description: str = Field("", max_length=10_000)
    device: str = "auto"
    seeds: list[Seed] = Field([0], min_length=1, max_length=10_000)
    datasets: list[DatasetCfg] = Field(min_length=1)
    models: list[ModelCfg] = Field(min_length=1)
    attacks: list[str | AttackCfg] = Field(["clean"], min_length=1)
    training: TrainingCfg = TrainingCfg()
    cache_dir: str | None = None
    attack_dirs: list[str] = []
    rank_by: str | None = None  # a leaderboard column such as deepfool.rho_mean
    masking: MaskingCfg = MaskingCfg()
    executor: Literal["local", "ray"] = "local"
    connect_timeout: float = Field(10.0, gt=0, le=3600)  # executor ray with an address: seconds to reach it
    allow_untrained: bool = False  # evaluate models with training.epochs 0 (random weights), labelled untrained
    address: str | None = Field(None, min_length=1, max_length=500)  # executor ray: a cluster to join (else RAY_ADDRESS, else local)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from ..runtime import check_device_name

        return check_device_name(v)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        from .address import check_address

        return None if v is None else check_address(v, "")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("each seed may appear once")
        return v


class ResolvedAttack(BaseModel):
    """An attack entry with its preset merged in: what a grid cell runs."""

    label: str
    kind: str
    engine: str
    n_samples: int | None
    fit_samples: int | None = None
    params: dict[str, Any]
    preset: str
    note: str | None = None  # what an engine switch changed, shown to the user

    def spec(self) -> dict[str, Any]:
        from ..attacks import attack_class

        cls = attack_class(self.kind, self.engine)
        params = {k: v for k, v in self.params.items() if k not in cls.key_neutral or v != cls.key_neutral[k]}
        spec = {"kind": self.kind, "engine": self.engine, "n_samples": self.n_samples, "params": params}
        if cls.version != 1:  # only revised engines carry it, so other cells keep their keys
            spec["version"] = cls.version
        if self.fit_samples is not None:  # only attacks that fit carry it, so other cells keep their keys
            spec["fit_samples"] = self.fit_samples
        return spec


class Config(BaseModel):
    """A validated run config plus everything resolved from it."""

    path: str
    text: str
    run: RunConfig
    attacks: list[ResolvedAttack]

    @property
    def name(self) -> str:
        return self.run.name

    def config_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def training_for(self, model: ModelCfg) -> TrainSettings:
        merged = {**self.run.training.model_dump(), **model.training}
        merged["milestones"] = tuple(merged["milestones"])
        return TrainSettings(**merged)


def canonical_hash(obj: Any) -> str:
    """Stable short hash of JSON-able data (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]
