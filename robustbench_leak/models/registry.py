"""Model registry: ``@register_model`` and ``create_model``, in the manner of timm.

A registered factory takes ``num_classes`` and ``in_chans`` plus keyword options; its signature is
the list of options a config may set. Any timm model is available as ``timm:<name>``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn
from pydantic import BaseModel

from ..options import did_you_mean, option_schema, short, validate_options
from ..plugins import load_plugins, origin

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    family: str
    description: str
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)  # option -> pydantic Field constraints

    def options(self) -> dict[str, Any]:
        """Option names with their defaults (``inspect.Parameter.empty`` when required)."""
        sig = inspect.signature(self.factory)
        return {p.name: p.default for p in sig.parameters.values()
                if p.name not in ("num_classes", "in_chans", "timm_name")
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


    @property
    def origin(self) -> str:
        """built-in, the plugin that registered it, or the module that did."""
        return origin(self.factory.__module__)

    def schema(self) -> type[BaseModel]:
        return _option_schema(self.name)


# ranges shared by the zoo's factories; a model's own ``ranges`` add to or override these
COMMON_RANGES: dict[str, dict[str, Any]] = {
    "n_layers": {"ge": 1, "le": 512}, "width": {"ge": 1, "le": 1 << 16}, "kernel_size": {"ge": 1, "le": 63},
    "first_kernel_size": {"ge": 1, "le": 63}, "stem_kernel_size": {"ge": 1, "le": 63},
    "first_stride": {"ge": 1, "le": 16}, "width_multiplier": {"gt": 0, "le": 64}, "image_size": {"ge": 1, "le": 4096},
}

_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, family: str, description: str = "",
                   ranges: dict[str, dict[str, Any]] | None = None) -> Callable:
    """Register a factory; ``ranges`` maps an option to pydantic ``Field`` constraints such as ``{"ge": 2}``."""
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, fn, family, description or (fn.__doc__ or "").strip().split("\n")[0],
                                     dict(ranges or {}))
        return fn
    return decorator


@functools.lru_cache(maxsize=None)
def _option_schema(name: str) -> type[BaseModel]:
    entry = _REGISTRY[name]
    ranges = {o: {**COMMON_RANGES.get(o, {}), **entry.ranges.get(o, {})} for o in entry.options()}
    return option_schema(name, entry.factory, entry.options(), ranges)


def is_registered(name: str) -> bool:
    """Whether a factory is registered as ``name`` so far (plugins register on the first lookup)."""
    return name in _REGISTRY


def _ensure_loaded() -> None:
    """The zoo registered when ``models/__init__.py`` imported it; plugins load on the first lookup."""
    load_plugins("models")


INTERNAL_FAMILIES = ("user",)  # e.g. evaluate()'s own nn.Module: built by the API call, never from a config


def list_models() -> list[ModelEntry]:
    """The architectures a config can name (``rbleak list models``); internal ones are left out."""
    _ensure_loaded()
    return sorted((e for e in _REGISTRY.values() if e.family not in INTERNAL_FAMILIES), key=lambda e: e.name)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; ``timm:<x>`` resolves to the timm adapter after checking x."""
    _ensure_loaded()
    if name.startswith(TIMM_PREFIX):
        import timm

        timm_name = name[len(TIMM_PREFIX):]
        if not timm.is_model(timm_name):
            close = timm.list_models(f"*{timm_name[:6]}*")[:8] if timm_name else []
            hint = f"; similar timm models: {', '.join(close)}" if close else ""
            raise KeyError(f"unknown timm model {timm_name!r}{hint}")
        return _REGISTRY["timm"]
    if name not in _REGISTRY or name == "timm":
        names = [e.name for e in list_models() if e.name != "timm"]
        raise KeyError(f"unknown model {name!r}{did_you_mean(name, names)}; known models: {', '.join(names)}, or "
                       "timm:<any timm model name>")
    return _REGISTRY[name]


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming an option that model ``name`` does not take, or a value of the wrong type
    or outside the option's range."""
    entry = get_entry(name)
    allowed = entry.options()
    unknown = sorted(map(str, set(options) - set(allowed)))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(map(short, unknown))}"
                         f"{did_you_mean(unknown[0], allowed)}; allowed: {', '.join(allowed)}")
    validate_options(entry.schema(), options)


def create_model(name: str, num_classes: int, in_chans: int, **options: Any) -> nn.Module:
    """Build a fresh (untrained) model by registered name or ``timm:<name>``."""
    entry = get_entry(name)
    check_options(name, options)
    if name.startswith(TIMM_PREFIX):
        options = {"timm_name": name[len(TIMM_PREFIX):], **options}
    return entry.factory(num_classes=num_classes, in_chans=in_chans, **options)
