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
        rows += [add_model(s, "r", "base", seed, "clean", base),
                 add_model(s, "r", "null", seed, "clean", base ^ (flip < 0.06)),  # flips both ways: no effect on average
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
                                           verdicts.MIXED, verdicts.NOT_REPRODUCED, verdicts.REPRODUCED]
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


def test_published_claims_declared_at_their_commits():
    """Each shipped claim's declared commit exists and carries the date the claim set states."""
    import subprocess

    from conftest import REPO

    from robustbench_leak.report.claim_set import claim_set_names, load_claim_set

    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "--git-dir"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    for name in claim_set_names():
        for claim in load_claim_set(name).claims:
            assert claim.declared is not None, (name, claim.title)
            out = subprocess.run(["git", "-C", str(REPO), "show", "-s", "--format=%cI", claim.declared.commit],
                                 capture_output=True, text=True)
            if out.returncode:
                pytest.skip("shallow clone without the declaring commits")
            assert out.stdout.strip().replace("Z", "+00:00") == claim.declared.date.isoformat(), (name, claim.title)


def test_null_family_error_and_false_positives_stay_at_most_alpha():
    """Simulated null comparisons (5 seeds, a seed effect, an image effect shared by the seeds, noise): the
    rules' test decides at most alpha of them alone, and Holm keeps a family of 12 at most alpha."""
    rates = calibration.false_positive_rates(150, n_images=100, seed_sd=0.05, image_sd=0.0, seed=3)
    assert rates["rule"] <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 150)
    assert calibration.family_error(150, m=12, n_images=100, seed_sd=0.05, seed=4) <= 0.05
