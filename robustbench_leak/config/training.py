"""Training settings: what a model entry's ``training:`` resolves to, and which of them shape the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Settings that do not shape the weights, or at these values train exactly as before they existed: a
# train key leaves them out (``weight_settings``), so keys of existing configs stay valid.
KEY_NEUTRAL: dict[str, Any] = {"deterministic": False, "precision": "auto", "compile": "none", "channels_last": "auto"}
# the test pass reads the model in eval mode and draws no random numbers; an epoch checkpoint resumes bitwise;
# packing trains the same recipe (to float rounding, as cuDNN's kernel choice does: see packed.py)
NOT_IN_KEY = ("eval_every", "checkpoint_every", "checkpoint_minutes", "pack")


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    nesterov: bool = False
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "cosine"  # none | step | cosine
    milestones: tuple[int, ...] = field(default_factory=tuple)  # epochs where a step schedule multiplies lr by gamma
    gamma: float = 0.1
    warmup_epochs: int = 0
    augment: str = "none"  # none | flip_crop (random horizontal flip + 4 px padded random crop)
    label_smoothing: float = 0.0
    eval_every: int = 1  # test pass every this many epochs; the last epoch always has one
    deterministic: bool = False  # deterministic algorithms (bitwise reruns on the same GPU)
    precision: str = "auto"  # auto (CPU: fp32, CUDA: TF32 convolutions) | fp32 | tf32 | bf16
    compile: str = "none"  # none | torch (torch.compile) | cudagraph (CUDA graphs) | max-autotune (autotuned kernels)
    channels_last: str = "auto"  # auto (CUDA without deterministic: yes; CPU: no) | true | false
    checkpoint_every: int = 0  # epoch checkpoint every this many epochs (0: none)
    checkpoint_minutes: float = 0.0  # ... or when this many minutes passed since the last one (0: never)
    pack: Any = "off"  # off | auto | N: train up to N models of one shape together (packed.py)


def weight_settings(training: dict[str, Any]) -> dict[str, Any]:
    """The training settings that shape the weights, as a train key hashes them."""
    return {k: v for k, v in training.items()
            if k not in NOT_IN_KEY and not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}
