#!/usr/bin/env python3
"""Null calibration of the verdict rule (crossed seed x image standard error): the share of null comparisons
rejected at 0.05 and at 0.05 / 12 (the strictest Holm step of the paper's 12 primary comparisons), with t
(k - 1 df), with Satterthwaite's df and with Cochran and Cox's weighted t (the rules' from 5 seeds), at 3 to 20 seeds, on seed-dominated, image-dominated and
shared-test-set variance, and on the variance components of each primary comparison of a published store
(method of moments on the images every mask holds); plus the Holm family-wise error of 12 null comparisons
and the rule on whole 0/1 arrays. The numbers in docs/verdict-rules.md come from

    python scripts/verdict-calibration.py results/fashion-mnist > docs/verdict-calibration.json
"""

import json
import sys

import numpy as np

from robustbench_leak.crossed import balanced_mean_squares
from robustbench_leak.report.calibration import (Components, holm_family_error, per_image_rates,
                                                 rejection_rates)

SYNTHETIC = {  # variance components of the per-image difference A - B (seed, image, interaction), 1,000 images
    "seed-dominated": (Components(2.5e-3, 0.0, 0.09), 1000),
    "image-dominated": (Components(1e-6, 0.09, 0.09), 1000),
    "shared test set": (Components(4e-4, 0.09, 0.09), 200),
}


def published(run_dir: str) -> dict[str, tuple[Components, int, int]]:
    """Each primary comparison of the paper claim set on ``run_dir``: its variance components, seeds, images."""
    import robustbench_leak.report.claims as claims
    from robustbench_leak.report.claim_set import load_claim_set
    from robustbench_leak.store import StoreReader

    out = {}
    captured = {}
    original = claims.crossed

    def keep(diff, mask=None):
        captured["arrays"] = (diff, mask)
        return original(diff, mask)

    claims.crossed = keep
    try:
        with StoreReader(run_dir) as store:
            run_id = store.latest_run()["run_id"]
            for spec in load_claim_set("paper").claims:
                if spec.role != "primary":
                    continue
                for p in spec.comparisons:
                    if claims.compare(store, run_id, p.a, p.b, p.attack, p.metric) is None:
                        continue
                    diff, mask = captured["arrays"]
                    common = np.asarray(mask).all(0)
                    y = np.asarray(diff)[:, common]
                    k, n = y.shape
                    ms_seed, ms_img, ms_err = balanced_mean_squares(y)
                    c = Components(max(0.0, (ms_seed - ms_err) / n), max(0.0, (ms_img - ms_err) / k), ms_err)
                    out[f"{p.a} vs {p.b} on {p.attack} ({p.metric})"] = (c, k, n)
    finally:
        claims.crossed = original
    return out


def main() -> None:
    n_sims = 200_000
    out = {"null comparisons per cell": n_sims, "simulation SE at 0.05": float(np.sqrt(0.05 * 0.95 / n_sims)),
           "simulation SE at 0.05/12": float(np.sqrt(0.05 / 12 * (1 - 0.05 / 12) / n_sims)), "scenarios": {}}
    scenarios = {name: (c, n) for name, (c, n) in SYNTHETIC.items()}
    matched = published(sys.argv[1]) if len(sys.argv) > 1 else {}
    for name, (c, k0, n) in matched.items():
        scenarios[f"matched: {name}"] = (c, n)
    for i, (name, (c, n)) in enumerate(scenarios.items()):
        cell = {"components": vars(c), "images": n, "by seeds": {}}
        for k in (3, 4, 5, 10, 20):
            rates = rejection_rates(n_sims, k, n, c, seed=10 * i + k)
            cell["by seeds"][k] = {test: {f"{a:.4g}": r for a, r in by.items()} for test, by in rates.items()}
        cell["Holm family of 12, 5 seeds (20,000 families)"] = holm_family_error(20_000, 5, n, c, seed=i)
        out["scenarios"][name] = cell
    out["whole 0/1 arrays through crossed() (5 seeds, 500 images, seed SD 0.01, 2,000 comparisons)"] = \
        per_image_rates(2000, 5, 500, 0.01)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
