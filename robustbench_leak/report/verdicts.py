"""The verdict policy of the claims report. The numbers are data (``verdict_rules.yaml`` beside this file);
this module applies them and states them in every report. docs/verdict-rules.md explains each choice.

- Every comparison (A - B, mean over seeds on the same test images) is read through one interval and test:
  a two-stage bootstrap over training seeds, then test images, whose standard error (the draws' SD times
  sqrt(k / (k - 1)), k seeds) is referred to Student's t with k - 1 degrees of freedom.
- Directional ("A beats B"): two-sided test of 0. Equivalence ("A performs like B"): TOST against the margin
  (the 90% interval inside it supports; the 90% interval entirely outside it contradicts).
- The primary comparisons of a claim set are one family: their p-values are Holm-adjusted, and a comparison
  is decided (supports or contradicts) when its adjusted p is below alpha; its interval is printed at the
  level of its Holm step. Secondary and exploratory comparisons are tested uncorrected, and labelled so.
- A claim is reproduced when every comparison supports it, not reproduced when every one contradicts it,
  mixed when some support and some contradict, inconclusive otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats as sps

from .. import stats

RULES_PATH = Path(__file__).with_name("verdict_rules.yaml")

REPRODUCED, NOT_REPRODUCED, MIXED = "reproduced", "not reproduced", "mixed"
INCONCLUSIVE, NOT_EVALUATED = "inconclusive", "not evaluated"
SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "undecided"
ROLES = ("primary", "secondary", "exploratory")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Interval(_Strict):
    method: str
    resamples: int = Field(ge=100, le=100_000)
    random_seed: int = Field(ge=0)


class _Correction(_Strict):
    primary: str
    secondary: str
    exploratory: str


class _Equivalence(_Strict):
    test: str


class Margins(_Strict):
    accuracy: float = Field(gt=0, lt=1)  # a fraction: 0.005 is half an accuracy point
    rho: float = Field(gt=0, lt=1)  # relative to B's mean rho


class _Power(_Strict):
    target: float = Field(gt=0, lt=1)
    max_seeds: int = Field(ge=2)


class Rules(_Strict):
    alpha: float = Field(gt=0, lt=0.5)
    min_seeds: int = Field(ge=2)
    interval: _Interval
    correction: _Correction
    equivalence: _Equivalence
    margins: Margins
    power: _Power


@lru_cache(maxsize=None)
def rules(path: Path = RULES_PATH) -> Rules:
    """The rules file, validated (a broken file is a one-line error naming it and the key)."""
    try:
        return Rules.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


@dataclass(frozen=True)
class Ruling:
    verdict: str  # supports | contradicts | undecided
    reason: str  # follows only from the rule that decided
    p: float  # the comparison's own p (directional: two-sided; equivalence: TOST or beyond-margin)
    p_adjusted: float  # Holm-adjusted for primary comparisons, = p otherwise
    interval: tuple[float, float]  # the verdict interval at ``level``
    level: float


def margin(metric: str, mean_b: float, margins: Margins | None = None) -> float:
    """The equivalence margin: accuracy points, or a share of B's mean rho."""
    m = margins or rules().margins
    return m.rho * abs(mean_b) if metric == "rho" else m.accuracy


def rho_text(x: float) -> str:
    """4 decimals; a nonzero value that would round to 0 keeps its sign and size (e.g. -1.2e-05)."""
    return f"{x:+.1e}" if x != 0 and abs(x) < 5e-5 else f"{x:+.4f}"


def interval_text(lo: float, hi: float, metric: str) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    if metric == "rho":
        return f"[{rho_text(lo)}, {rho_text(hi)}]"
    return f"[{100 * lo:+.2f}, {100 * hi:+.2f}] pts"


def margin_text(m: float, metric: str) -> str:
    return f"+-{m:.4f}" if metric == "rho" else f"+-{100 * m:.2g} pt"


@dataclass(frozen=True)
class Test:
    """One comparison reduced to what the rules read."""
    kind: str  # directional | equivalence
    metric: str
    effect: float
    se: float
    k: int  # seeds
    margin: float = float("nan")  # equivalence only

    def p_and_side(self) -> tuple[float, str]:
        """The p-value the family adjusts, and the side it would decide for."""
        if self.k < rules().min_seeds:
            return float("nan"), UNDECIDED
        if self.kind == "directional":
            return stats.t_p_two_sided(self.effect, self.se, self.k), SUPPORTS if self.effect > 0 else CONTRADICTS
        m, d = self.margin, self.effect
        if abs(d) <= m:  # TOST: both one-sided tests against the margin's edges
            return max(stats.t_p_above(d, -m, self.se, self.k), stats.t_p_above(-d, -m, self.se, self.k)), SUPPORTS
        return stats.t_p_above(abs(d), m, self.se, self.k), CONTRADICTS

    def interval(self, alpha: float) -> tuple[float, float]:
        """Directional: the (1 - alpha) interval; equivalence: the (1 - 2 alpha) interval TOST reads."""
        if self.k < 2 or not math.isfinite(self.se):
            return float("nan"), float("nan")
        tail = alpha / 2 if self.kind == "directional" else alpha
        half = float(sps.t.ppf(1 - tail, self.k - 1)) * self.se
        return self.effect - half, self.effect + half


