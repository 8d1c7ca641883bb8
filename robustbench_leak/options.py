"""Options of registered factories (models, dataset loaders) checked against their signatures, the
bounded ``repr`` every error message uses, and the walk every folder option's check starts with."""

from __future__ import annotations

import difflib
import inspect
import math
import typing
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic import create_model as pydantic_model


def short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a message never formats an unbounded value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing ancestor (where a folder would be made: a
    file there means none can be)."""
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def did_you_mean(name: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'models'?)' when one of ``choices`` is close to ``name`` (difflib's ratio >= 0.6,
    case-insensitive), else ''. For error messages about an unknown key or name."""
    if not isinstance(name, str) or not name or len(name) > 200:
        return ""
    options = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(name.lower(), list(options), n=1, cutoff=0.6)
    return f" (did you mean {options[close[0]]!r}?)" if close and options[close[0]] != name else ""


def option_schema(name: str, fn: Callable[..., Any], defaults: dict[str, Any],
                  ranges: dict[str, dict[str, Any]]) -> type[BaseModel]:
    """A strict pydantic model of ``fn``'s options: its annotations, ``defaults`` (``inspect.Parameter.empty``
    when required) and ``ranges`` (option -> ``Field`` constraints such as ``{"ge": 1}``)."""
    hints = typing.get_type_hints(fn)
    fields = {option: (hints.get(option, Any),
                       Field(... if default is inspect.Parameter.empty else default, **ranges.get(option, {})))
              for option, default in defaults.items()}
    return pydantic_model(f"{name}_options", __config__=ConfigDict(extra="forbid", strict=True,
                                                                    allow_inf_nan=False), **fields)


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The path and value of the first NaN or infinity inside ``value`` (nested mappings and lists), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def validate_options(schema: type[BaseModel], options: dict[str, Any]) -> None:
    """``ValueError`` '<option>: <what is wrong> (got <value>)' for the first bad option. Numbers nested in a
    free-form option (``timm_kwargs``) must be finite too: NaN passes every range check of the code they reach
    (``nn.Dropout(nan)`` builds, then fails in the first forward)."""
    found = _non_finite(options, "")
    if found:
        raise ValueError(f"{found[0]}: Input should be a finite number (got {found[1]})")
    try:
        schema(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{option}: {err['msg']} (got {short(err.get('input'))})") from None
