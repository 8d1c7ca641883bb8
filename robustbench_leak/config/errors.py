"""Config errors: one line that names the file, the key (a dotted path such as
``models[1].options.width``), the value and what is allowed there."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from ..options import did_you_mean, short


class ConfigError(ValueError):
    """A config that cannot be run; the message names file, key and what is expected."""


def key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "AttackCfg") or "[" in str(part):  # union branch names pydantic adds
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            continue
        nxt = None
        ann = field.annotation
        for c in [ann, *getattr(ann, "__args__", ())]:
            for inner in [c, *getattr(c, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nxt = inner
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _union_branch_mismatch(err: dict[str, Any]) -> bool:
    """An error from the branch of a ``str | Model`` union that does not fit the input's type: a mapping
    reported as 'not a valid string', or a string checked against the mapping branch."""
    loc = err["loc"]
    if "str" in loc and isinstance(err.get("input"), dict):
        return True
    return any(part in ("AttackCfg",) for part in loc) and err["type"] == "model_type"


def format_validation(path: str, exc: ValidationError, schema: type[BaseModel], prefix: str = "") -> str:
    lines: list[str] = []
    # an unknown key first: a typo ('modles') also makes its key missing, and the typo is the news
    for err in sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden"):
        if _union_branch_mismatch(err):
            continue
        loc = err["loc"]
        key = prefix + key_path(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc)
            msg = (f"unknown key {short(loc[-1])}{did_you_mean(loc[-1], allowed)}"
                   + (f"; allowed keys: {', '.join(allowed)}" if allowed else ""))
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = f"{err['msg']} (got {short(err.get('input'))})"
        line = f"{path}: {key}: {msg}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines[:3]) + (f"\n{path}: ... and {len(lines) - 3} more problems" if len(lines) > 3 else "")
