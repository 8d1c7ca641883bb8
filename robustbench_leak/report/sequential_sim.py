"""Simulated sequential runs: families of primary comparisons among models whose per-seed values share one
test set, read look by look by :class:`robustbench_leak.sequential.Family` with the closed-form standard
error sqrt(s^2 / k + V_sh) of each comparison (the true one of the simulated model, not re-estimated per
family). Used by the CI test (tests/test_sequential.py) and scripts/sequential-simulation.py.

Two generators of per-seed values: :class:`NormalModel` (each model a test-set part g_m ~ N(0, tau2) and
per-seed parts u_ms ~ N(0, sigma2): s^2 = 2 sigma2, V_sh = 2 tau2 for every comparison) and the latent 0/1
model of :mod:`robustbench_leak.report.latent_sim` (accuracies from image, model x image, seed and seed x
image effects; s^2 and V_sh per comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ..sequential import Comparison, Design, Family, fractions_for, operating

CHUNK = 100  # families drawn at once


class ValueModel(Protocol):
    def mean(self, model: str) -> float: ...
    def moments(self, a: str, b: str) -> tuple[float, float]: ...
    def draw(self, rng: np.random.Generator, models: list[str], families: int, seeds: int) -> np.ndarray: ...
    def scaled(self, factor: float) -> "ValueModel": ...
    def with_means(self, means: dict[str, float]) -> "ValueModel": ...


@dataclass(frozen=True)
class NormalModel:
    effects: dict[str, float]  # model -> true mean
    sigma2: float  # per-seed variance of one model's value
    tau2: float  # test-set variance of one model's value

    def mean(self, model: str) -> float:
        return self.effects[model]

    def moments(self, a: str, b: str) -> tuple[float, float]:
        return 2 * self.sigma2, 2 * self.tau2

    def draw(self, rng: np.random.Generator, models: list[str], families: int, seeds: int) -> np.ndarray:
        means = np.array([self.effects[m] for m in models])[None, :, None]
        g = rng.normal(0, np.sqrt(self.tau2), (families, len(models), 1))
        return means + g + rng.normal(0, np.sqrt(self.sigma2), (families, len(models), seeds))

    def scaled(self, factor: float) -> "NormalModel":
        return replace(self, sigma2=self.sigma2 * factor, tau2=self.tau2 * factor)

    def with_means(self, means: dict[str, float]) -> "NormalModel":
        return replace(self, effects=dict(means))


@dataclass(frozen=True)
class Scenario:
    name: str
    model: ValueModel
    comparisons: tuple[tuple[str, str, float | None], ...]  # (A, B, equivalence margin or None)
    seeds: tuple[int, ...] = (5, 10, 15, 20, 25, 30)  # the looks; the last is the cap


def true_nulls(sc: Scenario) -> list[set[str]]:
    """Per comparison, the decisions that would be errors under the scenario's true effects."""
    out = []
    for a, b, margin in sc.comparisons:
        d = sc.model.mean(a) - sc.model.mean(b)
        wrong = set()
        if margin is None:
            wrong |= {"supports"} if d <= 0 else set()
            wrong |= {"contradicts"} if d >= 0 else set()
        else:
            wrong |= {"supports"} if abs(d) >= margin else set()
            wrong |= {"contradicts"} if abs(d) <= margin else set()
        out.append(wrong)
    return out


