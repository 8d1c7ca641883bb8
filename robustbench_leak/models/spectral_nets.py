"""The two CNNs of Rippel et al.'s spectral-parametrisation experiments (seed 003, section IV.B).

- ``spectral_generic``: C(k)96 -> P -> C(k)192 -> P -> FC1024 -> FC(classes)
- ``spectral_deep``: C(k)96 -> C(k)96 -> P -> C(k)192 x3 -> P -> C1x1 192 -> C1x1 (classes) -> global avg

C is a 'same' convolution with ReLU; its k x k filters are spectrally parametrised
(``nn.SpectralConv2d``) unless ``spectral_params: false``; 1x1 convolutions stay spatial (their
spectrum is one real number). P halves the size: spectral pooling (``nn.SpectralPool2d``, scale 0.5,
optional ``freq_dropout``) or, with ``pool: max``, the seed's 3x3 stride-2 max-pool (padding 1; both
give ceil(n / 2)). The generic net's first FC needs the input size: ``image_size``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn

from ..nn import SpectralConv2d, SpectralPool2d
from .registry import register_model
from .width import scaled


def _conv(cin: int, cout: int, k: int, spectral: bool) -> nn.Module:
    if spectral and k > 1:
        return SpectralConv2d(cin, cout, k, padding=k // 2)
    return nn.Conv2d(cin, cout, k, padding=k // 2)


def _pool(kind: str, freq_dropout: tuple[float, float] | None) -> nn.Module:
    if kind == "spectral":
        return SpectralPool2d(scale=0.5, freq_dropout=freq_dropout)
    if kind == "max":
        if freq_dropout is not None:
            raise ValueError("freq_dropout needs pool: spectral")
        return nn.MaxPool2d(3, 2, padding=1)
    raise ValueError(f"pool must be 'spectral' or 'max', got {kind!r}")


def _dropout(freq_dropout: list[float] | None) -> tuple[float, float] | None:
    if freq_dropout is None:
        return None
    if len(freq_dropout) != 2:
        raise ValueError(f"freq_dropout must be [min_frac, max_frac], got {freq_dropout}")
    return float(freq_dropout[0]), float(freq_dropout[1])


class SpectralGeneric(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, kernel_size: int, spectral_params: bool, pool: str,
                 freq_dropout: list[float] | None, width_multiplier: float, image_size: int) -> None:
        super().__init__()
        c1, c2, hidden = (scaled(c, width_multiplier) for c in (96, 192, 1024))
        fd = _dropout(freq_dropout)
        self.image_size = image_size
        self.features = nn.Sequential(
            _conv(in_chans, c1, kernel_size, spectral_params), nn.ReLU(inplace=True), _pool(pool, fd),
            _conv(c1, c2, kernel_size, spectral_params), nn.ReLU(inplace=True), _pool(pool, fd))
        side = math.ceil(math.ceil(image_size / 2) / 2)
        self.classifier = nn.Sequential(nn.Linear(c2 * side * side, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"spectral_generic was built for {self.image_size}x{self.image_size} images, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; set the model option image_size")
        return self.classifier(torch.flatten(self.features(x), 1))


class SpectralDeep(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, kernel_size: int, spectral_params: bool, pool: str,
                 freq_dropout: list[float] | None, width_multiplier: float) -> None:
        super().__init__()
        c1, c2 = scaled(96, width_multiplier), scaled(192, width_multiplier)
        fd = _dropout(freq_dropout)
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        k, sp = kernel_size, spectral_params
        self.features = nn.Sequential(
            _conv(in_chans, c1, k, sp), relu(), _conv(c1, c1, k, sp), relu(), _pool(pool, fd),
            _conv(c1, c2, k, sp), relu(), _conv(c2, c2, k, sp), relu(), _conv(c2, c2, k, sp), relu(), _pool(pool, fd),
            nn.Conv2d(c2, c2, 1), relu(), nn.Conv2d(c2, num_classes, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


@register_model("spectral_generic", family="spectral")
def spectral_generic(num_classes: int, in_chans: int, kernel_size: int = 3, spectral_params: bool = True,
                     pool: Literal["spectral", "max"] = "spectral", freq_dropout: list[float] | None = None,
                     width_multiplier: float = 1.0, image_size: int = 32) -> nn.Module:
    """Rippel et al.'s generic net: 2 convs, 2 pools, FC1024 (spectral params and pooling)."""
    return SpectralGeneric(num_classes, in_chans, kernel_size, spectral_params, pool, freq_dropout,
                           width_multiplier, image_size)


@register_model("spectral_deep", family="spectral")
def spectral_deep(num_classes: int, in_chans: int, kernel_size: int = 3, spectral_params: bool = True,
                  pool: Literal["spectral", "max"] = "spectral", freq_dropout: list[float] | None = None,
                  width_multiplier: float = 1.0) -> nn.Module:
    """Rippel et al.'s deep net: 5 convs, 2 pools, two 1x1 convs, global average (spectral)."""
    return SpectralDeep(num_classes, in_chans, kernel_size, spectral_params, pool, freq_dropout, width_multiplier)
