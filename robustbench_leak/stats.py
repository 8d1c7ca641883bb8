"""Confidence intervals and paired tests, all computed from stored per-sample results."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

N_BOOT = 2000
CONFIDENCE = 0.95


def _boot_indices(n: int, n_boot: int, seed: int, chunk: int = 250):
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def bootstrap_mean_ci(values: np.ndarray, mask: np.ndarray | None = None, n_boot: int = N_BOOT,
                      seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of mean(values[mask]), resampling all images (mask re-drawn too)."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.ones(len(values), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if len(values) == 0 or not mask.any():
        return float("nan"), float("nan")
    stats = []
    for idx in _boot_indices(len(values), n_boot, seed):
        m = mask[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append((values[idx] * m).sum(1) / m.sum(1))
    boot = np.concatenate(stats)
    boot = boot[np.isfinite(boot)]
    alpha = (1 - CONFIDENCE) / 2
    return float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def metric_intervals(samples: dict[str, np.ndarray], metrics: dict[str, float], seed: int = 0,
                     per_example: bool = True) -> dict[str, tuple[float, float]]:
    """95% CIs for the accuracy-type metrics and mean rho present in ``metrics``; ``per_example`` picks the
    definition of robust_accuracy the metric used (``metrics.robust_correct``)."""
    if not {"label", "clean_pred", "adv_pred"} <= set(samples):
        return {}
    y, clean, adv = samples["label"], samples["clean_pred"], samples["adv_pred"]
    correct = clean == y
    recipes: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "accuracy": (correct, None),
        "clean_accuracy": (correct, None),
        # metrics.robust_correct's definition (stats sits beside metrics, so it cannot import it)
        "robust_accuracy": ((adv == y) & correct if per_example else adv == y, None),
        "success_rate": (adv != y, correct),
        "robust_accuracy_conditional": (adv == y, correct),
    }
    if "rho" in samples:
        recipes["rho_mean"] = (samples["rho"], correct)
    return {name: bootstrap_mean_ci(v, m, seed=seed) for name, (v, m) in recipes.items() if name in metrics}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired correctness: only discordant pairs carry information."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(sps.binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return {"test": "McNemar (exact)", "n": int(len(a)), "only_a_correct": only_a, "only_b_correct": only_b,
            "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()), "p_value": p}


def wilcoxon(values_a: np.ndarray, values_b: np.ndarray) -> dict[str, Any]:
    """Wilcoxon signed-rank test on paired per-sample values (e.g. DeepFool rho of two models)."""
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) == 0 or np.all(a == b):
        p, stat = 1.0, float("nan")
    else:
        res = sps.wilcoxon(a, b)
        p, stat = float(res.pvalue), float(res.statistic)
    return {"test": "Wilcoxon signed-rank", "n": int(len(a)), "median_a": float(np.median(a)) if len(a) else np.nan,
            "median_b": float(np.median(b)) if len(b) else np.nan,
            "median_difference": float(np.median(a - b)) if len(a) else np.nan, "statistic": stat, "p_value": p}


# Two-level statistics of a paired comparison ------------------------------------------------------------
# A comparison of models A and B over k training seeds on the same n test images is held as two (k, n)
# arrays: ``diff`` (A - B per image, 0 where masked out) and ``mask`` (which images count in each seed,
# e.g. those both models classify correctly, for rho). The per-seed effect is the masked mean of ``diff``.
# Two sources of uncertainty: test-set sampling (images) and training randomness (seeds).

N_PERM = 10_000
EXACT_MAX = 16  # exact enumeration of sign flips up to 2**16 patterns; Monte Carlo beyond


def _as_paired(diff: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    diff = np.atleast_2d(np.asarray(diff, dtype=np.float64))
    mask = np.ones(diff.shape, dtype=bool) if mask is None else np.atleast_2d(np.asarray(mask, dtype=bool))
    if diff.shape != mask.shape:
        raise ValueError(f"diff {diff.shape} and mask {mask.shape} must have the same (seeds, images) shape")
    return np.where(mask, np.nan_to_num(diff), 0.0), mask


def per_seed_effects(diff: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Masked mean of A - B in each seed (NaN for a seed with no image in its mask)."""
    diff, mask = _as_paired(diff, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        return diff.sum(1) / mask.sum(1)


def _quantiles(boot: np.ndarray) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return float("nan"), float("nan")
    a = (1 - CONFIDENCE) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def paired_bootstrap(diff: np.ndarray, mask: np.ndarray | None = None, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of the mean-over-seeds effect, from one set of image draws.

    ``image``: images resampled jointly across seeds (every seed saw the same images), seeds fixed: covers
    test-set sampling only. ``two_stage``: seeds resampled with replacement, then images (jointly across the
    drawn seeds): covers training randomness too; ``two_stage_sd`` is the standard deviation of its draws,
    the standard error :func:`two_stage_se` scales for the verdicts. With few seeds the percentile interval
    of these draws is too narrow (a resample of 5 seeds underestimates their variance by (k - 1) / k).
    """
    diff, mask = _as_paired(diff, mask)
    k, n = diff.shape
    rng = np.random.default_rng(seed)
    image, two_stage = [], []
    for start in range(0, n_boot, 200):
        size = min(200, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        with np.errstate(invalid="ignore", divide="ignore"):
            stats = np.stack([diff[s][idx].sum(1) / mask[s][idx].sum(1) for s in range(k)], axis=1)  # (size, k)
        with np.errstate(invalid="ignore"):
            image.append(stats.mean(1))
        counts = np.stack([np.bincount(r, minlength=k) for r in rng.integers(0, k, size=(size, k))])
        with np.errstate(invalid="ignore"):
            two_stage.append((counts * stats).sum(1) / k)
    two = np.concatenate(two_stage)
    finite = two[np.isfinite(two)]
    sd = float(finite.std(ddof=1)) if len(finite) > 1 else float("nan")
    return {"image": _quantiles(np.concatenate(image)), "two_stage": _quantiles(two), "two_stage_sd": sd}


def t_critical(n: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile of a ``confidence`` interval of the mean of ``n`` values."""
    return float(sps.t.ppf((1 + confidence) / 2, n - 1))


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaN, NaN with fewer than two finite values)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    half = float(t_critical(len(v), confidence) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean() - half), float(v.mean() + half)


def seed_t_test(values: np.ndarray) -> dict[str, Any]:
    """Two-sided one-sample t-test of the per-seed effects against 0."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        p = float("nan")
    elif np.all(v == v[0]):
        p = 0.0 if v[0] != 0 else 1.0  # no spread: the t statistic is infinite (or undefined at 0)
    else:
        p = float(sps.ttest_1samp(v, 0.0).pvalue)
    return {"test": "one-sample t-test on per-seed effects", "n": int(len(v)), "p_value": p}


def _sign_flip_p(weights: np.ndarray, n_perm: int, seed: int) -> tuple[float, bool]:
    """Two-sided p of |sum(w)| under independent random sign flips of each weight; (p, exact)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w[w != 0]
    observed = abs(w.sum())
    tol = 1e-9 * max(1.0, np.abs(w).sum())
    if len(w) == 0:
        return 1.0, True
    lattice = _lattice_p(w)
    if lattice is not None:
        return lattice, True
    if len(w) <= EXACT_MAX:
        signs = 1 - 2 * ((np.arange(2 ** len(w))[:, None] >> np.arange(len(w))) & 1)
        return float(np.mean(np.abs(signs @ w) >= observed - tol)), True
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 500):
        size = min(500, n_perm - start)
        signs = rng.integers(0, 2, size=(size, len(w))).astype(np.float64) * 2 - 1
        hits += int(np.sum(np.abs(signs @ w) >= observed - tol))
    return (1 + hits) / (1 + n_perm), False


