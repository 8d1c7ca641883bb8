"""Window functions for windowed convolutions.

The official code (Tomen & van Gemert, ``windowed_conv.py``) uses the symmetric NumPy window of
length k and the plain outer product ``outer(w, w)`` as the 2-D window, without normalisation.
That is the default here. The unofficial port (EvgenyKashin/non-leaking-conv) applies the square
root of that outer product: ``WindowSpec(name="hamming", sqrt=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.signal import windows as sp_windows

from ..options import did_you_mean

WindowFn = Callable[..., np.ndarray]

# name -> (function of (length, **params), allowed params with defaults)
_WINDOWS: dict[str, tuple[WindowFn, dict[str, float]]] = {
    "none": (lambda n: np.ones(n), {}),
    "hamming": (np.hamming, {}),
    "hann": (np.hanning, {}),
    "blackman": (np.blackman, {}),
    "kaiser": (lambda n, beta: np.kaiser(n, beta), {"beta": 14.0}),
    "tukey": (lambda n, alpha: sp_windows.tukey(n, alpha, sym=True), {"alpha": 0.5}),
    "gaussian": (lambda n, sigma: sp_windows.gaussian(n, sigma, sym=True), {"sigma": 1.0}),
}
NORMALIZATIONS = ("none", "mean", "energy")


def window_names() -> list[str]:
    return list(_WINDOWS)


def window_params(name: str) -> dict[str, float]:
    """Tunable parameters of a window and their defaults."""
    return dict(_lookup(name)[1])


def _lookup(name: str) -> tuple[WindowFn, dict[str, float]]:
    if name not in _WINDOWS:
        raise ValueError(f"unknown window {name!r}{did_you_mean(name, _WINDOWS)}; known windows: "
                         f"{', '.join(_WINDOWS)}")
    return _WINDOWS[name]


def window_1d(name: str, length: int, **params: float) -> np.ndarray:
    """Symmetric 1-D window of ``length`` taps, float64, exactly as NumPy/SciPy compute it."""
    fn, defaults = _lookup(name)
    unknown = set(params) - set(defaults)
    if unknown:
        allowed = ", ".join(defaults) or "none"
        raise ValueError(f"window {name!r} takes no parameter {sorted(unknown)}; allowed: {allowed}")
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    return np.asarray(fn(length, **{**defaults, **params}), dtype=np.float64)


@dataclass(frozen=True)
class WindowSpec:
    """Which 2-D window a convolution applies; recorded with every result."""

    name: str = "none"
    sqrt: bool = False
    normalize: str = "none"
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        window_1d(self.name, 3, **self.params)  # validates name and params
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"window normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")

    @classmethod
    def parse(cls, spec: "str | dict[str, Any] | WindowSpec | None") -> "WindowSpec":
        """Accepts ``"hamming"``, ``{"name": "kaiser", "beta": 8, "sqrt": true}`` or a WindowSpec."""
        if spec is None:
            return cls()
        if isinstance(spec, WindowSpec):
            return spec
        if isinstance(spec, str):
            return cls(name=spec)
        if isinstance(spec, dict):
            spec = dict(spec)
            if "name" not in spec:
                raise ValueError(f"window spec needs a 'name' (one of {', '.join(_WINDOWS)}), got {spec}")
            name = spec.pop("name")
            sqrt = bool(spec.pop("sqrt", False))
            normalize = spec.pop("normalize", "none")
            return cls(name=name, sqrt=sqrt, normalize=normalize, params={k: float(v) for k, v in spec.items()})
        raise ValueError(f"window must be a name or a mapping, got {type(spec).__name__}")

    @property
    def is_identity(self) -> bool:
        return self.name == "none" and self.normalize == "none"

    def label(self) -> str:
        """Short stable text naming this window, e.g. ``hamming`` or ``sqrt-kaiser(beta=8)/mean``."""
        text = self.name
        if self.params:
            text += "(" + ",".join(f"{k}={v:g}" for k, v in sorted(self.params.items())) + ")"
        if self.sqrt:
            text = "sqrt-" + text
        if self.normalize != "none":
            text += "/" + self.normalize
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sqrt": self.sqrt, "normalize": self.normalize, **self.params}

    def build_2d(self, kh: int, kw: int) -> np.ndarray:
        """The ``kh x kw`` window multiplied into a kernel (float64)."""
        win = np.outer(window_1d(self.name, kh, **self.params), window_1d(self.name, kw, **self.params))
        if self.sqrt:
            # np.blackman's end taps are -1.4e-17; without the clamp their products turn into NaN
            win = np.sqrt(np.clip(win, 0.0, None))
        if self.normalize == "mean":
            win = win / win.mean()
        elif self.normalize == "energy":
            # keeps the squared sum of a kernel with i.i.d. weights unchanged in expectation
            win = win / np.sqrt(np.mean(win**2))
        return win
