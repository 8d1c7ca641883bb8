"""One interface for every attack: parameters checked when it is built, then ``run(model, x, y)``."""

from __future__ import annotations

import math

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from ..metrics import Metric, declare, metric_spec
from ..options import did_you_mean, short
from ..plugins import load_plugins, origin


MAX_COUNT = 1_000_000  # an integer parameter with no upper bound of its own: beyond it, a typo that runs for days
MAX_GRID = 100_000  # transforms in a spatial grid: translations x translations x rotations


def check_grid(kind: str, params: dict[str, Any]) -> None:
    """``ValueError`` when a spatial attack's grid of transforms is larger than ``MAX_GRID``."""
    size = params["num_translations"] ** 2 * params["num_rotations"]
    if size > MAX_GRID:
        raise ValueError(f"attack {kind!r}: num_translations^2 x num_rotations = {size:,} transforms; at most "
                         f"{MAX_GRID:,} (each is a forward pass over every image)")


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric parameter: ``lo``/``hi`` bounds (None: unbounded), open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return " and ".join(parts) or "any number"


def at_least(lo: float) -> Range:
    return Range(lo=lo)


def above(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


@dataclass
class AttackResult:
    metrics: dict[str, float]
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample arrays, same length as y
    info: dict[str, Any] = field(default_factory=dict)
    transient: dict[str, Any] = field(default_factory=dict)  # for checks after the attack; never stored


class Attack(ABC):
    kind: ClassVar[str]
    engine: ClassVar[str]
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # The metrics it reports, in display order: a ``Metric`` declares one (name, description, unit, percent,
    # direction) next to the attack; a plain name refers to one declared elsewhere (metrics.py's shared ones).
    metrics: ClassVar[tuple[str, ...]] = ()
    declares: ClassVar[tuple[Metric, ...]] = ()  # metrics it stores but does not show as leaderboard columns
    needs_fit: ClassVar[bool] = False
    preferred_engine: ClassVar[bool] = False  # the engine a config gets when it names none
    # A minimum-norm L2 attack (per-sample l2/rho): the runner gives it the DeepFool sanity checks
    # (re-check of every example, unbounded PGD against gradient masking).
    minimum_norm: ClassVar[bool] = False
    # The norm a minimum-norm attack minimises: "l2" (its curves read the samples' l2) or "linf" (``linf``).
    norm: ClassVar[str] = "l2"
    # Parameters added after results were stored, at the value that behaves as before they existed: a
    # cell's key leaves them out at that value, so stored cells stay valid.
    key_neutral: ClassVar[dict[str, Any]] = {}
    # ``budget`` (in ``defaults`` of the minimum-norm attacks that take one): the most forward plus backward
    # passes through the model per image; None (the default, key-neutral) runs the attack's own step counts.
    # Raised when the engine's results change at the same parameters; a cell's key carries it only when
    # above 1, so the cells of attacks never revised keep their keys.
    version: ClassVar[int] = 1
    # Checked when the attack is built (ART's ``_check_params``): numeric ranges and string choices.
    ranges: ClassVar[dict[str, Range]] = {}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self, **params: Any) -> None:
        self.params = self.check_params(params)

    @classmethod
    def from_checked(cls, params: dict[str, Any]) -> "Attack":
        """An instance from parameters ``check_params`` accepted before (a loaded config's, or a planned task's
        with its key-neutral defaults left out): the defaults are filled in, nothing is checked twice."""
        attack = cls.__new__(cls)
        attack.params = {**cls.defaults, **params}
        return attack

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise ValueError(f"attack {cls.kind!r} (engine {cls.engine}) has no parameter "
                             f"{', '.join(map(repr, unknown))}{did_you_mean(unknown[0], cls.defaults)}; "
                             f"allowed: {', '.join(cls.defaults) or 'none'}")
        merged = {**cls.defaults, **params}
        for name, default in cls.defaults.items():
            value = merged[name]
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                merged[name] = float(value) if ok else value
            else:
                ok = True
            if not ok:
                raise ValueError(f"attack {cls.kind!r} parameter {name!r} must be {type(default).__name__}, "
                                 f"got {short(value)}")
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every range comparison
                raise ValueError(f"attack {cls.kind!r} parameter {name!r} must be a finite number"
                                 + (f" ({cls.ranges[name].describe()})" if name in cls.ranges else "")
                                 + f", got {short(value)}")
            if name == "budget" and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                           or value < 1):
                raise ValueError(f"attack {cls.kind!r} parameter 'budget' must be an integer >= 1 (forward plus "
                                 f"backward passes per image) or null (no budget), got {short(value)}")
            if name in cls.ranges and value is not None and not cls.ranges[name].contains(value):
                raise ValueError(f"attack {cls.kind!r} parameter {name!r} must be {cls.ranges[name].describe()}, "
                                 f"got {short(value)}")
            unbounded = name not in cls.ranges or cls.ranges[name].hi is None
            if isinstance(default, int) and not isinstance(default, bool) and name != "budget" and unbounded \
                    and isinstance(value, int) and value > MAX_COUNT:
                raise ValueError(f"attack {cls.kind!r} parameter {name!r} must be at most {MAX_COUNT:,} (a count "
                                 f"of steps, images or grid points), got {short(value)}")
            if name in cls.choices and value not in cls.choices[name]:
                raise ValueError(f"attack {cls.kind!r} parameter {name!r} must be one of "
                                 f"{', '.join(map(repr, cls.choices[name]))}, got {short(value)}")
        return merged

    @classmethod
    def per_example(cls, params: dict[str, Any]) -> bool:
        """Whether the attack perturbs each image on its own (then robust_accuracy counts a misclassified clean
        image as not robust, ``metrics.robust_correct``) rather than applying one transform to every image."""
        return True

    @classmethod
    def check_dataset(cls, params: dict[str, Any], dataset: str) -> None:
        """Raise ValueError when the (checked) parameters cannot run on ``dataset`` (e.g. no default for it)."""

    @classmethod
    def check_classes(cls, params: dict[str, Any], num_classes: int) -> None:
        """Raise ValueError when the (checked) parameters cannot run on a dataset of ``num_classes`` classes."""

    def bind_dataset(self, dataset: str) -> None:
        """Told the dataset's name before ``run``: an attack with per-dataset defaults fills them in here."""

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        """Attack images ``x`` in [0, 1] with labels ``y``; ``model`` is in eval mode, weights frozen.

        ``fit`` is a disjoint (images, labels) split for attacks that choose something before attacking
        (``needs_fit``), such as one global spatial transform."""


