"""The verdict rules (report/verdict_rules.yaml, report/verdicts.py): Holm's family, the two-stage interval,
TOST at the 90% interval, symmetric aggregation, power; on synthetic stores with known effects the
verdicts come out as the rules say, and on null data the primary family's error stays at most alpha."""

import math

import numpy as np
import pytest
import yaml
from report_data import add_model

from robustbench_leak import stats
from robustbench_leak.report import calibration, verdicts
from robustbench_leak.report.claim_set import ClaimSet
from robustbench_leak.report.claims import evaluate_claims
from robustbench_leak.report.claims_md import to_markdown
from robustbench_leak.store import StoreWriter

SUP, CON, UND = verdicts.SUPPORTS, verdicts.CONTRADICTS, verdicts.UNDECIDED


def test_holm_matches_the_step_down_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, float("nan")]) == pytest.approx([1.0, 1.0])  # NaN counts as 1, capped at 1
    assert stats.holm_ranks([0.2, 0.01, 0.05]) == [3, 1, 2]


def test_two_stage_se_undoes_the_bootstrap_shrinkage_of_k_seeds():
    """With seed effects only, the scaled SD of the two-stage draws matches the t-test's standard error."""
    per_seed = np.array([0.1, 0.3, -0.05, 0.2, 0.15])
    diff = np.repeat(per_seed[:, None], 50, axis=1)  # no image variation: only seeds move the mean
    boot = stats.paired_bootstrap(diff, n_boot=20_000, seed=0)
    se = stats.two_stage_se(boot["two_stage_sd"], 5)
    assert se == pytest.approx(per_seed.std(ddof=1) / math.sqrt(5), rel=0.03)
    assert math.isnan(stats.two_stage_se(0.1, 1))


@pytest.mark.parametrize("effect, want", [(0.0, UND), (0.002, UND), (0.05, SUP), (-0.05, CON)])
def test_directional_rule_and_its_mirror(effect, want):
    t = verdicts.Test("directional", "clean_accuracy", effect, 0.005, 5)
    mirror = verdicts.Test("directional", "clean_accuracy", -effect, 0.005, 5)
    (r,), (m,) = verdicts.rule_family([t], corrected=False), verdicts.rule_family([mirror], corrected=False)
    assert r.verdict == want and m.verdict == {SUP: CON, CON: SUP}.get(want, want)
    lo, hi = r.interval
    assert r.level == pytest.approx(0.95) and lo < effect < hi
    assert (lo > 0 or hi < 0) == (want != UND)  # the printed interval agrees with the test


def test_equivalence_is_tost_at_the_90_percent_interval():
    m = 0.005
    inside = verdicts.Test("equivalence", "clean_accuracy", 0.0005, 0.0012, 5, m)
    (r,) = verdicts.rule_family([inside], corrected=False)
    assert r.verdict == SUP and r.level == pytest.approx(0.90) and -m < r.interval[0] < r.interval[1] < m
    outside = verdicts.Test("equivalence", "clean_accuracy", -0.02, 0.002, 5, m)
    assert verdicts.rule_family([outside], corrected=False)[0].verdict == CON
    crossing = verdicts.Test("equivalence", "clean_accuracy", 0.004, 0.003, 5, m)
    assert verdicts.rule_family([crossing], corrected=False)[0].verdict == UND
    few = verdicts.Test("equivalence", "clean_accuracy", 0.0, 0.001, 1, m)
    assert verdicts.rule_family([few], corrected=False)[0].verdict == UND


def test_holm_family_is_stricter_than_each_comparison_alone():
    """p about 0.02 decides alone but not in a family of 12 where the rest are null."""
    t = verdicts.Test("directional", "clean_accuracy", 0.0143, 0.005, 5)  # t = 2.86, p ~ 0.046 alone
    alone = verdicts.rule_family([t], corrected=True)[0]
    nulls = [verdicts.Test("directional", "clean_accuracy", 0.0, 0.005, 5)] * 11
    family = verdicts.rule_family([t, *nulls], corrected=True)[0]
    assert alone.verdict == SUP and family.verdict == UND
    assert family.p_adjusted == pytest.approx(min(1, 12 * family.p)) and family.level == pytest.approx(1 - 0.05 / 12)


