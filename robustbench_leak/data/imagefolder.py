"""Class-per-folder image sets (the ImageNet layout): ``root/{train,val}/<class>/<image>``.

Images are decoded lazily, a batch at a time: ``LazyImages`` indexes like a (N, 3, S, S) tensor and
returns real tensors, so training and attacks use it like the in-memory sets. Each image is resized
so its shorter side is ``resize`` and centre-cropped to ``image_size`` (the standard ImageNet
evaluation transform); training adds the harness's own augmentation on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import ImageDataset
from .registry import DataMissingError, register_dataset

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


class LazyImages:
    """Image files decoded on access to (3, size, size) float tensors in [0, 1]."""

    def __init__(self, paths: Sequence[Path], image_size: int, resize: int) -> None:
        self.paths = list(paths)
        self.image_size = image_size
        self.resize = resize

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.image_size, self.image_size)

    def take(self, idx: torch.Tensor | Sequence[int]) -> "LazyImages":
        """A lazy subset (nothing decoded)."""
        return LazyImages([self.paths[int(i)] for i in idx], self.image_size, self.resize)

    def _load(self, path: Path) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                scale = self.resize / min(w, h)
                img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
                w, h = img.size
                left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
                img = img.crop((left, top, left + self.image_size, top + self.image_size))
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # PIL: OSError for unreadable or truncated files, DecompressionBombError past its pixel limit,
            # ValueError / SyntaxError from some malformed headers
            raise DataMissingError(f"{path}: cannot decode image ({exc})") from exc
        return torch.from_numpy(arr).permute(2, 0, 1)

    def __getitem__(self, idx: int | slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        if isinstance(idx, int):
            return self._load(self.paths[idx])
        if isinstance(idx, slice):
            paths = self.paths[idx]
        else:
            paths = [self.paths[int(i)] for i in idx]
        if not paths:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.stack([self._load(p) for p in paths])


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of a class-per-folder tree; labels follow sorted class names (or ``classes``)."""
    classes = classes or sorted(d.name for d in folder.iterdir() if d.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataMissingError(f"{folder}: class folder {name!r} is missing (it exists in the training split)")
        # regular files only: a folder named like an image, or a FIFO (which PIL would wait on forever), is skipped
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        paths += files
        labels += [label] * len(files)
    return paths, labels, classes


@register_dataset("imagenet", description="ImageNet-style class folders root/{train,val}/<class>/*, decoded lazily",
                  ranges={"image_size": {"ge": 8, "le": 1024}, "resize": {"ge": 8, "le": 2048}})
def imagenet(root: str | None = None, image_size: int = 224, resize: int = 256, train_dir: str = "train",
             val_dir: str = "val") -> ImageDataset:
    if root is None:
        raise DataMissingError("dataset 'imagenet' cannot be downloaded here: set the dataset's `root:` to a folder "
                               "with train/<class>/*.JPEG and val/<class>/*.JPEG (val sorted into class folders)")
    base = Path(root).expanduser()
    train_folder, val_folder = base / train_dir, base / val_dir
    for folder in (train_folder, val_folder):
        if not folder.is_dir():
            raise DataMissingError(f"dataset 'imagenet': {folder} does not exist (expected {train_dir}/ and "
                                   f"{val_dir}/ under {base}, one sub-folder per class)")
    train_paths, train_labels, classes = scan(train_folder)
    if not train_paths:
        raise DataMissingError(f"dataset 'imagenet': no images under {train_folder}")
    val_paths, val_labels, _ = scan(val_folder, classes)
    return ImageDataset("imagenet", LazyImages(train_paths, image_size, resize), torch.tensor(train_labels),  # type: ignore[arg-type]
                        LazyImages(val_paths, image_size, resize), torch.tensor(val_labels),  # type: ignore[arg-type]
                        len(classes), IMAGENET_MEAN, IMAGENET_STD, classes, str(base))