def _lattice_p(w: np.ndarray, max_multiple: int = 64) -> float | None:
    """Exact two-sided sign-flip p when every |w| is a small integer multiple of the smallest one (0/1
    correctness with equal image counts per seed): the flipped sum is a sum of scaled binomials, convolved
    exactly. None when the weights are not on such a lattice."""
    ratio = np.abs(w) / np.abs(w).min()
    steps = np.rint(ratio)
    if steps.max() > max_multiple or not np.allclose(ratio, steps, rtol=0, atol=1e-6):
        return None
    dist, offset = np.ones(1), 0
    for j in np.unique(steps).astype(int):
        c = int(np.sum(steps == j))
        kernel = np.zeros(2 * j * c + 1)
        kernel[::2 * j] = sps.binom.pmf(np.arange(c + 1), c, 0.5)  # value j * (2b - c) at index 2jb
        dist, offset = np.convolve(dist, kernel), offset + j * c
    observed = abs(float(np.sum(np.sign(w) * steps)))
    values = np.arange(len(dist)) - offset
    return float(min(1.0, dist[np.abs(values) >= observed - 0.5].sum()))


def sign_flip_test(values: np.ndarray) -> dict[str, Any]:
    """Exact two-sided sign-flip permutation test of the per-seed effects' mean against 0.

    With k seeds the smallest attainable p is 2 / 2**k (0.25 with 3 seeds, 0.0625 with 5)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    p, _ = _sign_flip_p(v, 0, 0) if len(v) <= EXACT_MAX else (float("nan"), False)
    return {"test": "exact sign-flip test on per-seed effects", "n": int(len(v)), "p_value": p,
            "min_p": 2.0 / 2 ** len(v) if len(v) else float("nan")}


def clustered_permutation_test(diff: np.ndarray, mask: np.ndarray | None = None, n_perm: int = N_PERM,
                               seed: int = 0) -> dict[str, Any]:
    """Paired permutation test with the image as the unit: swapping A and B on an image flips the sign of
    its difference in every seed at once, so an image that differs in several seeds counts once, not once
    per seed. The statistic is the mean-over-seeds effect (linear in the flips); two-sided.

    For 0/1 correctness this is a McNemar test clustered by image (with one seed it equals the exact
    McNemar test); for rho it is a permutation test on the mean paired difference. Exact when at most
    ``EXACT_MAX`` images differ, else Monte Carlo with ``n_perm`` draws (p = (1 + hits) / (1 + n_perm))."""
    diff, mask = _as_paired(diff, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = (diff / mask.sum(1, keepdims=True)).mean(0)  # image i's share of the mean-over-seeds effect
    weights = np.nan_to_num(weights)
    p, exact = _sign_flip_p(weights, n_perm, seed)
    differing = np.abs(diff) > 0
    return {"test": "image-clustered permutation test", "p_value": p, "exact": exact,
            "n_perm": None if exact else n_perm, "n_images": int(diff.shape[1]),
            "images_differing": int(differing.any(0).sum()),
            "images_differing_in_2_or_more_seeds": int((differing.sum(0) >= 2).sum())}


def two_stage_se(boot_sd: float, k: int) -> float:
    """The verdict's standard error: the two-stage bootstrap's SD times sqrt(k / (k - 1)), because resampling k
    seeds with replacement shrinks the seed variance by (k - 1) / k (NaN with fewer than two seeds)."""
    if k < 2 or not np.isfinite(boot_sd):
        return float("nan")
    return float(boot_sd * np.sqrt(k / (k - 1)))


def t_p_two_sided(effect: float, se: float, k: int, df: float | None = None) -> float:
    """Two-sided p of effect / se against Student's t with ``df`` (default k - 1) degrees of freedom."""
    if k < 2 or not (np.isfinite(effect) and np.isfinite(se)):
        return float("nan")
    if se == 0:
        return 1.0 if effect == 0 else 0.0
    return float(2 * sps.t.sf(abs(effect) / se, k - 1 if df is None else df))


