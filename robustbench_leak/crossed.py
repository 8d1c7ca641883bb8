"""The verdict's standard error: a crossed seed x image random-effects model of the per-image differences.

A comparison of models A and B over k training seeds on the same n test images is held as (k, n) arrays
``diff`` (A - B per image, 0 where masked out) and ``mask``. The model is y_si = mu + seed_s + image_i +
e_si (seed, test image, and their interaction). The effect is the mean over seeds of the per-seed masked
means e_s, and by the method of moments

    Var(effect) = s^2 / k + V_sh

where s^2 is the variance of the per-seed effects (training randomness plus each seed's own noise on the
images) and V_sh the mean covariance between two seeds' effects: the shared test set's part, which no
number of seeds removes. With every image in every mask this is (MS_seed + MS_img - MS_err) / (k n), the
ANOVA estimator; V_sh is estimated from the cross-products of two seeds' centred differences on the images
both masks hold, and truncated at 0 (a variance component cannot be negative).

Reference distribution: below the rules' ``weighted_from`` seeds the whole standard error is referred to t
with k - 1 df (conservative where the test set's part is large). From there on the critical value is
Cochran and Cox's weighted one, w t_{k-1} + (1 - w) t_{(k-1)(n-1)} with w = (s^2 / k) / Var, the seed part's
share: each part of the variance keeps the df of its own mean square. The null calibration
(scripts/verdict-calibration.py) shows it within [0.03, 0.06] at 0.05 and at most nominal at 0.05 / 12 from
5 seeds, where Satterthwaite's df (also computed here, on the images every mask holds) is up to 2.4 times
liberal at 0.05 / 12.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq


@dataclass(frozen=True)
class Crossed:
    effect: float
    se: float  # sqrt(s2 / k + v_shared)
    s2: float  # variance of the per-seed effects
    v_shared: float  # the shared test set's variance (the floor), >= 0
    k: int
    n: int  # test images per seed
    df_satterthwaite: float

    @property
    def w_seed(self) -> float:
        """The seed part's share of the variance (1 when the test set's part is 0)."""
        var = self.s2 / self.k + self.v_shared
        return float(self.s2 / self.k / var) if var > 0 else 1.0

    def var_at(self, seeds: int) -> float:
        """The variance this comparison would have with ``seeds`` seeds on the same test set."""
        return self.s2 / seeds + self.v_shared


def _shared_covariance(diff: np.ndarray, mask: np.ndarray, effects: np.ndarray) -> float:
    """Mean over pairs of distinct seeds of the covariance their effects share through common images."""
    k = len(effects)
    counts = mask.sum(1).astype(np.float64)
    centred = np.where(mask, diff - effects[:, None], 0.0) / counts[:, None]
    total, pairs = 0.0, 0
    for s in range(k):
        for t in range(s + 1, k):
            both = mask[s] & mask[t]
            m = int(both.sum())
            if m < 2:
                continue
            total += float(np.sum(centred[s, both] * centred[t, both])) * m / (m - 1)
            pairs += 1
    return total / pairs if pairs else 0.0


def crossed(diff: np.ndarray, mask: np.ndarray | None = None) -> Crossed:
    """Method-of-moments crossed seed x image estimate of a paired comparison (see the module docstring)."""
    diff = np.atleast_2d(np.asarray(diff, dtype=np.float64))
    mask = np.ones(diff.shape, dtype=bool) if mask is None else np.atleast_2d(np.asarray(mask, dtype=bool))
    diff = np.where(mask, np.nan_to_num(diff), 0.0)
    keep = mask.sum(1) > 0
    diff, mask = diff[keep], mask[keep]
    k, n = diff.shape
    if k == 0:
        return Crossed(float("nan"), float("nan"), float("nan"), float("nan"), 0, n, float("nan"))
    effects = diff.sum(1) / mask.sum(1)
    effect = float(effects.mean())
    if k < 2:
        return Crossed(effect, float("nan"), float("nan"), float("nan"), k, n, float("nan"))
    s2 = float(effects.var(ddof=1))
    v_sh = max(0.0, _shared_covariance(diff, mask, effects))
    var = s2 / k + v_sh
    common = mask.all(0)
    df = float(k - 1)
    if v_sh > 0 and common.sum() >= 2:
        df = satterthwaite_df(*balanced_mean_squares(diff[:, common]), k, int(common.sum()))
    return Crossed(effect, float(np.sqrt(var)), s2, v_sh, k, n, df)


def satterthwaite_df(ms_seed: float, ms_img: float, ms_err: float, k: int, n: int) -> float:
    """Satterthwaite's df of MS_seed + MS_img - MS_err (k - 1 when the image part is not positive)."""
    if ms_img <= ms_err:
        return float(k - 1)
    den = ms_seed ** 2 / (k - 1) + ms_img ** 2 / (n - 1) + ms_err ** 2 / ((k - 1) * (n - 1))
    return float((ms_seed + ms_img - ms_err) ** 2 / den) if den > 0 else float(k - 1)


def balanced_mean_squares(diff: np.ndarray) -> tuple[float, float, float]:
    """(MS_seed, MS_img, MS_err) of a complete (k, n) two-way layout without replication."""
    y = np.asarray(diff, dtype=np.float64)
    k, n = y.shape
    grand = y.mean()
    seed_means, image_means = y.mean(1), y.mean(0)
    ss_seed = n * float(np.sum((seed_means - grand) ** 2))
    ss_img = k * float(np.sum((image_means - grand) ** 2))
    ss_err = float(np.sum((y - seed_means[:, None] - image_means[None, :] + grand) ** 2))
    return ss_seed / (k - 1), ss_img / (n - 1), ss_err / ((k - 1) * (n - 1))


def critical(tail: float, w_seed: float, k: int, df_image: float) -> float:
    """Cochran and Cox's critical value for an upper tail ``tail``: w t_{k-1} + (1 - w) t_{df_image}."""
    return float(w_seed * sps.t.isf(tail, k - 1) + (1 - w_seed) * sps.t.isf(tail, df_image))


def upper_p(stat: float, w_seed: float, k: int, df_image: float) -> float:
    """One-sided p of ``stat`` (effect / SE) against Cochran and Cox's weighted reference: the tail at
    which :func:`critical` equals ``stat``."""
    if not np.isfinite(stat):
        return 0.0 if stat > 0 else 1.0
    if stat <= 0:
        return 1.0 - upper_p(-stat, w_seed, k, df_image) if stat < 0 else 0.5
    if w_seed >= 1 - 1e-12:
        return float(sps.t.sf(stat, k - 1))
    if w_seed <= 1e-12:
        return float(sps.t.sf(stat, df_image))
    f = lambda log_tail: critical(float(np.exp(log_tail)), w_seed, k, df_image) - stat
    low = np.log(1e-300)
    while not np.isfinite(f(low)) and low < np.log(1e-20):
        low += np.log(1e10)
    if f(low) < 0:
        return float(np.exp(low))
    return float(np.exp(brentq(f, low, np.log(0.5), xtol=1e-10, rtol=1e-10)))
