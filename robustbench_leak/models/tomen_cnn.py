"""The paper's CNN (official ``cifar100_example.py``; REFERENCE.md section 2).

conv(in -> width, first_kernel_size, stride 2) - BN - ReLU, conv(width -> 2*width, kernel_size) -
BN - ReLU, then (n_layers - 2) x conv(2*width -> 2*width, kernel_size) - BN - ReLU; global average
pool, linear. No bias in convolutions, no other pooling, no dropout. With ``first_kernel_size`` set
apart from ``kernel_size`` it is the reproduction report's variant (first layer 7x7, the rest kb x kb).
``width_multiplier`` scales both widths (``models.width.scaled``: floor, at least 1), for
parameter-matched comparisons.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..nn import WindowedConv2d, WindowSpec
from .registry import register_model
from .width import scaled


def make_conv(in_ch: int, out_ch: int, k: int, stride: int, window: Any, bias: bool = False) -> nn.Conv2d:
    """A k x k 'same' convolution, windowed unless the window is ``none``."""
    spec = WindowSpec.parse(window)
    if spec.is_identity:
        return nn.Conv2d(in_ch, out_ch, k, stride, k // 2, bias=bias)
    return WindowedConv2d(in_ch, out_ch, k, stride, k // 2, bias=bias, window=spec)


class TomenCNN(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, n_layers: int = 6, width: int = 128,
                 kernel_size: int = 7, first_kernel_size: int | None = None, window: Any = "none",
                 first_stride: int = 2, width_multiplier: float = 1.0) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"tomen_cnn needs n_layers >= 2, got {n_layers}")
        first_k = kernel_size if first_kernel_size is None else first_kernel_size
        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(n_layers):
            c_out = scaled(width if i == 0 else 2 * width, width_multiplier)
            k, stride = (first_k, first_stride) if i == 0 else (kernel_size, 1)
            layers += [make_conv(c_in, c_out, k, stride, window), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("tomen_cnn", family="tomen_cnn", ranges={"n_layers": {"ge": 2, "le": 512}})
def tomen_cnn(num_classes: int, in_chans: int, n_layers: int = 6, width: int = 128, kernel_size: int = 7,
              first_kernel_size: int | None = None, window: Any = "none", first_stride: int = 2,
              width_multiplier: float = 1.0) -> nn.Module:
    """The paper's plain CNN: n_layers convs (first stride 2), global pool, linear."""
    return TomenCNN(num_classes, in_chans, n_layers, width, kernel_size, first_kernel_size, window, first_stride,
                    width_multiplier)
