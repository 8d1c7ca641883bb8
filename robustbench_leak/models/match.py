"""Parameter matching: the ``width_multiplier`` that gives a model another model's parameter count.

The unofficial port matched a 7x7 ResNet-18 to the 3x3 one by hand (x0.4375; seed 002). Here the
multiplier is searched on the grid k / 1024 (exact binary fractions, so the options hash stably; at
1/1024 every channel count of a 512-wide layer is reachable), by bisection on the parameter count,
which never decreases with k. Models are built on the meta device, so a search costs well under a
second for the zoo's CNNs.
"""

from __future__ import annotations

from typing import Any, Callable

from .registry import get_entry
from .counting import build_for_counting, count_params

GRID = 1024
MAX_MULTIPLIER = 16


def params_of(arch: str, options: dict[str, Any], in_chans: int, num_classes: int) -> int:
    return count_params(build_for_counting(arch, num_classes, in_chans, options))


def match_width(arch: str, options: dict[str, Any], target: int, in_chans: int, num_classes: int,
                tolerance: float = 0.02) -> tuple[float, int]:
    """``(width_multiplier, params)`` closest to ``target`` parameters; ``ValueError`` when the closest
    is more than ``tolerance`` (relative) away or the model has no ``width_multiplier`` option."""
    if "width_multiplier" not in get_entry(arch).options():
        raise ValueError(f"model {arch!r} has no width_multiplier option to match parameter counts with")
    cache: dict[int, int] = {}

    def count(k: int) -> int:
        if k not in cache:
            cache[k] = params_of(arch, {**options, "width_multiplier": k / GRID}, in_chans, num_classes)
        return cache[k]

    k = _closest(count, target)
    params = count(k)
    rel = params / target - 1
    if abs(rel) > tolerance:
        raise ValueError(f"cannot match {target:,} parameters within {tolerance:.0%}: the closest width_multiplier "
                         f"{k / GRID:g} gives {params:,} ({rel:+.1%})")
    return k / GRID, params


def _closest(count: Callable[[int], int], target: int) -> int:
    hi = GRID
    while count(hi) < target and hi < MAX_MULTIPLIER * GRID:
        hi *= 2
    lo = 1
    if count(lo) >= target:
        return lo
    if count(hi) <= target:
        return hi
    while hi - lo > 1:  # invariant: count(lo) <= target < count(hi)
        mid = (lo + hi) // 2
        if count(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo if target - count(lo) <= count(hi) - target else hi
