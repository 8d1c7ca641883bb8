"""Frequency corruptions of seed 004: Gaussian low-pass and high-pass (image minus its blur).

Evaluated as accuracy on the corrupted test images. The blur is ``scipy.ndimage.gaussian_filter``
over the two spatial axes (its default 'reflect' border and 4-sigma truncation). The high-pass image
is ``x - blur(x)`` as in seed 004, not clipped, so its values lie in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

from ..metrics import ROBUST_ACCURACY, prediction_metrics
from ..runtime import predict
from .base import Attack, AttackResult, Range, register_attack


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(x, sigma=(0, 0, sigma, sigma))


class _FrequencyCorruption(Attack):
    defaults = {"sigma": 2.0}
    ranges = {"sigma": Range(0.0, 1000.0, lo_open=True)}
    metrics = (ROBUST_ACCURACY,)

    engine = "native"
    high_pass = False  # the image minus its blur, rather than the blur

    @classmethod
    def per_example(cls, params: dict) -> bool:
        return False  # the same corruption of every image

    def corrupt(self, x: np.ndarray) -> np.ndarray:
        blurred = gaussian_blur(x, self.params["sigma"])
        return x - blurred if self.high_pass else blurred

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        if self.params["sigma"] <= 0:
            raise ValueError(f"attack {self.kind!r}: sigma must be > 0, got {self.params['sigma']}")
        corrupted = torch.from_numpy(self.corrupt(x.numpy().astype(np.float32)).astype(np.float32))
        clean_pred = predict(model, x, device).numpy()
        adv_pred = predict(model, corrupted, device).numpy()
        labels = y.numpy()
        return AttackResult(prediction_metrics(labels, clean_pred, adv_pred, per_example=False),
                            {"label": labels, "clean_pred": clean_pred, "adv_pred": adv_pred})


@register_attack
class LowPass(_FrequencyCorruption):
    kind = "lowpass"
    description = "Gaussian low-pass corruption (blur with sigma in pixels)"


@register_attack
class HighPass(_FrequencyCorruption):
    kind = "highpass"
    high_pass = True
    description = "Gaussian high-pass corruption: image minus its blur (sigma in pixels), unclipped"
