"""A deterministic, learnable synthetic image set for fast tests (no files needed).

Class c is a sinusoidal grating with its own orientation and spatial frequency; each sample has a
random phase and contrast plus Gaussian noise, clipped to [0, 1]. Classes differ in texture, not in
layout, so a conv net with global pooling (like the paper's) can learn them in a few steps.
"""

from __future__ import annotations

import math

import torch

from .base import ImageDataset, channel_stats
from .registry import register_dataset


def _make_split(n: int, num_classes: int, size: int, channels: int, noise: float,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    n_orient = math.ceil(num_classes / 2)
    theta = (y % n_orient).float() * math.pi / n_orient
    freq = torch.where(y < n_orient, 0.08, 0.2)  # cycles per pixel
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    phase = 2 * math.pi * torch.rand(n, generator=gen)
    arg = 2 * math.pi * freq.view(-1, 1, 1) * (cols * torch.cos(theta).view(-1, 1, 1)
                                               + rows * torch.sin(theta).view(-1, 1, 1)) + phase.view(-1, 1, 1)
    contrast = 0.25 + 0.2 * torch.rand(n, 1, 1, generator=gen)
    x = (0.5 + contrast * torch.cos(arg)).unsqueeze(1).repeat(1, channels, 1, 1)
    x = x + noise * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1), y


MAX_VALUES = 500_000_000  # 2 GB of float32: a bound on what one option set may allocate


@register_dataset("synthetic", description="deterministic seeded class gratings + noise (tests)",
                  shape=lambda o: (int(o["channels"]), int(o["num_classes"]), int(o["image_size"])),
                  ranges={"n_train": {"ge": 1, "le": 1_000_000}, "n_test": {"ge": 1, "le": 1_000_000},
                          "image_size": {"ge": 4, "le": 512}, "channels": {"ge": 1, "le": 4},
                          "num_classes": {"ge": 2, "le": 1000}, "noise": {"ge": 0, "le": 10},
                          "seed": {"ge": 0, "lt": 2**63}})
def synthetic(n_train: int = 512, n_test: int = 256, image_size: int = 28, channels: int = 1,
              num_classes: int = 10, noise: float = 0.1, seed: int = 0) -> ImageDataset:
    values = (n_train + n_test) * channels * image_size**2
    if values > MAX_VALUES:
        raise ValueError(f"synthetic: (n_train + n_test) x channels x image_size^2 = {values:,} values; at most "
                         f"{MAX_VALUES:,} (4 bytes each) are generated")
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = _make_split(n_train, num_classes, image_size, channels, noise, gen)
    test_x, test_y = _make_split(n_test, num_classes, image_size, channels, noise, gen)
    mean, std = channel_stats(train_x)
    return ImageDataset(name="synthetic", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                        num_classes=num_classes, mean=mean, std=std,
                        classes=[f"class{i}" for i in range(num_classes)], source=f"synthetic(seed={seed})")
