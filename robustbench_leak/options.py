"""Options of registered factories (models, dataset loaders) checked against their signatures, and the
bounded ``repr`` every error message uses."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic import create_model as pydantic_model


def short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a message never formats an unbounded value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


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


def validate_options(schema: type[BaseModel], options: dict[str, Any]) -> None:
    """``ValueError`` '<option>: <what is wrong> (got <value>)' for the first bad option."""
    try:
        schema(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{option}: {err['msg']} (got {short(err.get('input'))})") from None
