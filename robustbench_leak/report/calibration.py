"""How often the verdict rules call a difference where there is none. Null comparisons are drawn from the
exact distribution of the sufficient statistics of a balanced crossed seed x image normal model (the grand
mean and the three independent mean squares), so a million comparisons take seconds; the rules' standard
error is the one :mod:`robustbench_leak.crossed` computes from them. :func:`per_image_rates` checks the same
rule on whole (seeds, images) arrays through :func:`robustbench_leak.crossed.crossed`. Used by
``scripts/verdict-calibration.py`` (the published numbers) and the CI test (a smaller draw)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ..crossed import crossed, upper_p


@dataclass(frozen=True)
class Components:
    """Variance components of the per-image difference A - B: seed, image (shared test set), interaction."""
    seed: float
    image: float
    interaction: float


def null_statistics(rng: np.random.Generator, n_sims: int, k: int, n: int,
                    c: Components) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, MS_seed, MS_img, MS_err) of ``n_sims`` null comparisons with k seeds and n images."""
    e_seed = c.interaction + n * c.seed
    e_img = c.interaction + k * c.image
    mean = rng.normal(0.0, np.sqrt((e_seed + e_img - c.interaction) / (k * n)), n_sims)
    df_err = (k - 1) * (n - 1)
    return (mean, e_seed * rng.chisquare(k - 1, n_sims) / (k - 1), e_img * rng.chisquare(n - 1, n_sims) / (n - 1),
            c.interaction * rng.chisquare(df_err, n_sims) / df_err)


def rule_p_values(mean: np.ndarray, ms_seed: np.ndarray, ms_img: np.ndarray, ms_err: np.ndarray, k: int,
                  n: int) -> dict[str, np.ndarray]:
    """Two-sided p of the crossed standard error (V_sh truncated at 0, as the report computes it) with t
    (k - 1 df), with Satterthwaite's df, and with Cochran and Cox's weighted critical value (``cochran-cox``:
    its p is found by the weighted quantiles' root, so here it is returned as the statistic's excess over the
    critical value at each alpha, see :func:`rejection_rates`)."""
    var = ms_seed / (k * n) + np.maximum(0.0, (ms_img - ms_err) / (k * n))
    z = np.abs(mean) / np.sqrt(var)
    positive = ms_img > ms_err
    den = ms_seed ** 2 / (k - 1) + ms_img ** 2 / (n - 1) + ms_err ** 2 / ((k - 1) * (n - 1))
    df = np.where(positive, (ms_seed + ms_img - ms_err) ** 2 / den, k - 1.0)
    return {"t(k-1)": 2 * sps.t.sf(z, k - 1), "satterthwaite": 2 * sps.t.sf(z, df)}


def cochran_cox_rejects(mean: np.ndarray, ms_seed: np.ndarray, ms_img: np.ndarray, ms_err: np.ndarray, k: int,
                        n: int, alpha: float) -> np.ndarray:
    """Whether Cochran and Cox's weighted two-sided test (the rules' from ``weighted_from`` seeds) rejects."""
    seed_part = ms_seed / (k * n)
    image_part = np.maximum(0.0, (ms_img - ms_err) / (k * n))
    w = seed_part / (seed_part + image_part)
    crit = w * sps.t.isf(alpha / 2, k - 1) + (1 - w) * sps.t.isf(alpha / 2, (k - 1) * (n - 1))
    return np.abs(mean) / np.sqrt(seed_part + image_part) > crit


def rejection_rates(n_sims: int, k: int, n: int, c: Components, alphas: tuple[float, ...] = (0.05, 0.05 / 12),
                    seed: int = 0) -> dict[str, dict[float, float]]:
    """Share of null comparisons each test rejects at each alpha."""
    draws = null_statistics(np.random.default_rng(seed), n_sims, k, n, c)
    ps = rule_p_values(*draws, k, n)
    out = {name: {a: float(np.mean(p < a)) for a in alphas} for name, p in ps.items()}
    out["cochran-cox"] = {a: float(np.mean(cochran_cox_rejects(*draws, k, n, a))) for a in alphas}
    return out


def holm_family_error(n_families: int, k: int, n: int, c: Components, m: int = 12, alpha: float = 0.05,
                      seed: int = 1) -> float:
    """Share of null families of ``m`` independent comparisons in which Holm decides any one with the rules'
    test at k seeds (Cochran-Cox; t(k-1) below 5 seeds): Holm decides one exactly when one is rejected at
    alpha / m."""
    draws = null_statistics(np.random.default_rng(seed), n_families * m, k, n, c)
    if k >= 5:
        hit = cochran_cox_rejects(*draws, k, n, alpha / m)
    else:
        hit = rule_p_values(*draws, k, n)["t(k-1)"] < alpha / m
    return float(np.mean(hit.reshape(n_families, m).any(1)))


def per_image_rates(n_sims: int, k: int, n: int, seed_sd: float, base: float = 0.7, flip: float = 0.1,
                    alpha: float = 0.05, seed: int = 2) -> float:
    """Null 0/1 accuracy comparisons as whole arrays: per seed, each model is correct on an image with the
    same probability (shared per-image difficulty, a seed shift of SD ``seed_sd`` in both directions); the
    share the report's crossed() + weighted-t rule rejects at ``alpha``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_sims):
        difficulty = rng.random(n) < base
        shift = rng.normal(0, seed_sd, size=(k, 1))
        a = np.where(rng.random((k, n)) < flip + shift, ~difficulty, difficulty)
        b = np.where(rng.random((k, n)) < flip - shift, ~difficulty, difficulty)
        x = crossed(a.astype(float) - b.astype(float))
        w = x.w_seed if k >= 5 else 1.0
        hits += bool(2 * upper_p(abs(x.effect) / x.se, w, k, (k - 1) * (n - 1)) < alpha) if x.se > 0 else False
    return hits / n_sims
