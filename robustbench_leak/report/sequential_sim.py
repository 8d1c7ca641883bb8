"""Simulated sequential runs: families of primary comparisons among models whose per-seed values share one
test set, read look by look by :class:`robustbench_leak.sequential.Family` with the closed-form standard
error. Used by the CI test (tests/test_sequential.py) and scripts/sequential-simulation.py.

Each model m has a test-set part g_m ~ N(0, tau2) (the model x image effects averaged over the shared test
images; the image main effect cancels in a difference) and per-seed parts u_ms ~ N(0, sigma2) (training
seed and seed x image effects). A comparison A - B at k seeds is delta + g_A - g_B + mean_s (u_As - u_Bs),
with Var = 2 sigma2 / k + 2 tau2: s^2 = 2 sigma2, V_sh = 2 tau2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sequential import Comparison, Design, Family, fractions_for, operating


@dataclass(frozen=True)
class Scenario:
    name: str
    effects: dict[str, float]  # model -> true mean (its difference to others is the true effect)
    comparisons: tuple[tuple[str, str, float | None], ...]  # (A, B, equivalence margin or None)
    sigma2: float  # per-seed variance of one model's value
    tau2: float  # test-set variance of one model's value
    seeds: tuple[int, ...] = (5, 10, 15, 20, 25, 30)  # the looks; the last is the cap


def true_nulls(sc: Scenario) -> list[set[str]]:
    """Per comparison, the decisions that would be errors under the scenario's true effects."""
    out = []
    for a, b, margin in sc.comparisons:
        d = sc.effects[a] - sc.effects[b]
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
    models = sorted(sc.effects)
    index = {m: i for i, m in enumerate(models)}
    cap = sc.seeds[-1]
    s2, v_sh = 2 * sc.sigma2, 2 * sc.tau2
    fractions = fractions_for(list(sc.seeds), cap, s2, v_sh)
    wrong = true_nulls(sc)
    m = len(sc.comparisons)
    errors = 0
    right = np.zeros(m)
    seeds_used = []
    for _ in range(n_families):
        g = rng.normal(0, np.sqrt(sc.tau2), len(models))
        u = rng.normal(0, np.sqrt(sc.sigma2), (len(models), cap))
        csum = np.cumsum(u, axis=1)
        fam = Family(m, alpha, futility)
        for li, k in enumerate(sc.seeds):
            comps = []
            for a, b, margin in sc.comparisons:
                ia, ib = index[a], index[b]
                est = sc.effects[a] - sc.effects[b] + g[ia] - g[ib] + (csum[ia, k - 1] - csum[ib, k - 1]) / k
                comps.append(Comparison(est, float(np.sqrt(s2 / k + v_sh)), margin))
            final = k == cap
            fam.look(k, comps, [fractions[li]] * m, final, [fractions[li + 1:]] * m)
            if fam.done() or final:
                seeds_used.append(k)
                break
        errors += any(st in wrong[j] for j, st in enumerate(fam.status))
        for j, st in enumerate(fam.status):
            right[j] += st in ("supports", "contradicts") and st not in wrong[j]
    return {"fwer": errors / n_families, "errors": errors, "power": (right / n_families).tolist(),
            "expected_seeds": float(np.mean(seeds_used)), "seeds_sd": float(np.std(seeds_used, ddof=1)),
            "n": n_families}


def scenarios(effects: dict[str, float], comparisons: tuple[tuple[str, str, float | None], ...], sigma2: float,
              tau2: float) -> list[Scenario]:
    """The validation scenarios: the global null (directional effects 0, equivalence effects on the margin,
    where both of its errors are possible), partial nulls (the comparisons whose observed effect is the
    largest kept, the others null) and the observed effects, each at the measured variance components x0.5,
    x1 and x2 (the global null's error rate does not depend on the scale: one is run)."""
    null = {m: 0.0 for m in effects}
    out = []
    for a, b, margin in comparisons:
        if margin is not None:
            null[a] = null[b] + margin
    out.append(Scenario("global null", null, comparisons, sigma2, tau2))
    keep = max(comparisons, key=lambda c: abs(effects[c[0]] - effects[c[1]]) if c[2] is None else 0)
    partial = dict(null)
    partial[keep[0]] = partial[keep[1]] + effects[keep[0]] - effects[keep[1]]
    for scale in (0.5, 1.0, 2.0):
        out.append(Scenario(f"partial null ({keep[0]} vs {keep[1]} real) x{scale:g}", partial, comparisons,
                            sigma2 * scale, tau2 * scale))
    for scale in (0.5, 1.0, 2.0):
        out.append(Scenario(f"observed effects x{scale:g}", effects, comparisons, sigma2 * scale, tau2 * scale))
    return out


def analytic_single(sc: Scenario, alpha: float = 0.05, futility: float = 0.10) -> dict[str, float]:
    """Power (on the true side) and expected seeds of a one-comparison directional scenario, by numerical
    integration (:func:`robustbench_leak.sequential.operating`)."""
    (a, b, margin), = sc.comparisons
    if margin is not None:
        raise ValueError("analytic_single: directional comparisons only")
    d = sc.effects[a] - sc.effects[b]
    op = operating(Design(list(sc.seeds), 2 * sc.sigma2, 2 * sc.tau2), d, alpha, futility)
    return {"power": op["supports"] if d > 0 else op["contradicts"], "expected_seeds": op["expected_seeds"],
            "wrong_side": op["contradicts"] if d > 0 else op["supports"]}
