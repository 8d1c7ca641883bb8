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


def metric_intervals(samples: dict[str, np.ndarray], metrics: dict[str, float], seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% CIs for the accuracy-type metrics and mean rho present in ``metrics``."""
    if not {"label", "clean_pred", "adv_pred"} <= set(samples):
        return {}
    y, clean, adv = samples["label"], samples["clean_pred"], samples["adv_pred"]
    correct = clean == y
    recipes: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "accuracy": (correct, None),
        "clean_accuracy": (correct, None),
        "robust_accuracy": (adv == y, None),
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