_ATTACKS: dict[tuple[str, str], type[Attack]] = {}
DEFAULT_ENGINE: dict[str, str] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: makes ``cls`` an attack configs can name (``attack: <kind>``, ``engine: <engine>``) and
    declares the ``Metric`` entries of its ``metrics`` and ``declares``."""
    declare(*(m for m in (*cls.metrics, *cls.declares) if isinstance(m, Metric)))
    _ATTACKS[(cls.kind, cls.engine)] = cls
    if cls.preferred_engine or cls.kind not in DEFAULT_ENGINE:
        DEFAULT_ENGINE[cls.kind] = cls.engine
    return cls


def _ensure_loaded() -> None:
    """The built-in attacks registered when the package imported them (``attacks/__init__.py``); plugins load
    on the first lookup."""
    load_plugins("attacks")


def attack_origin(cls: type[Attack]) -> str:
    """Where an attack comes from: built-in, a plugin (its distribution and module), or a module."""
    return origin(cls.__module__)


def undeclared_metrics(cls: type[Attack]) -> list[str]:
    """The names in ``cls.metrics`` that no declaration covers (a test keeps this empty for every attack)."""
    return [m for m in cls.metrics if metric_spec(m) is None]


def attack_class(kind: str, engine: str | None = None) -> type[Attack]:
    _ensure_loaded()
    if kind not in DEFAULT_ENGINE:
        raise KeyError(f"unknown attack {kind!r}{did_you_mean(kind, DEFAULT_ENGINE)}; known attacks: "
                       f"{', '.join(sorted(DEFAULT_ENGINE))}")
    engine = engine or DEFAULT_ENGINE[kind]
    if (kind, engine) not in _ATTACKS:
        engines = sorted(e for k, e in _ATTACKS if k == kind)
        raise KeyError(f"attack {kind!r} has no engine {engine!r}; available: {', '.join(engines)}")
    return _ATTACKS[(kind, engine)]


def list_attacks() -> list[type[Attack]]:
    _ensure_loaded()
    return [cls for _, cls in sorted(_ATTACKS.items())]


def list_engines() -> list[str]:
    """Every engine that runs some attack, sorted."""
    _ensure_loaded()
    return sorted({engine for _, engine in _ATTACKS})


def find_attack(kind: str, engine: str) -> type[Attack] | None:
    """The class of attack ``kind`` on ``engine``; None where that attack has no such engine."""
    _ensure_loaded()
    return _ATTACKS.get((kind, engine))


def build_attack(kind: str, engine: str | None = None, **params: Any) -> Attack:
    return attack_class(kind, engine)(**params)