def simulate(sc: Scenario, n_families: int, alpha: float = 0.05, futility: float = 0.10,
             seed: int = 0) -> dict[str, object]:
    """Run ``n_families`` sequential families: the share with any false decision (family-wise error), each
    comparison's share decided on its true side, and the mean number of seeds at stopping."""
    rng = np.random.default_rng(seed)
    models = sorted({m for a, b, _ in sc.comparisons for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    cap = sc.seeds[-1]
    moments = [sc.model.moments(a, b) for a, b, _ in sc.comparisons]
    fractions = [fractions_for(list(sc.seeds), cap, s2, v_sh) for s2, v_sh in moments]
    wrong = true_nulls(sc)
    m = len(sc.comparisons)
    errors = 0
    right = np.zeros(m)
    seeds_used = []
    for start in range(0, n_families, CHUNK):
        values = sc.model.draw(rng, models, min(CHUNK, n_families - start), cap)
        csum = np.cumsum(values, axis=2)
        for fam_values in csum:
            fam = Family(m, alpha, futility)
            for li, k in enumerate(sc.seeds):
                comps = [Comparison(float(fam_values[index[a], k - 1] - fam_values[index[b], k - 1]) / k,
                                    float(np.sqrt(s2 / k + v_sh)), margin)
                         for (a, b, margin), (s2, v_sh) in zip(sc.comparisons, moments)]
                final = k == cap
                fam.look(k, comps, [f[li] for f in fractions], final, [f[li + 1:] for f in fractions])
                if fam.done() or final:
                    seeds_used.append(k)
                    break
            errors += any(st in wrong[j] for j, st in enumerate(fam.status))
            for j, st in enumerate(fam.status):
                right[j] += st in ("supports", "contradicts") and st not in wrong[j]
    return {"fwer": errors / n_families, "errors": errors, "power": (right / n_families).tolist(),
            "expected_seeds": float(np.mean(seeds_used)), "seeds_sd": float(np.std(seeds_used, ddof=1)),
            "n": n_families}


def scenarios(model: ValueModel, comparisons: tuple[tuple[str, str, float | None], ...]) -> list[Scenario]:
    """The validation scenarios: the global null (directional effects 0, equivalence effects on the margin,
    where both of its errors are possible; at the measured variances), partial nulls (the comparison whose
    observed effect is the largest kept, the others null) and the observed effects, each at the measured
    variance components x0.5, x1 and x2."""
    models = sorted({m for a, b, _ in comparisons for m in (a, b)})
    base = float(np.mean([model.mean(m) for m in models]))
    null = {m: base for m in models}
    for a, b, margin in comparisons:
        if margin is not None:
            null[a] = null[b] + margin
    out = [Scenario("global null", model.with_means(null), comparisons)]
    diff = lambda c: abs(model.mean(c[0]) - model.mean(c[1])) if c[2] is None else 0
    keep = max(comparisons, key=diff)
    partial = dict(null)
    partial[keep[0]] = partial[keep[1]] + model.mean(keep[0]) - model.mean(keep[1])
    for scale in (0.5, 1.0, 2.0):
        out.append(Scenario(f"partial null ({keep[0]} vs {keep[1]} real) x{scale:g}",
                            model.with_means(partial).scaled(scale), comparisons))
    for scale in (0.5, 1.0, 2.0):
        out.append(Scenario(f"observed effects x{scale:g}", model.scaled(scale), comparisons))
    return out


def single(model: ValueModel, a: str, b: str, scale: float = 1.0) -> Scenario:
    """One directional comparison at its observed effect and the variance components x ``scale``."""
    return Scenario(f"{a} vs {b} x{scale:g}", model.scaled(scale), ((a, b, None),))


def analytic_single(sc: Scenario, alpha: float = 0.05, futility: float = 0.10) -> dict[str, float]:
    """Power (on the true side) and expected seeds of a one-comparison directional scenario, by numerical
    integration (:func:`robustbench_leak.sequential.operating`)."""
    (a, b, margin), = sc.comparisons
    if margin is not None:
        raise ValueError("analytic_single: directional comparisons only")
    d = sc.model.mean(a) - sc.model.mean(b)
    s2, v_sh = sc.model.moments(a, b)
    op = operating(Design(list(sc.seeds), s2, v_sh), d, alpha, futility)
    return {"power": op["supports"] if d > 0 else op["contradicts"], "expected_seeds": op["expected_seeds"],
            "wrong_side": op["contradicts"] if d > 0 else op["supports"]}
