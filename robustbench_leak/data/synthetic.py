"""A deterministic, learnable synthetic image set for fast tests (no files needed).

Each class is a fixed smooth random template; a sample is its class template with random contrast,
a random shift of up to 2 pixels, and Gaussian noise, clipped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ImageDataset, channel_stats
from .registry import register_dataset


def _make_split(templates: torch.Tensor, n: int, noise: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = templates.shape[0]
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=gen)]
    x = templates[y] * (0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen))
    shifts = torch.randint(-2, 3, (n, 2), generator=gen)
    x = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(1, 2)) for img, (dy, dx) in zip(x, shifts)])
    x = x + noise * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1), y


@register_dataset("synthetic", description="deterministic seeded class templates + noise (tests)")
def synthetic(n_train: int = 512, n_test: int = 256, image_size: int = 28, channels: int = 1,
              num_classes: int = 10, noise: float = 0.15, seed: int = 0) -> ImageDataset:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 7, 7, generator=gen)
    templates = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    train_x, train_y = _make_split(templates, n_train, noise, gen)
    test_x, test_y = _make_split(templates, n_test, noise, gen)
    mean, std = channel_stats(train_x)
    return ImageDataset(name="synthetic", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                        num_classes=num_classes, mean=mean, std=std,
                        classes=[f"class{i}" for i in range(num_classes)], source=f"synthetic(seed={seed})")