def test_claims_aggregate_symmetrically():
    assert verdicts.combine([SUP, SUP]) == verdicts.REPRODUCED
    assert verdicts.combine([CON, CON]) == verdicts.NOT_REPRODUCED
    assert verdicts.combine([SUP, CON]) == verdicts.MIXED
    assert verdicts.combine([SUP, UND]) == verdicts.combine([CON, UND]) == verdicts.INCONCLUSIVE
    assert verdicts.combine([UND]) == verdicts.combine([]) == verdicts.INCONCLUSIVE


def test_power_mde_and_seeds_needed_agree():
    se, k = 0.004, 5
    mde = stats.mde(se, k, 0.05)
    assert stats.seeds_needed(mde, se * math.sqrt(k), 0.05) == k  # exactly detectable at k seeds
    assert stats.seeds_needed(mde / 2, se * math.sqrt(k), 0.05) > k
    assert stats.seeds_needed(0.0, 1.0, 0.05) is None and stats.seeds_needed(1e-6, 1.0, 0.05, max_seeds=50) is None


def test_rules_file_is_validated(tmp_path):
    good = yaml.safe_load(verdicts.RULES_PATH.read_text())
    assert verdicts.rules().alpha == good["alpha"] and verdicts.rules().interval.resamples == good["interval"]["resamples"]
    good["alpha"] = 0.9
    bad = tmp_path / "rules.yaml"
    bad.write_text(yaml.safe_dump(good))
    with pytest.raises(ValueError, match=rf"^{bad}: alpha: "):
        verdicts.rules(bad)


N = 300


@pytest.fixture
def known_effects(tmp_path):
    """Models whose clean accuracy differs from 'base' by known amounts on the same images, 5 seeds."""
    rng = np.random.default_rng(0)
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n")
    rows = []
    for seed in range(5):
        base = rng.random(N) < 0.7
        flip = rng.random(N)
        redraw = rng.random(N)
        rows += [add_model(s, "r", "base", seed, "clean", base),
                 add_model(s, "r", "null", seed, "clean",  # 6% of images redrawn from base's own rate: no effect
                           np.where(flip < 0.06, redraw < 0.7, base)),
                 add_model(s, "r", "large", seed, "clean", base | (flip < 0.35)),  # about +10 points
                 add_model(s, "r", "small", seed, "clean", base | (flip < 0.01)),  # about +0.3 points: too small for 5 seeds
                 add_model(s, "r", "worse", seed, "clean", base & (flip > 0.35))]  # about -25 points
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()
    return tmp_path


def _set(*claims):
    return ClaimSet.model_validate({"description": "t", "config": "x.yaml", "claims": [
        {"title": title, "kind": kind, "role": role, "comparisons": [
            {"a": a, "b": b, "attack": "clean", "metric": "correct"} for a, b in pairs]}
        for title, kind, role, pairs in claims]})


def test_known_effects_give_the_verdicts_the_rules_say(known_effects):
    claims, _ = evaluate_claims(known_effects, _set(
        ("none", "directional", "primary", [("null", "base")]),
        ("small", "directional", "primary", [("small", "base")]),
        ("large", "directional", "primary", [("large", "base")]),
        ("opposite", "directional", "primary", [("large", "base"), ("worse", "base")]),
        ("refuted", "directional", "primary", [("worse", "base"), ("worse", "large")]),
        ("post hoc look", "directional", "exploratory", [("large", "base")])))
    assert [c.verdict for c in claims] == [verdicts.INCONCLUSIVE, verdicts.INCONCLUSIVE, verdicts.REPRODUCED,
                                           verdicts.MIXED, verdicts.NOT_REPRODUCED, "answered yes"]
    assert claims[1].comparisons[0].effect > 0  # small, on the claimed side, and still not decided
    assert all(c.post_hoc for c in claims)  # no declaration recorded
    primary = [c.comparisons[0].ruling for c in claims[:5]]
    assert all("Holm step" in r.reason for r in primary)
    assert "uncorrected" in claims[5].comparisons[0].ruling.reason
    md = to_markdown(claims)
    assert "### Primary claims (one family, Holm-corrected): 7 comparisons" in md
    assert md.index("### Exploratory claims") > md.index("#### Claim 5:")
    assert "Mixed: supported by large vs base on clean (clean_accuracy); contradicted by worse vs base" in md
    assert "Power of the primary comparisons" in md


