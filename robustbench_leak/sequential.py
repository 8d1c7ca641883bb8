"""Group-sequential seeds: adding seeds in batches until every primary comparison is decided or futile.

Each comparison's statistic at look l is Z = (effect - bound) / SE(k_l) with Var(k) = s^2 / k + V_sh, so its
information I(k) = 1 / Var(k) saturates at 1 / V_sh however many seeds are added (the shared test set). The
information fraction of look l is t_l = I(k_l) / I(K), K the cap on seeds, and alpha is spent on it (not on
k / K) by a Lan-DeMets O'Brien-Fleming function, one-sided at level a: a(t) = 2 - 2 Phi(z_{1-a/2} / sqrt(t)).

Every comparison has two directions (directional: above 0 supports, below 0 contradicts; equivalence: inside
the margin, both one-sided tests of the TOST, supports; beyond it contradicts), each tested at half the
comparison's local level. The family's levels follow Holm's graph (Maurer and Bretz 2013): a comparison
starts at alpha / m; when one is decided its level is passed on in equal parts to those still open, whose
boundaries are then those of the larger level on the same information fractions. Futility is non-binding
(the boundaries ignore it, so stopping for futility or going on both keep the error rate): a comparison is
futile when its conditional power at the cap, at the current estimate, is below ``futility`` on both sides.

Boundaries and crossing probabilities come from the numerical integration of the score process on a grid
(Armitage, McPherson and Rowe; Jennison and Turnbull ch. 19).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import ndtr

GRID = 601  # points of the score grid
SPAN = 9.0  # the grid covers +-SPAN standard deviations of the score at each look


def obf_spent(t: float, a: float) -> float:
    """Lan-DeMets O'Brien-Fleming alpha spent by information fraction ``t`` of a one-sided level-``a`` test."""
    if t <= 0:
        return 0.0
    return float(min(a, 2.0 - 2.0 * sps.norm.cdf(sps.norm.isf(a / 2) / np.sqrt(min(t, 1.0)))))


def _grid(t: float, center: float = 0.0) -> np.ndarray:
    return np.linspace(center - SPAN * np.sqrt(t), center + SPAN * np.sqrt(t), GRID)


def _propagate(density: np.ndarray, src: np.ndarray, dst: np.ndarray, dt: float, drift: float) -> np.ndarray:
    """Density of the score on ``dst`` after an increment N(drift dt, dt) from ``density`` on ``src``."""
    h = src[1] - src[0]
    sd = np.sqrt(dt)
    kernel = sps.norm.pdf((dst[:, None] - src[None, :] - drift * dt) / sd) / sd
    return kernel @ (density * h)


def _upper_tail(density: np.ndarray, src: np.ndarray, bound: float, dt: float, drift: float) -> float:
    h = src[1] - src[0]
    return float(np.sum(density * h * ndtr(-(bound - src - drift * dt) / np.sqrt(dt))))


@lru_cache(maxsize=8192)
def _state(fractions: tuple[float, ...], a: float) -> tuple[tuple[float, ...], np.ndarray, np.ndarray]:
    """(boundaries, sub-density of the score that has not crossed, its grid) after the looks ``fractions``;
    built look by look on the cached state of the earlier looks."""
    t = fractions[-1]
    dst = _grid(t)
    final = t >= 1 - 1e-12
    if len(fractions) == 1:
        target = a if final else obf_spent(t, a)
        c = float(sps.norm.isf(max(target, 1e-300)))
        density = sps.norm.pdf(dst / np.sqrt(t)) / np.sqrt(t)
        return (c,), np.where(dst < c * np.sqrt(t), density, 0.0), dst
    bounds, density, src = _state(fractions[:-1], a)
    prev = fractions[-2]
    dt = max(t - prev, 1e-12)
    target = (a if final else obf_spent(t, a)) - obf_spent(prev, a)

    def excess(b_: float) -> float:
        return _upper_tail(density, src, b_, dt, 0.0) - target

    hi = SPAN * np.sqrt(t)
    b = brentq(excess, -hi, hi, xtol=1e-10) if target > 0 and excess(hi) < 0 < excess(-hi) else hi
    nxt = _propagate(density, src, dst, dt, 0.0)
    return bounds + (float(b / np.sqrt(t)),), np.where(dst < b, nxt, 0.0), dst


def boundaries(fractions: tuple[float, ...], a: float) -> tuple[float, ...]:
    """One-sided upper boundaries (Z scale) at information ``fractions`` (increasing, the last <= 1; the last
    look spends all that is left when it is 1) for level ``a`` with OBF spending."""
    return _state(tuple(float(x) for x in fractions), float(a))[0]


def fractions_for(seeds: list[int], cap: int, s2: float, v_shared: float) -> tuple[float, ...]:
    """Information fractions I(k) / I(cap) of looks at ``seeds`` seeds, I(k) = 1 / (s2 / k + v_shared)."""
    full = 1.0 / (s2 / cap + v_shared)
    return tuple(float(min(1.0, (1.0 / (s2 / k + v_shared)) / full)) for k in seeds)


def conditional_power(z, t: float, bound_final: float):
    """Power to cross ``bound_final`` at t = 1 from Z = ``z`` (a number or an array) at fraction ``t``, the
    drift estimated as now (B-value z sqrt(t), drift B / t)."""
    z = np.asarray(z, dtype=np.float64)
    if t >= 1:
        return (z >= bound_final).astype(np.float64)
    b = z * np.sqrt(t)
    return ndtr(-(bound_final - b - b / t * (1 - t)) / np.sqrt(1 - t))