def rule_family(tests: list[Test], corrected: bool) -> list[Ruling]:
    """Rulings for a family of comparisons: Holm-adjusted (``corrected``) or each at alpha."""
    alpha = rules().alpha
    pairs = [t.p_and_side() for t in tests]
    raw = [p for p, _ in pairs]
    adjusted = stats.holm(raw) if corrected else [1.0 if not math.isfinite(p) else p for p in raw]
    ranks = stats.holm_ranks(raw)
    out = []
    for t, (p, side), p_adj, rank in zip(tests, pairs, adjusted, ranks):
        local = alpha / (len(tests) - rank + 1) if corrected else alpha
        lo, hi = t.interval(local)
        level = 1 - local if t.kind == "directional" else 1 - 2 * local
        if not math.isfinite(p):
            out.append(Ruling(UNDECIDED, f"{t.k} seed(s): no interval", p, p_adj, (lo, hi), level))
            continue
        where = f"{100 * level:.3g}% interval {interval_text(lo, hi, t.metric)}"
        if corrected:
            where += f" (Holm step {rank} of {len(tests)})"
        test = "p" if t.kind == "directional" else ("TOST p" if side == SUPPORTS else "p beyond the margin")
        ps = f"{test} {p:.3g}" + (f", Holm-adjusted {p_adj:.3g}" if corrected else " (uncorrected)")
        verdict = side if p_adj < alpha else UNDECIDED
        if t.kind == "directional":
            says = {SUPPORTS: "above 0", CONTRADICTS: "below 0"}[side] if verdict != UNDECIDED else "not decided"
        else:
            edge = margin_text(t.margin, t.metric)
            says = {SUPPORTS: f"inside the margin {edge}", CONTRADICTS: f"outside the margin {edge}"}[side] \
                if verdict != UNDECIDED else f"not decided against the margin {edge}"
        out.append(Ruling(verdict, f"{where}; {ps} {'<' if verdict != UNDECIDED else '>='} {alpha:g}: {says}",
                          p, p_adj, (lo, hi), level))
    return out


def combine(verdicts: list[str]) -> str:
    """Symmetric: every comparison supports -> reproduced; every one contradicts -> not reproduced; some
    each way -> mixed; otherwise inconclusive."""
    if verdicts and all(v == SUPPORTS for v in verdicts):
        return REPRODUCED
    if verdicts and all(v == CONTRADICTS for v in verdicts):
        return NOT_REPRODUCED
    if SUPPORTS in verdicts and CONTRADICTS in verdicts:
        return MIXED
    return INCONCLUSIVE


def rules_text(margins: Margins | None = None, n_primary: int = 0) -> str:
    """The rules in words, with the numbers the code reads from ``verdict_rules.yaml`` (stated in every report)."""
    r, m = rules(), margins or rules().margins
    a = r.alpha
    family = (f"The {n_primary} primary comparisons of this claim set form one family: their p-values are "
              f"Holm-adjusted (step-down, family-wise error <= {a:g} under any dependence between comparisons), "
              f"and each interval is printed at the level of its Holm step." if n_primary else
              "This claim set declares no primary comparison, so nothing is corrected for multiplicity.")
    return (f"Verdict rules (data in `robustbench_leak/report/verdict_rules.yaml`, applied by `verdicts.py`; "
            f"docs/verdict-rules.md). Each comparison reads one interval: a {r.interval.method}, "
            f"{r.interval.resamples:,} resamples, random seed {r.interval.random_seed}; its standard error is the "
            f"draws' SD times sqrt(k / (k - 1)) for k seeds, referred to Student's t with k - 1 degrees of freedom. "
            f"A directional comparison supports the claim when the test of 0 is significant with A - B > 0 and "
            f"contradicts it when significant with A - B < 0. An equivalence comparison is a TOST at {a:g} (the "
            f"{100 * (1 - 2 * a):.0f}% interval) against the margin (+-{100 * m.accuracy:.2g} accuracy points; "
            f"+-{100 * m.rho:.2g}% of B's mean rho): it supports when the interval lies inside the margin, and "
            f"contradicts when it lies entirely outside (one-sided test beyond the margin). {family} Secondary and "
            f"exploratory comparisons are tested each at {a:g}, uncorrected, under their own headings. Otherwise "
            f"a comparison is undecided, as is any with fewer than {r.min_seeds} seeds. A claim is *reproduced* when "
            f"every comparison supports it, *not reproduced* when every one contradicts it, *mixed* when some "
            f"support and some contradict, *inconclusive* otherwise. The seed-level t-interval of the per-seed "
            f"effects, the image-level interval, the per-seed effects and the other p-values are shown beside the "
            f"verdict interval and do not enter the verdict.")


def power_row(t: Test, alpha: float) -> tuple[float, int | None]:
    """(minimal detectable effect at the power target, seeds that would decide the observed effect) at level
    ``alpha``. Directional: two-sided test of 0. Equivalence: the smallest margin TOST would establish when the
    true difference is 0, and seeds to establish the observed effect within the margin."""
    target, cap = rules().power.target, rules().power.max_seeds
    spread = t.se * math.sqrt(t.k) if t.k >= 2 else float("nan")  # one seed's spread, seeds and images
    if t.kind == "directional":
        return stats.mde(t.se, t.k, alpha, target, 2), stats.seeds_needed(abs(t.effect), spread, alpha, target, 2, cap)
    each = 1 - (1 - target) / 2  # both one-sided tests must pass: the miss rate is split between them
    return (stats.mde(t.se, t.k, 2 * alpha, each, 2),
            stats.seeds_needed(t.margin - abs(t.effect), spread, alpha, target, 1, cap))
