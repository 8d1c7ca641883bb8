"""CIFAR-10 and CIFAR-100 in their published "python version" format (pickled batches).

CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; CIFAR-100:
``cifar-100-python/{train, test, meta}``. Each batch is a pickled dict with ``data`` (N x 3072 uint8,
the 1024 red, then green, then blue values of a 32 x 32 image, row-major) and ``labels`` (CIFAR-10) or
``fine_labels`` (CIFAR-100). The files are read with an unpickler that only admits the types these
batches contain (dicts, lists, strings, numbers and NumPy arrays), never arbitrary code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ImageDataset
from .registry import DataMissingError, register_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class CifarFormatError(ValueError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CifarFormatError(f"refusing to load {module}.{name} from a CIFAR batch (not a CIFAR type)")


def read_batch(path: Path) -> dict[str, Any]:
    """One pickled CIFAR batch, keys decoded to str."""
    try:
        with open(path, "rb") as fh:
            raw = _SafeUnpickler(fh, encoding="bytes").load()
    except CifarFormatError as exc:
        raise CifarFormatError(f"{path}: {exc}") from exc
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise CifarFormatError(f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict):
        raise CifarFormatError(f"{path}: a CIFAR batch is a dict, got {type(raw).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: str = "labels") -> None:
    """Write a batch in the published format (used by tests to make real-format files)."""
    batch = {b"batch_label": b"written by robustbench-leak", label_key.encode(): list(labels),
             b"data": np.ascontiguousarray(data, dtype=np.uint8), b"filenames": [b"x.png"] * len(labels)}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def _images(batches: list[dict[str, Any]], label_key: str, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for b in batches:
        if "data" not in b or label_key not in b:
            raise CifarFormatError(f"{path}: batch lacks 'data' or '{label_key}'")
        data = np.asarray(b["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(b[label_key]):
            raise CifarFormatError(f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape} "
                                   f"and {len(b[label_key])} labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(b[label_key], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    return x, torch.from_numpy(np.concatenate(ys))


def _find(root: str | None, folder: str, files: list[str], name: str) -> Path:
    if root is None:
        raise DataMissingError(f"dataset {name!r} cannot be downloaded here: set the dataset's `root:` to the "
                               f"folder that holds {folder}/ (the 'python version' from the CIFAR website)")
    base = Path(root).expanduser()
    tried = [base / folder, base]
    for candidate in tried:
        if all((candidate / f).is_file() for f in files):
            return candidate
    raise DataMissingError(f"dataset {name!r}: expected files {', '.join(files)} in one of: "
                           + ", ".join(map(str, tried)))


@register_dataset("cifar10", description="CIFAR-10 32x32 RGB, 10 classes (python pickle batches under root)",
                  shape=lambda options: (3, 10, 32))
def cifar10(root: str | None = None) -> ImageDataset:
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    folder = _find(root, "cifar-10-batches-py", files, "cifar10")
    train_x, train_y = _images([read_batch(folder / f) for f in files[:5]], "labels", folder)
    test_x, test_y = _images([read_batch(folder / "test_batch")], "labels", folder)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in read_batch(folder / "batches.meta")["label_names"]]
    return ImageDataset("cifar10", train_x, train_y, test_x, test_y, 10, CIFAR10_MEAN, CIFAR10_STD, names,
                        str(folder))


@register_dataset("cifar100", description="CIFAR-100 32x32 RGB, 100 fine classes (python pickle files under root)",
                  shape=lambda options: (3, 100, 32))
def cifar100(root: str | None = None) -> ImageDataset:
    folder = _find(root, "cifar-100-python", ["train", "test", "meta"], "cifar100")
    train_x, train_y = _images([read_batch(folder / "train")], "fine_labels", folder)
    test_x, test_y = _images([read_batch(folder / "test")], "fine_labels", folder)
    meta = read_batch(folder / "meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("fine_label_names", [])]
    return ImageDataset("cifar100", train_x, train_y, test_x, test_y, 100, CIFAR100_MEAN, CIFAR100_STD,
                        names or [f"class{i}" for i in range(100)], str(folder))
