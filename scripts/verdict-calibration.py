#!/usr/bin/env python3
"""How often each interval calls a difference where there is none, with 5 seeds: the two-stage bootstrap's
percentile interval (the report's old 'two-stage' column), the verdict rules' scaled-SE t test, and the
seed-level t-interval; and the family-wise error of 12 Holm-corrected primary comparisons. Null data as in
robustbench_leak/report/calibration.py. The numbers in docs/verdict-rules.md come from

    flock /work/wt/heavy.lock python scripts/verdict-calibration.py    # (the lock only on a shared machine)
"""

import json
import sys

from robustbench_leak.report.calibration import false_positive_rates, family_error

SCENARIOS = {  # (seed SD, shared image SD, per-image noise SD) of the per-image difference A - B
    "seed-dominated": (0.05, 0.0, 0.3),
    "seeds and a shared test set": (0.02, 0.3, 0.3),
}


def main() -> None:
    n_sims, n_families, k, n_images = 2000, 300, 5, 200
    out = {"seeds": k, "images": n_images, "null comparisons per scenario": n_sims,
           "null families of 12": n_families, "scenarios": {}}
    for name, (seed_sd, image_sd, noise_sd) in SCENARIOS.items():
        rates = false_positive_rates(n_sims, k, n_images, seed_sd, image_sd, noise_sd)
        fwer = family_error(n_families, 12, k, n_images, seed_sd, image_sd, noise_sd)
        out["scenarios"][name] = {"sd": {"seed": seed_sd, "image": image_sd, "noise": noise_sd},
                                  "false positive rate at alpha 0.05": rates, "Holm family-wise error": fwer}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
