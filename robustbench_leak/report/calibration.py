"""How often the verdict rules call a difference where there is none: paired comparisons simulated under
the null (every seed and image effect centred on 0), read by the same statistics as a report. Used by
``scripts/verdict-calibration.py`` (the published numbers) and the CI test (a smaller draw)."""

from __future__ import annotations

import numpy as np

from .. import stats
from . import verdicts


def null_comparison(rng: np.random.Generator, k: int, n_images: int, seed_sd: float, image_sd: float,
                    noise_sd: float) -> np.ndarray:
    """A (k, n_images) array of per-image differences A - B with true mean 0: a training-seed effect, an
    image effect shared by every seed (the same test set), and noise."""
    seed = rng.normal(0, seed_sd, size=(k, 1))
    image = rng.normal(0, image_sd, size=(1, n_images))
    return seed + image + rng.normal(0, noise_sd, size=(k, n_images))


def _read(diff: np.ndarray) -> dict[str, float]:
    r = verdicts.rules()
    k = diff.shape[0]
    boot = stats.paired_bootstrap(diff, n_boot=r.interval.resamples, seed=r.interval.random_seed)
    per_seed = stats.per_seed_effects(diff)
    effect = float(per_seed.mean())
    lo, hi = boot["two_stage"]
    return {"percentile": float(not lo <= 0 <= hi),
            "rule_p": stats.t_p_two_sided(effect, stats.two_stage_se(boot["two_stage_sd"], k), k),
            "t": float(stats.seed_t_test(per_seed)["p_value"] < r.alpha)}


def false_positive_rates(n_sims: int, k: int = 5, n_images: int = 200, seed_sd: float = 0.02,
                         image_sd: float = 0.3, noise_sd: float = 0.3, seed: int = 0) -> dict[str, float]:
    """Share of null comparisons each interval decides at alpha: the two-stage bootstrap's percentile interval
    (what the report printed before), the rules' scaled-SE t test, and the seed-level t-interval."""
    rng = np.random.default_rng(seed)
    alpha = verdicts.rules().alpha
    reads = [_read(null_comparison(rng, k, n_images, seed_sd, image_sd, noise_sd)) for _ in range(n_sims)]
    return {"percentile": float(np.mean([x["percentile"] for x in reads])),
            "rule": float(np.mean([x["rule_p"] < alpha for x in reads])),
            "t": float(np.mean([x["t"] for x in reads]))}


def family_error(n_families: int, m: int = 12, k: int = 5, n_images: int = 200, seed_sd: float = 0.02,
                 image_sd: float = 0.3, noise_sd: float = 0.3, seed: int = 1) -> float:
    """Share of null families of ``m`` directional primary comparisons in which the rules decide any one
    (Holm over the rules' p-values): the family-wise error."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_families):
        tests = []
        for _ in range(m):
            diff = null_comparison(rng, k, n_images, seed_sd, image_sd, noise_sd)
            r = verdicts.rules()
            boot = stats.paired_bootstrap(diff, n_boot=r.interval.resamples, seed=r.interval.random_seed)
            effect = float(stats.per_seed_effects(diff).mean())
            tests.append(verdicts.Test("directional", "clean_accuracy", effect,
                                       stats.two_stage_se(boot["two_stage_sd"], k), k))
        hits += any(x.verdict != verdicts.UNDECIDED for x in verdicts.rule_family(tests, corrected=True))
    return hits / n_families
