"""Datasets: ``load_dataset(name, train_subset=, test_subset=, **options)``.

The registry imports no loader; this package imports the built-ins; plugins register through the
entry-point group ``robustbench_leak.datasets``.
"""

from .base import ImageDataset
from .idx import IdxFormatError, read_idx, write_idx
from .registry import (
                       DataMissingError,
                       dataset_shape,
                       get_dataset_entry,
                       list_datasets,
                       load_dataset,
                       load_dataset_cached,
                       register_dataset,
)

from . import cifar, idx, imagefolder, synthetic  # noqa: F401,E402  (the built-in loaders register themselves)

__all__ = ["DataMissingError", "IdxFormatError", "ImageDataset", "dataset_shape", "get_dataset_entry", "list_datasets",
           "load_dataset", "load_dataset_cached", "read_idx", "register_dataset", "write_idx"]
