"""Input normalisation inside the model, so attacks always work on images in [0, 1]."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class Normalized(nn.Module):
    """``net((x - mean) / std)`` with per-channel mean and std as buffers; float64 logits (a model that
    computes its head in double) come back as float32, the precision the attacks work in."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.float64 else out
