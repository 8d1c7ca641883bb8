"""The verdict policy of the claims report. The numbers are data (``verdict_rules.yaml`` beside this file);
this module applies them and states them in every report. docs/verdict-rules.md explains each choice.

- Every comparison (A - B, mean over seeds on the same test images) is read through one standard error: a
  crossed seed x image random-effects model by the method of moments (:mod:`robustbench_leak.crossed`),
  Var = s^2 / k + V_sh, referred to Student's t with k - 1 degrees of freedom (Satterthwaite's from the
  rules' ``satterthwaite_from`` seeds). The two-stage bootstrap and the seed-level interval are descriptions.
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

from .. import crossed, stats

RULES_PATH = Path(__file__).with_name("verdict_rules.yaml")

REPRODUCED, NOT_REPRODUCED, MIXED = "reproduced", "not reproduced", "mixed"
INCONCLUSIVE, NOT_EVALUATED = "inconclusive", "not evaluated"
SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "undecided"
ROLES = ("primary", "secondary", "exploratory")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Interval(_Strict):
    method: str
    weighted_from: int | None = Field(default=None, ge=3)  # Cochran-Cox from this many seeds; None: never
    satterthwaite_from: int | None = Field(default=None, ge=3)  # None: never (the calibration shows it liberal)
    bootstrap: str
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
    max_images: int = Field(ge=2)  # the most test images the "N test images would" line looks for


class _Sequential(_Strict):
    spending: str
    futility: float = Field(ge=0, lt=1)  # conditional power below which a comparison is futile (non-binding)


class Rules(_Strict):
    alpha: float = Field(gt=0, lt=0.5)
    min_seeds: int = Field(ge=2)
    interval: _Interval
    correction: _Correction
    equivalence: _Equivalence
    margins: Margins
    power: _Power
    sequential: _Sequential


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
    s2: float = float("nan")  # variance of the per-seed effects (crossed model)
    v_shared: float = float("nan")  # the shared test set's variance: the floor no number of seeds removes
    df_satterthwaite: float = float("nan")
    n_images: int = 0

    def reference(self) -> tuple[float, float]:
        """(w, df of the test set's part) of the reference distribution: t with k - 1 df (w = 1) below the
        rules' ``weighted_from`` seeds, Cochran and Cox's weighted t from there on; Satterthwaite's df
        (all in the test set's part, w = 0) from ``satterthwaite_from`` when the rules name it."""
        r, k = rules().interval, self.k
        if r.satterthwaite_from is not None and k >= r.satterthwaite_from and math.isfinite(self.df_satterthwaite):
            return 0.0, self.df_satterthwaite
        if r.weighted_from is not None and k >= r.weighted_from and math.isfinite(self.v_shared) and self.n_images > 1:
            var = self.s2 / k + self.v_shared
            return (self.s2 / k / var if var > 0 else 1.0), float((k - 1) * (self.n_images - 1))
        return 1.0, float(max(k - 1, 1))

    def _upper(self, excess: float) -> float:
        """One-sided p of an effect ``excess`` above its null bound (no spread: 0 or 1)."""
        if self.se == 0:
            return 0.0 if excess > 0 else 1.0
        w, df = self.reference()
        return crossed.upper_p(excess / self.se, w, self.k, df)

    def p_and_side(self) -> tuple[float, str]:
        """The p-value the family adjusts, and the side it would decide for."""
        if self.k < rules().min_seeds or not math.isfinite(self.se):
            return float("nan"), UNDECIDED
        d, se = self.effect, self.se
        if self.kind == "directional":
            if se == 0:
                return (1.0 if d == 0 else 0.0), SUPPORTS if d > 0 else CONTRADICTS
            return min(1.0, 2 * self._upper(abs(d))), SUPPORTS if d > 0 else CONTRADICTS
        m = self.margin
        if abs(d) <= m:  # TOST: both one-sided tests against the margin's edges
            return max(self._upper(d + m), self._upper(m - d)), SUPPORTS
        return self._upper(abs(d) - m), CONTRADICTS

    def interval(self, alpha: float) -> tuple[float, float]:
        """Directional: the (1 - alpha) interval; equivalence: the (1 - 2 alpha) interval TOST reads."""
        if self.k < 2 or not math.isfinite(self.se):
            return float("nan"), float("nan")
        tail = alpha / 2 if self.kind == "directional" else alpha
        w, df = self.reference()
        half = crossed.critical(tail, w, self.k, df) * self.se
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


ANSWERED = {REPRODUCED: "answered yes", NOT_REPRODUCED: "answered no", MIXED: "answered both ways",
            INCONCLUSIVE: "unanswered", NOT_EVALUATED: NOT_EVALUATED}


def answered(verdict: str) -> str:
    """An exploratory claim's verdict in exploratory words: it asks a question, it does not reproduce a claim."""
    return ANSWERED.get(verdict, verdict)


def rules_text(margins: Margins | None = None, n_primary: int = 0) -> str:
    """The rules in words, with the numbers the code reads from ``verdict_rules.yaml`` (stated in every report)."""
    r, m = rules(), margins or rules().margins
    a = r.alpha
    family = (f"The {n_primary} primary comparisons of this claim set form one family: their p-values are "
              f"Holm-adjusted (step-down, family-wise error <= {a:g} under any dependence between comparisons), "
              f"and each interval is printed at the level of its Holm step." if n_primary else
              "This claim set declares no primary comparison, so nothing is corrected for multiplicity.")
    return (f"Verdict rules (data in `robustbench_leak/report/verdict_rules.yaml`, applied by `verdicts.py`; "
            f"docs/verdict-rules.md). Each comparison reads one standard error: a {r.interval.method}, "
            f"Var = s^2 / k + V_sh (s^2 the variance of the per-seed effects, V_sh the shared test set's part), "
            f"{_df_text(r)}. "
            f"A directional comparison supports the claim when the test of 0 is significant with A - B > 0 and "
            f"contradicts it when significant with A - B < 0. An equivalence comparison is a TOST at {a:g} (the "
            f"{100 * (1 - 2 * a):.0f}% interval) against the margin (+-{100 * m.accuracy:.2g} accuracy points; "
            f"+-{100 * m.rho:.2g}% of B's mean rho): it supports when the interval lies inside the margin, and "
            f"contradicts when it lies entirely outside (one-sided test beyond the margin). {family} Secondary and "
            f"exploratory comparisons are tested each at {a:g}, uncorrected, under their own headings. Otherwise "
            f"a comparison is undecided, as is any with fewer than {r.min_seeds} seeds. A claim is *reproduced* when "
            f"every comparison supports it, *not reproduced* when every one contradicts it, *mixed* when some "
            f"support and some contradict, *inconclusive* otherwise; an exploratory claim, which asks a question, is "
            f"*answered yes*, *answered no*, *answered both ways* or *unanswered* by the same rule. A comparison that "
            f"rests on cells whose attack did not converge, or that predate their engine's current version, is not "
            f"counted: it is left out of the family and of its claim. For rho, images the attack failed on (still "
            f"classified correctly) are excluded from both models' means, and counted. The {r.interval.bootstrap} "
            f"({r.interval.resamples:,} resamples, random seed {r.interval.random_seed}), the seed-level t-interval of "
            f"the per-seed effects, the image-level interval, the per-seed effects and the other p-values are shown "
            f"beside the verdict interval as descriptions and do not enter the verdict.")


def _df_text(r: Rules) -> str:
    start = r.interval.weighted_from
    text = ("referred to Student's t with k - 1 degrees of freedom" + (
        f" below {start} seeds; from {start} seeds on to Cochran and Cox's weighted critical value "
        f"w t(k - 1) + (1 - w) t((k - 1)(n - 1)), w = (s^2 / k) / Var the seed part's share, which the null "
        f"calibration shows holding its level" if start is not None else ""))
    if r.interval.satterthwaite_from is not None:
        text += f"; Satterthwaite's df from {r.interval.satterthwaite_from} seeds"
    return text


@dataclass(frozen=True)
class PowerRow:
    """The power line of one comparison, on the side its observed effect lies."""
    side: str  # supports | contradicts: the verdict the observed effect points to
    mde: float  # minimal detectable effect (equivalence: smallest margin shown at a true 0) with this run's seeds
    seeds: int | None  # seeds that would decide the observed effect (None: not by seeds, see ``floor_blocked``)
    floor_blocked: bool  # the shared test set alone leaves too much variance: no number of seeds decides it
    images: int | None = None  # test images (with ``images_seeds`` seeds) that would decide it, when blocked
    images_seeds: int | None = None


def _seeds_for(t: Test, distance: float, v_sh: float, alpha: float, power: float, sided: int,
               cap: int) -> int | None:
    """Fewest seeds k whose test (the rules' reference at k seeds) detects ``distance`` with ``power``:
    distance >= (critical_{alpha/sided} + critical_{1-power}) * sqrt(s2 / k + v_sh)."""
    for k in range(2, cap + 1):
        at = Test(t.kind, t.metric, t.effect, math.sqrt(t.s2 / k + v_sh), k, t.margin, t.s2, v_sh,
                  float("nan"), t.n_images)
        w, df = at.reference()
        crit = crossed.critical(alpha / sided, w, k, df) + crossed.critical(1 - power, w, k, df)
        if distance >= crit * at.se:
            return k
    return None


def power_row(t: Test, alpha: float) -> PowerRow:
    """Power at level ``alpha`` with the test-set floor, Var(k) = s^2 / k + V_sh. Directional: the two-sided test
    of 0. Equivalence: on the supporting side (|effect| inside the margin) both one-sided tests against the
    margin; on the contradicting side the one-sided test beyond the margin. When the floor alone exceeds what
    deciding the effect allows, no number of seeds decides it on this test set: the row says how many test
    images would (V_sh shrinks as 1 / images; s^2 is kept, which overstates what the extra images need)."""
    target, cap, max_images = rules().power.target, rules().power.max_seeds, rules().power.max_images
    if t.kind == "directional":
        side = SUPPORTS if t.effect > 0 else CONTRADICTS
        mde = stats.mde(t.se, t.k, alpha, target, 2) if t.k >= 2 else float("nan")
        distance, sided, each = abs(t.effect), 2, target
    else:
        side = SUPPORTS if abs(t.effect) <= t.margin else CONTRADICTS
        each = 1 - (1 - target) / 2 if side == SUPPORTS else target  # TOST: both tests must pass
        mde = stats.mde(t.se, t.k, 2 * alpha, each, 2) if t.k >= 2 else float("nan")
        distance, sided = abs(t.margin - abs(t.effect)), 1
    if not (math.isfinite(t.s2) and math.isfinite(t.v_shared)) or distance <= 0:
        return PowerRow(side, mde, None, False)
    seeds = _seeds_for(t, distance, t.v_shared, alpha, each, sided, cap)
    z = float(sps.norm.ppf(1 - alpha / sided) + sps.norm.ppf(each))
    if seeds is not None or t.v_shared <= 0 or distance >= z * math.sqrt(t.v_shared):
        return PowerRow(side, mde, seeds, False)
    # the floor alone is too large: give half the variance budget to the test set, half to the seeds
    budget = (distance / z) ** 2 / 2
    images = math.ceil(t.n_images * t.v_shared / budget) if t.n_images else None
    more = _seeds_for(t, distance, budget, alpha, each, sided, cap)
    if images is not None and images > max_images:
        images = None
    return PowerRow(side, mde, None, True, images, more if images is not None else None)