def t_p_above(effect: float, bound: float, se: float, k: int, df: float | None = None) -> float:
    """One-sided p of H0: true effect <= bound against H1: > bound (t with ``df``, default k - 1, df)."""
    if k < 2 or not (np.isfinite(effect) and np.isfinite(se)):
        return float("nan")
    if se == 0:
        return 0.0 if effect > bound else 1.0
    return float(sps.t.sf((effect - bound) / se, k - 1 if df is None else df))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence); NaN counts as 1."""
    p = np.array([1.0 if not np.isfinite(x) else x for x in p_values], dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


def holm_ranks(p_values: list[float]) -> list[int]:
    """Each p-value's 1-based step in Holm's procedure (smallest first; ties in input order)."""
    p = np.array([1.0 if not np.isfinite(x) else x for x in p_values], dtype=np.float64)
    ranks = np.empty(len(p), dtype=int)
    ranks[np.argsort(p, kind="stable")] = np.arange(1, len(p) + 1)
    return [int(r) for r in ranks]


def mde(se: float, k: int, alpha: float, power: float = 0.8, sided: int = 2) -> float:
    """Minimal detectable effect at ``power``: (t_{1 - alpha/sided} + t_{power}) * se, t with k - 1 df."""
    if k < 2 or not np.isfinite(se):
        return float("nan")
    return float((sps.t.ppf(1 - alpha / sided, k - 1) + sps.t.ppf(power, k - 1)) * se)


def seeds_needed(distance: float, spread: float, alpha: float, power: float = 0.8, sided: int = 2,
                 max_seeds: int = 1000) -> int | None:
    """The fewest seeds k whose test detects ``distance`` with ``power``, when one seed's effect varies by
    ``spread`` (so se = spread / sqrt(k)); None when more than ``max_seeds`` or distance <= 0."""
    if not (np.isfinite(distance) and np.isfinite(spread)) or distance <= 0:
        return None
    if spread == 0:
        return 2
    for k in range(2, max_seeds + 1):
        if distance >= mde(spread / np.sqrt(k), k, alpha, power, sided):
            return k
    return None
