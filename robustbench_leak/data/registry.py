"""Dataset registry: each on-disk format registers a loader by name."""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel

from ..options import did_you_mean, option_schema, validate_options
from ..plugins import load_plugins, origin
from .base import ImageDataset


class DataMissingError(FileNotFoundError):
    """The data files a dataset needs are not where they were looked for."""


Shape = tuple[int, int, int]  # (in_chans, num_classes, image_size)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., ImageDataset]
    description: str
    shape: Callable[[dict[str, Any]], Shape] | None = None  # from the loader's options, without loading
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)  # option -> pydantic Field constraints

    def options(self) -> dict[str, Any]:
        return {p.name: p.default for p in inspect.signature(self.loader).parameters.values()}

    @property
    def origin(self) -> str:
        """built-in, the plugin that registered it, or the module that did."""
        return origin(self.loader.__module__)

    def check_options(self, options: dict[str, Any]) -> None:
        """``ValueError`` naming an option of the wrong type or outside its range (unknown ones included)."""
        validate_options(_option_schema(self.name), options)


@functools.lru_cache(maxsize=None)
def _option_schema(name: str) -> type[BaseModel]:
    entry = _REGISTRY[name]
    return option_schema(name, entry.loader, entry.options(), entry.ranges)


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str = "", shape: Callable[[dict[str, Any]], Shape] | None = None,
                     ranges: dict[str, dict[str, Any]] | None = None) -> Callable:
    """``shape(options)`` (options with the loader's defaults filled in) gives (in_chans, num_classes,
    image_size) without loading the data; without it ``dataset_shape`` loads the dataset."""
    def decorator(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        _REGISTRY[name] = DatasetEntry(name, fn, description, shape, dict(ranges or {}))
        return fn
    return decorator


def unregister_dataset(name: str) -> None:
    """Forget dataset ``name`` and every loaded copy of it (a dataset registered for one call only)."""
    if _REGISTRY.pop(name, None) is not None:
        _option_schema.cache_clear()
        clear_dataset_cache()


def _ensure_loaded() -> None:
    """The built-in loaders registered when ``data/__init__.py`` imported them; plugins load on the first lookup."""
    load_plugins("datasets")


def list_datasets() -> list[DatasetEntry]:
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def get_dataset_entry(name: str) -> DatasetEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}{did_you_mean(name, _REGISTRY)}; known datasets: "
                       f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def load_dataset(name: str, train_subset: int | None = None, test_subset: int | None = None,
                 subset_seed: int = 0, **options: Any) -> ImageDataset:
    """Load dataset ``name`` with its loader options, then take the requested subsets."""
    entry = get_dataset_entry(name)
    unknown = sorted(set(options) - set(entry.options()))
    if unknown:
        raise ValueError(f"dataset {name!r} has no option {unknown}; allowed: "
                         f"{', '.join(['train_subset', 'test_subset', 'subset_seed', *entry.options()])}")
    data = entry.loader(**options)
    data.validate()
    return data.subset(train_subset, test_subset, subset_seed)


def load_dataset_cached(spec: dict[str, Any]) -> ImageDataset:
    """``load_dataset`` for a spec (name, options, train_subset, test_subset, subset_seed), loaded once per
    process: the config check and the cells of a run share it."""
    return _load_cached(json.dumps(spec, sort_keys=True))


def clear_dataset_cache() -> None:
    """Forget loaded datasets (the cache key is the spec, not the files it resolves to)."""
    _load_cached.cache_clear()
    _load_full.cache_clear()


@functools.lru_cache(maxsize=4)
def _load_cached(spec_json: str) -> ImageDataset:
    spec = json.loads(spec_json)
    full = _load_full(spec["name"], json.dumps(spec["options"], sort_keys=True))
    return full.subset(spec["train_subset"], spec["test_subset"], spec["subset_seed"])


@functools.lru_cache(maxsize=2)
def _load_full(name: str, options_json: str) -> ImageDataset:
    return load_dataset(name, **json.loads(options_json))


def dataset_shape(name: str, options: dict[str, Any] | None = None) -> Shape:
    """(in_chans, num_classes, image_size) of dataset ``name`` with loader ``options``."""
    entry = get_dataset_entry(name)
    options = dict(options or {})
    if entry.shape is not None:
        return entry.shape({**entry.options(), **options})
    data = entry.loader(**options)
    return data.in_chans, data.num_classes, int(data.input_shape[-1])
