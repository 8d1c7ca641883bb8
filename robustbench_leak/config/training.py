"""Training settings: the ``training:`` schema (``TrainingCfg``), the settings a run uses (``TrainSettings``,
derived from it), and which of them shape the weights."""

from __future__ import annotations

from dataclasses import field, make_dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Settings that do not shape the weights, or at these values train exactly as before they existed: a
# train key leaves them out (``weight_settings``), so keys of existing configs stay valid.
KEY_NEUTRAL: dict[str, Any] = {"deterministic": False, "precision": "auto", "compile": "none", "channels_last": "auto"}
# the test pass reads the model in eval mode and draws no random numbers; an epoch checkpoint resumes bitwise;
# packing trains the same recipe (to float rounding, as cuDNN's kernel choice does: see packed.py)
NOT_IN_KEY = ("eval_every", "checkpoint_every", "checkpoint_minutes", "pack")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrainingCfg(StrictModel):
    """A config's ``training:`` mapping: every key with its type, range and default (the one source: the
    run's ``TrainSettings`` are derived from it)."""


    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, le=1)
    weight_decay: float = Field(1e-3, ge=0, le=1)
    nesterov: bool = False
    epochs: int = Field(10, ge=0, le=100_000)
    batch_size: int = Field(128, ge=1, le=1 << 20)
    schedule: Literal["none", "step", "cosine"] = "cosine"
    milestones: list[Annotated[int, Field(ge=0)]] = Field([], max_length=1000)
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    augment: Literal["none", "flip_crop"] = "none"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    eval_every: int = Field(1, ge=1)  # test pass every this many epochs; the last epoch always has one
    deterministic: bool = False  # deterministic algorithms: bitwise reruns on the same GPU model and software
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"  # auto: fp32 on the CPU, TF32 convolutions on CUDA
    compile: Literal["none", "torch", "cudagraph", "max-autotune"] = "none"  # torch.compile (cudagraph: CUDA only)
    channels_last: Literal["auto"] | bool = "auto"  # auto: on CUDA unless deterministic; never on the CPU
    # not in the cache key: an epoch checkpoint resumes a killed training bitwise
    checkpoint_every: int = Field(0, ge=0)  # epochs between epoch checkpoints (0: none)
    checkpoint_minutes: float = Field(0.0, ge=0)  # or minutes since the last one (0: never)
    pack: Literal["off", "auto"] | Annotated[int, Field(ge=1, le=64)] = "off"  # models trained together (packed.py)

    @field_validator("pack", mode="before")
    @classmethod
    def _pack_off(cls, v: Any) -> Any:
        if v is False:  # YAML 1.1 reads an unquoted off as false
            return "off"
        if v is True:
            raise ValueError("must be off, auto or a number of models (true is not one)")
        return v


def _settings_class() -> type:
    """A frozen dataclass with ``TrainingCfg``'s fields and defaults (lists as tuples, so it hashes)."""
    fields = []
    for name, info in TrainingCfg.model_fields.items():
        default = info.get_default(call_default_factory=True)
        annotation = info.annotation
        if isinstance(default, list):
            default, annotation = tuple(default), tuple[int, ...]
        fields.append((name, annotation, field(default=default)))
    cls = make_dataclass("TrainSettings", fields, frozen=True)
    cls.__module__ = __name__  # pickles by reference (Ray workers, multiprocessing)
    cls.__doc__ = ("The training settings a run uses (``Config.training_for``): ``TrainingCfg``'s fields and "
                   "defaults, checked, frozen")
    return cls


TrainSettings = _settings_class()


def weight_settings(training: dict[str, Any]) -> dict[str, Any]:
    """The training settings that shape the weights, as a train key hashes them."""
    return {k: v for k, v in training.items()
            if k not in NOT_IN_KEY and not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}