def test_declared_before_or_after_the_run(known_effects):
    data = {"description": "t", "config": "x.yaml", "claims": [
        {"title": "early", "kind": "directional", "declared": {"commit": "abc1234", "date": "2020-01-01T00:00:00Z"},
         "comparisons": [{"a": "large", "b": "base", "attack": "clean", "metric": "correct"}]},
        {"title": "late", "kind": "directional", "declared": {"commit": "abc1235", "date": "2999-01-01T00:00:00Z"},
         "comparisons": [{"a": "large", "b": "base", "attack": "clean", "metric": "correct"}]}]}
    claims, _ = evaluate_claims(known_effects, ClaimSet.model_validate(data))
    assert [c.post_hoc for c in claims] == [False, True]
    md = to_markdown(claims)
    assert "2020-01-01 (abc1234), before the run" in md and "2999-01-01 (abc1235), **post hoc**" in md
    assert "the run predates stored hashes" in md


@pytest.mark.parametrize("components", [calibration.Components(2.5e-3, 0.0, 0.09),
                                        calibration.Components(1e-6, 0.09, 0.09),
                                        calibration.Components(4e-4, 0.09, 0.09)],
                         ids=["seed-dominated", "image-dominated", "shared test set"])
def test_null_rejection_rate_is_calibrated(components):
    """The rules' test at 5 seeds (Cochran-Cox weighted t on the crossed SE) rejects null comparisons at a
    rate in [0.03, 0.06] at 0.05 and at most nominal + 2 simulation SE at 0.05 / 12; and so does the
    report's own code path on whole 0/1 arrays (crossed() + upper_p), within simulation error."""
    n_sims = 100_000
    rates = calibration.rejection_rates(n_sims, 5, 500, components, seed=7)["cochran-cox"]
    assert 0.03 <= rates[0.05] <= 0.06
    strict = 0.05 / 12
    assert rates[strict] <= strict + 2 * math.sqrt(strict * (1 - strict) / n_sims)
    assert calibration.holm_family_error(4000, 5, 500, components, seed=8) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 4000)


def test_rule_on_whole_arrays_holds_its_level():
    rate = calibration.per_image_rates(300, 5, 200, 0.01, seed=5)
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)


def test_crossed_se_equals_the_anova_estimator_and_separates_the_floor():
    """With every image in every mask, Var = (MS_seed + MS_img - MS_err) / (k n); s^2 / k + V_sh splits it."""
    from robustbench_leak.crossed import balanced_mean_squares, crossed

    rng = np.random.default_rng(1)
    k, n = 6, 400
    y = rng.normal(0, 0.05, (k, 1)) + rng.normal(0, 0.5, (1, n)) + rng.normal(0, 0.3, (k, n))
    x = crossed(y)
    ms_seed, ms_img, ms_err = balanced_mean_squares(y)
    assert x.se ** 2 == pytest.approx((ms_seed + ms_img - ms_err) / (k * n), rel=1e-9)
    assert x.s2 / k == pytest.approx(ms_seed / (k * n), rel=1e-9)
    assert x.var_at(10 ** 6) == pytest.approx(x.v_shared, rel=1e-5)  # the floor stays


def test_power_knows_the_test_set_floor():
    """A small effect whose shared test-set variance alone exceeds what deciding it allows cannot be decided by
    any number of seeds; the row says how many test images would. A contradicting equivalence comparison
    gets its number on the contradicting side."""
    floor = verdicts.Test("directional", "clean_accuracy", 0.003, math.sqrt(1e-6 / 5 + 2e-6), 5,
                          s2=1e-6, v_shared=2e-6, n_images=10_000)
    row = verdicts.power_row(floor, 0.05 / 12)
    assert row.floor_blocked and row.seeds is None and row.images > 10_000 and row.images_seeds >= 2
    seeds_only = verdicts.Test("directional", "clean_accuracy", 0.003, math.sqrt(1e-5 / 5), 5, s2=1e-5,
                               v_shared=0.0, n_images=10_000)
    row = verdicts.power_row(seeds_only, 0.05 / 12)
    assert not row.floor_blocked and row.seeds > 5
    outside = verdicts.Test("equivalence", "rho", -0.0104, 0.0013, 5, 0.0021, s2=8e-6, v_shared=6e-8, n_images=9000)
    row = verdicts.power_row(outside, 0.05 / 12)
    assert row.side == verdicts.CONTRADICTS and row.seeds is not None