@dataclass
class Design:
    """One comparison's two-direction design at look times ``seeds`` (cap = the last)."""
    seeds: list[int]
    s2: float
    v_shared: float

    @property
    def fractions(self) -> tuple[float, ...]:
        return fractions_for(self.seeds, self.seeds[-1], self.s2, self.v_shared)

    def se(self, k: int) -> float:
        return float(np.sqrt(self.s2 / k + self.v_shared))


def operating(design: Design, effect: float, alpha: float, futility: float = 0.0,
              margin: float | None = None) -> dict[str, float]:
    """Analytic operating characteristics of one directional comparison (``margin`` None) at level ``alpha``
    (each direction alpha / 2), with the non-binding futility rule applied (as a run applies it, stopping):
    the probability of deciding for each side, and the expected number of seeds at stopping."""
    t = design.fractions
    c = boundaries(t, alpha / 2)
    theta = effect / design.se(design.seeds[-1])  # drift in Z units at t = 1: Z_l ~ N(theta sqrt(t_l), 1)
    density, src, prev = None, None, 0.0
    up = down = 0.0
    expected = 0.0
    for i, ti in enumerate(t):
        dst = _grid(ti, theta * ti)
        dt = ti - prev
        if density is None:
            density = sps.norm.pdf((dst - theta * ti) / np.sqrt(ti)) / np.sqrt(ti)
        else:
            density = _propagate(density, src, dst, dt, theta)
        h = dst[1] - dst[0]
        b = c[i] * np.sqrt(ti)
        upper, lower = dst >= b, dst <= -b
        p_up, p_down = float(np.sum(density[upper]) * h), float(np.sum(density[lower]) * h)
        up, down = up + p_up, down + p_down
        stop = upper | lower
        if i < len(t) - 1 and futility > 0:
            z = dst / np.sqrt(ti)
            cp = np.maximum(conditional_power(z, ti, c[-1]), conditional_power(-z, ti, c[-1]))
            stop |= cp < futility
        last = i == len(t) - 1
        p_stop = float(np.sum(density[stop]) * h) if not last else float(np.sum(density) * h)
        expected += design.seeds[i] * p_stop
        density = np.where(stop, 0.0, density)
        src, prev = dst, ti
    return {"supports": up, "contradicts": down, "expected_seeds": expected}


# The family: Holm's graph with OBF boundaries per comparison -------------------------------------------

@dataclass
class Comparison:
    """One primary comparison's look: its effect, standard error and (equivalence) margin."""
    effect: float
    se: float
    margin: float | None = None  # None: directional

    def z_scores(self) -> tuple[float, float]:
        """(the supporting direction's, the contradicting direction's) statistic."""
        if self.margin is None:
            return self.effect / self.se, -self.effect / self.se
        inside = min(self.effect + self.margin, self.margin - self.effect) / self.se
        return inside, (abs(self.effect) - self.margin) / self.se


@dataclass
class Look:
    seeds: int
    fractions: list[float]  # per comparison, the information fraction of this look
    levels: list[float]  # per comparison, its local level after this look's recycling
    bounds: list[float]  # per comparison, the boundary it was tested against (Z, per direction)
    z: list[tuple[float, float]]
    decided: list[str]  # per comparison: supports | contradicts | futile | open
    reason: str = ""


@dataclass
class Family:
    """State of a sequential family of ``m`` comparisons across looks (levels recycled through Holm's graph)."""
    m: int
    alpha: float = 0.05
    futility: float = 0.10
    history: list[list[float]] = field(default_factory=list)  # per comparison, its fractions so far
    levels: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.levels:
            self.levels = [self.alpha / self.m] * self.m
            self.status = ["open"] * self.m
            self.history = [[] for _ in range(self.m)]

    def look(self, seeds: int, comps: list[Comparison], fractions: list[float], final: bool,
             planned: list[tuple[float, ...]] | None = None) -> Look:
        """Test every comparison still open at this look; recycle the level of each one decided; mark the
        rest futile when their conditional power (against the final boundary of the looks so far and the
        ``planned`` later fractions, per comparison) is below the threshold on both sides."""
        for j, t in enumerate(fractions):
            hist = self.history[j]
            t = 1.0 if final else min(max(t, (hist[-1] + 1e-6) if hist else 1e-6), 1.0)
            hist.append(t)
        z = [c.z_scores() for c in comps]
        bounds = [float("nan")] * self.m
        changed = True
        while changed:
            changed = False
            for j in range(self.m):
                if self.status[j] in ("supports", "contradicts"):
                    continue
                c = boundaries(tuple(self.history[j]), self.levels[j] / 2)
                bounds[j] = c[-1]
                side = "supports" if z[j][0] >= c[-1] else "contradicts" if z[j][1] >= c[-1] else None
                if side is None:
                    continue
                self.status[j] = side
                open_ = [i for i in range(self.m) if self.status[i] not in ("supports", "contradicts")]
                for i in open_:
                    self.levels[i] += self.levels[j] / len(open_)
                changed = True
        if not final:
            for j in range(self.m):
                if self.status[j] in ("supports", "contradicts"):
                    continue
                t = self.history[j][-1]
                later = tuple(x for x in (planned[j] if planned else (1.0,)) if x > t) or (1.0,)
                final_c = boundaries(tuple(self.history[j]) + later, self.levels[j] / 2)[-1]
                cp = max(float(conditional_power(z[j][0], t, final_c)), float(conditional_power(z[j][1], t, final_c)))
                self.status[j] = "futile" if cp < self.futility else "open"
        return Look(seeds, [h[-1] for h in self.history], list(self.levels), bounds, z, list(self.status))

    def done(self) -> bool:
        return all(s != "open" for s in self.status)
