"""The in-memory image dataset every loader returns: images as float tensors in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class ImageDataset:
    name: str
    train_x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    source: str = ""  # where the data was read from (a path, or "synthetic")

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def validate(self) -> None:
        """Labels within ``[0, num_classes)`` and image tensors of rank 4 with one sample per label:
        a data file that breaks these fails when it is loaded, naming where it came from."""
        where = self.source or self.name
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if len(x) != len(y):
                raise ValueError(f"{where}: {split} split has {len(x)} images but {len(y)} labels")
            if len(y) == 0:
                raise ValueError(f"{where}: {split} split is empty")
            if isinstance(x, torch.Tensor) and x.dim() != 4:
                raise ValueError(f"{where}: {split} images have shape {tuple(x.shape)}; expected (N, C, H, W)")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"{where}: {split} labels range from {lo} to {hi}; allowed: 0 to "
                                 f"{self.num_classes - 1} ({self.num_classes} classes)")

    def subset(self, train: int | None, test: int | None, seed: int = 0) -> "ImageDataset":
        """A seeded random subset of the training set and the first ``test`` test images."""
        out = self
        if train is not None and train < len(self.train_y):
            idx = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(seed))[:train]
            out = replace(out, train_x=_take(out.train_x, idx), train_y=out.train_y[idx])
        if test is not None and test < len(self.test_y):
            out = replace(out, test_x=_take(out.test_x, torch.arange(test)), test_y=out.test_y[:test])
        return out


def _take(images, idx: torch.Tensor):
    """Rows ``idx`` of an image tensor, or a lazy subset of a lazily decoded image set."""
    if isinstance(images, torch.Tensor):
        return images[idx]
    return images.take(idx)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a (N, C, H, W) tensor."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
