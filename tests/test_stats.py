"""Two-level statistics (robustbench_leak.stats) against scipy references and brute-force enumeration."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from robustbench_leak.stats import (
    clustered_permutation_test,
    mcnemar,
    paired_bootstrap,
    per_seed_effects,
    seed_t_test,
    sign_flip_test,
    t_interval,
)


def test_t_interval_and_t_test_match_scipy():
    v = np.array([0.0055, 0.0044, 0.0017])
    lo, hi = t_interval(v)
    ref = sps.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    assert (lo, hi) == pytest.approx(ref)
    assert seed_t_test(v)["p_value"] == pytest.approx(sps.ttest_1samp(v, 0).pvalue)
    assert np.isnan(t_interval(v[:1])[0]) and np.isnan(seed_t_test(v[:1])["p_value"])


def test_sign_flip_test_is_exact_enumeration():
    v = np.array([0.3, -0.1, 0.7, 0.2, 0.05])
    brute = np.mean([abs(np.dot(s, v)) >= abs(v.sum()) - 1e-12 for s in itertools.product((1, -1), repeat=len(v))])
    res = sign_flip_test(v)
    assert res["p_value"] == pytest.approx(brute) and res["min_p"] == pytest.approx(2 / 32)
    assert sign_flip_test(np.array([1.0, 2.0, 3.0]))["p_value"] == pytest.approx(0.25)  # 3 seeds: p >= 0.25


def test_clustered_test_with_one_seed_is_exact_mcnemar():
    rng = np.random.default_rng(1)
    a, b = rng.random(40) < 0.8, rng.random(40) < 0.6
    diff = a.astype(float) - b.astype(float)
    res = clustered_permutation_test(diff[None, :])
    assert res["exact"] and res["p_value"] == pytest.approx(mcnemar(a, b)["p_value"])


def test_clustered_test_flips_whole_images_across_seeds():
    rng = np.random.default_rng(2)
    diff = rng.normal(0.2, 1.0, size=(3, 9))
    mask = rng.random((3, 9)) < 0.8
    # brute force: every pattern of per-image signs, applied to all seeds of that image
    def stat(s):
        return np.mean([(diff[k] * s)[mask[k]].mean() for k in range(3)])
    observed = abs(stat(np.ones(9)))
    brute = np.mean([abs(stat(np.array(s))) >= observed - 1e-12 for s in itertools.product((1, -1), repeat=9)])
    res = clustered_permutation_test(diff, mask)
    assert res["exact"] and res["p_value"] == pytest.approx(brute)


def test_clustered_monte_carlo_close_to_exact_and_counts_images_once():
    a = np.zeros((3, 300))
    a[:, :20] = 1.0  # 20 images that A gets right and B wrong in all three seeds
    res = clustered_permutation_test(a)
    assert res["exact"] and res["images_differing"] == 20 == res["images_differing_in_2_or_more_seeds"]
    # 20 discordant clusters all one way: exact two-sided p = 2 / 2**20
    assert res["p_value"] == pytest.approx(2 / 2 ** 20)
    pooled = mcnemar(np.ones(60, bool), np.zeros(60, bool))["p_value"]  # treating 60 (image, seed) pairs as independent
    assert pooled < 2 / 2 ** 20


def test_paired_bootstrap_two_stage_is_wider_when_seeds_disagree():
    rng = np.random.default_rng(3)
    offsets = np.array([0.3, 0.0, -0.2])
    diff = rng.normal(0, 0.5, size=(3, 2000)) + offsets[:, None]
    ci = paired_bootstrap(diff, n_boot=500)
    effect = per_seed_effects(diff).mean()
    assert ci["image"][0] < effect < ci["image"][1]
    width = {k: ci[k][1] - ci[k][0] for k in ("image", "two_stage")}
    assert width["two_stage"] > 3 * width["image"]
    same = paired_bootstrap(np.ones((2, 50)), n_boot=100)
    assert same["image"] == (1.0, 1.0) and same["two_stage"] == (1.0, 1.0) and same["two_stage_sd"] == 0


def test_clustered_lattice_matches_enumeration_and_monte_carlo_is_close():
    rng = np.random.default_rng(4)
    a, b = rng.random((3, 12)) < 0.7, rng.random((3, 12)) < 0.5
    diff = a.astype(float) - b.astype(float)  # images differ by -3..3 over seeds: an integer lattice
    observed = abs(diff.mean(0).sum())
    brute = np.mean([abs(np.dot(s, diff.mean(0))) >= observed - 1e-12
                     for s in itertools.product((1, -1), repeat=12)])
    assert clustered_permutation_test(diff)["p_value"] == pytest.approx(brute)
    rho = rng.normal(0.05, 1.0, size=(2, 400))  # continuous: Monte Carlo
    res = clustered_permutation_test(rho, n_perm=4000)
    assert not res["exact"] and 0 < res["p_value"] <= 1
    ref = sps.ttest_1samp(rho.mean(0), 0).pvalue  # a permutation test on a mean is close to the t-test here
    assert abs(res["p_value"] - ref) < 0.05
