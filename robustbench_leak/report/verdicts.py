"""The verdict policy of the claims report, fixed in code before any result of the rerun was looked at.

Every verdict rests on the seed-level interval: the 95% Student-t interval of the per-seed effects
(A - B, each the mean over the same test images), i.e. training randomness taken as the unit. The rules
are symmetric: the same evidence is needed to reproduce a claim as to contradict it.

- Directional claim ("A beats B"): *reproduced* when the seed-level interval lies entirely on the
  claimed side of 0; *not reproduced* when it lies entirely on the other side; *inconclusive* otherwise.
- Equivalence claim ("A performs like B"): *reproduced* when the seed-level interval lies inside the
  margin (+-1 accuracy point; +-5% of B's mean rho); *not reproduced* when it lies entirely outside;
  *inconclusive* otherwise.
- Fewer than two seeds give no seed-level interval: *inconclusive*.
- A claim of several comparisons is reproduced when all are, not reproduced when any is, else inconclusive.

Per-seed sign agreement, the image-level interval and the p-values are reported alongside; they do not
enter the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ACCURACY_MARGIN = 0.01
RHO_MARGIN = 0.05  # relative to the reference model's (B's) mean rho
MIN_SEEDS = 2

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
INCONCLUSIVE, NOT_EVALUATED = "inconclusive", "not evaluated"


@dataclass(frozen=True)
class Ruling:
    verdict: str
    reason: str  # follows only from the rule that decided


def margin(metric: str, mean_b: float) -> float:
    """The equivalence margin: accuracy points, or a share of B's mean rho."""
    return RHO_MARGIN * abs(mean_b) if metric == "rho" else ACCURACY_MARGIN


def rho_text(x: float) -> str:
    """4 decimals; a nonzero value that would round to 0 keeps its sign and size (e.g. -1.2e-05)."""
    return f"{x:+.1e}" if x != 0 and abs(x) < 5e-5 else f"{x:+.4f}"


def _interval_text(lo: float, hi: float, metric: str) -> str:
    if metric == "rho":
        return f"[{rho_text(lo)}, {rho_text(hi)}]"
    return f"[{100 * lo:+.2f}, {100 * hi:+.2f}] pts"


def directional(seed_ci: tuple[float, float], n_seeds: int, metric: str) -> Ruling:
    lo, hi = seed_ci
    if n_seeds < MIN_SEEDS or not (math.isfinite(lo) and math.isfinite(hi)):
        return Ruling(INCONCLUSIVE, f"{n_seeds} seed(s): no seed-level interval")
    text = f"seed-level 95% interval {_interval_text(lo, hi, metric)}"
    if lo > 0:
        return Ruling(REPRODUCED, f"{text} lies entirely above 0")
    if hi < 0:
        return Ruling(NOT_REPRODUCED, f"{text} lies entirely below 0")
    return Ruling(INCONCLUSIVE, f"{text} includes 0")


def equivalence(seed_ci: tuple[float, float], n_seeds: int, metric: str, mean_b: float) -> Ruling:
    lo, hi = seed_ci
    if n_seeds < MIN_SEEDS or not (math.isfinite(lo) and math.isfinite(hi)):
        return Ruling(INCONCLUSIVE, f"{n_seeds} seed(s): no seed-level interval")
    m = margin(metric, mean_b)
    text = f"seed-level 95% interval {_interval_text(lo, hi, metric)}"
    bound = f"+-{m:.4f}" if metric == "rho" else f"+-{100 * m:.0f} pt"
    if -m <= lo and hi <= m:
        return Ruling(REPRODUCED, f"{text} lies inside the margin {bound}")
    if lo > m or hi < -m:
        return Ruling(NOT_REPRODUCED, f"{text} lies entirely outside the margin {bound}")
    return Ruling(INCONCLUSIVE, f"{text} crosses the edge of the margin {bound}")


def combine(verdicts: list[str]) -> str:
    """A claim holds when every comparison supports it and fails when any contradicts it."""
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def rules_text(n_seeds: int | None = None) -> str:
    """The rules in words, with the constants the code uses (stated in every report); ``n_seeds``: the most
    seeds any comparison of the report has, for the note on how wide the seed-level interval is."""
    return (f"Verdict rules (fixed in `robustbench_leak/report/verdicts.py` before the rerun; symmetric, and based "
            f"on the seed-level interval only: the 95% Student-t interval of the per-seed effects, training seeds "
            f"as the unit). A directional claim is *reproduced* when that interval lies entirely on the claimed "
            f"side of 0, *not reproduced* when it lies entirely on the other side, *inconclusive* otherwise. An "
            f"equivalence claim is *reproduced* when the interval lies inside the margin "
            f"(+-{100 * ACCURACY_MARGIN:.0f} accuracy point; +-{100 * RHO_MARGIN:.0f}% of B's mean rho), *not reproduced* when it lies entirely "
            f"outside, *inconclusive* otherwise. With fewer than {MIN_SEEDS} seeds there is no seed-level interval and "
            f"the verdict is inconclusive. A claim with several comparisons is reproduced when all are, not "
            f"reproduced when any is. The image-level interval, the per-seed effects (and how many share the claimed "
            f"sign) and the p-values are shown alongside and do not enter the verdict." + _width_note(n_seeds))


def _width_note(n_seeds: int | None) -> str:
    if not n_seeds or n_seeds < MIN_SEEDS:
        return ""
    from .. import stats

    t = stats.t_critical(n_seeds)
    return (f" With {n_seeds} seeds the t-interval has {n_seeds - 1} degrees of freedom (t = {t:.2f}), so an effect "
            f"has to be large relative to its seed-to-seed spread to be decided, and that is the honest answer for "
            f"{n_seeds} training runs per model. Likewise the exact sign-flip test cannot go below "
            f"p = {2 / 2 ** n_seeds:.3g} with {n_seeds} seeds.")
