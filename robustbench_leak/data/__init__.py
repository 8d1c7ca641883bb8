"""Datasets: ``load_dataset(name, train_subset=, test_subset=, **options)``."""

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

__all__ = ["DataMissingError", "IdxFormatError", "ImageDataset", "dataset_shape", "get_dataset_entry", "list_datasets",
           "load_dataset", "load_dataset_cached", "read_idx", "register_dataset", "write_idx"]
