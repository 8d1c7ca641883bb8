"""IDX files (the MNIST family's on-disk format), gzipped or not, and the Fashion-MNIST loader."""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .base import ImageDataset
from .registry import DataMissingError, register_dataset

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


class IdxFormatError(ValueError):
    pass


MAX_IDX_BYTES = 1 << 32  # 4 GiB of data: the MNIST family's largest file is 47 MB


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file: 2 zero bytes, dtype code, rank, big-endian int32 dims, then the data. Reads no more
    than the header declares (a gzip bomb or trailing garbage is refused without being expanded)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
                raise IdxFormatError(f"{path}: not an IDX file (bad magic number {head.hex()})")
            dtype, rank = np.dtype(_DTYPES[head[2]]), head[3]
            dims_raw = fh.read(4 * rank)
            if len(dims_raw) < 4 * rank:
                raise IdxFormatError(f"{path}: truncated header ({4 + len(dims_raw)} bytes; a rank-{rank} header "
                                     f"needs {4 + 4 * rank})")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">i4", count=rank))
            expected = int(np.prod(dims, dtype=object)) * dtype.itemsize if dims else dtype.itemsize
            if any(d < 0 for d in dims) or expected > MAX_IDX_BYTES:
                raise IdxFormatError(f"{path}: header says shape {dims}, {expected:,} bytes of data; at most "
                                     f"{MAX_IDX_BYTES:,} are read")
            raw = fh.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise IdxFormatError(f"{path}: cannot read ({exc})") from exc
    if len(raw) != expected:
        more = "more than" if len(raw) > expected else f"{len(raw)} bytes, not"
        raise IdxFormatError(f"{path}: header says shape {dims} ({expected} bytes) but the file holds "
                             f"{more} that of data")
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped when the name ends in ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


def find_idx_files(folders: list[Path], names: dict[str, str]) -> tuple[dict[str, Path] | None, list[str]]:
    """The first folder holding all four files (each plain or .gz), and every path looked at."""
    tried: list[str] = []
    for folder in folders:
        found: dict[str, Path] = {}
        for key, stem in names.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                tried.append(str(candidate))
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(names):
            return found, tried
    return None, tried


def load_idx_dataset(name: str, folders: list[Path], classes: list[str], install_hint: str) -> ImageDataset:
    files, tried = find_idx_files(folders, MNIST_FILES)
    if files is None:
        folders_tried = list(dict.fromkeys(str(Path(t).parent) for t in tried))
        raise DataMissingError(f"dataset {name!r}: the four IDX files ({', '.join(MNIST_FILES.values())}, "
                               f"plain or .gz) are not in {', '.join(folders_tried)}; {install_hint}")
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise IdxFormatError(f"dataset {name!r}: {split} images {x.shape} and labels {y.shape} do not match "
                                 f"({files[f'{split}_x']}, {files[f'{split}_y']})")
    to_x = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # noqa: E731
    to_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return ImageDataset(name=name, train_x=to_x(arrays["train_x"]), train_y=to_y(arrays["train_y"]),
                        test_x=to_x(arrays["test_x"]), test_y=to_y(arrays["test_y"]),
                        num_classes=len(classes), mean=(0.2860,), std=(0.3530,), classes=classes,
                        source=str(files["train_x"].parent))


def _folders(root: str | None, default: Path) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get("RBLEAK_FASHION_MNIST")
    return ([Path(env)] if env else []) + [default]


@register_dataset("fashion-mnist", description="Fashion-MNIST 28x28 grayscale, 10 classes (IDX files)",
                  shape=lambda options: (1, len(FASHION_CLASSES), 28))
def fashion_mnist(root: str | None = None) -> ImageDataset:
    hint = "install Debian's dataset-fashion-mnist, or set the dataset's root: to a folder holding them"
    return load_idx_dataset("fashion-mnist", _folders(root, DEBIAN_FASHION_MNIST), FASHION_CLASSES, hint)


def _mnist_folders(root: str | None) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get("RBLEAK_MNIST")
    return [Path(env)] if env else [Path("/usr/share/datasets/mnist")]


MNIST_CLASSES = [str(i) for i in range(10)]


@register_dataset("mnist", description="MNIST 28x28 grayscale digits (IDX files under root)",
                  shape=lambda options: (1, 10, 28))
def mnist(root: str | None = None) -> ImageDataset:
    hint = "set the dataset's root: to a folder holding them"
    data = load_idx_dataset("mnist", _mnist_folders(root), MNIST_CLASSES, hint)
    return replace(data, mean=(0.1307,), std=(0.3081,))


def subsample_2x(x: torch.Tensor, method: str) -> torch.Tensor:
    """28 -> 14: every second pixel ('stride', raises the relative weight of high frequencies, as the
    reproduction report intends) or the 2x2 mean ('area', a low-pass)."""
    if method == "stride":
        return x[:, :, ::2, ::2].contiguous()
    if method == "area":
        return torch.nn.functional.avg_pool2d(x, 2)
    raise ValueError(f"subsample must be 'stride' or 'area', got {method!r}")


def _fourteen(data: ImageDataset, name: str, method: str) -> ImageDataset:
    from .base import channel_stats

    train_x, test_x = subsample_2x(data.train_x, method), subsample_2x(data.test_x, method)
    mean, std = channel_stats(train_x)
    return replace(data, name=name, train_x=train_x, test_x=test_x, mean=mean, std=std)


@register_dataset("fashion-mnist-14", description="Fashion-MNIST subsampled 28 -> 14 (reproduction report)",
                  shape=lambda options: (1, 10, 14), ranges={"subsample": {"pattern": "^(stride|area)$"}})
def fashion_mnist_14(root: str | None = None, subsample: str = "stride") -> ImageDataset:
    return _fourteen(fashion_mnist(root), "fashion-mnist-14", subsample)


@register_dataset("mnist-14", description="MNIST subsampled 28 -> 14 (reproduction report)",
                  shape=lambda options: (1, 10, 14), ranges={"subsample": {"pattern": "^(stride|area)$"}})
def mnist_14(root: str | None = None, subsample: str = "stride") -> ImageDataset:
    return _fourteen(mnist(root), "mnist-14", subsample)
