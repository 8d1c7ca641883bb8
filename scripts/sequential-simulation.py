#!/usr/bin/env python3
"""The sequential seed design (rbleak run --until-decided) on simulated stores: family-wise error, power and
expected seeds for the global null, partial nulls and the observed effects, at the variance components
measured on a published store (x0.5, x1, x2), 10,000 families each; and one-comparison designs against
their analytic power and expected seeds. Writes the JSON that docs/verdict-rules.md quotes and that
tests/test_sequential.py reads for its (smaller) simulation:

    python scripts/sequential-simulation.py results/fashion-mnist > docs/sequential-simulation.json
"""

import json
import sys

import numpy as np
from scipy import stats as sps

from robustbench_leak.report.claim_set import load_claim_set
from robustbench_leak.report.claims import evaluate_claims
from robustbench_leak.report.sequential_sim import Scenario, analytic_single, scenarios, simulate


def measured(run_dir: str) -> dict:
    """Models' clean accuracies relative to the first model, and per-model variance components (half the
    mean s^2 and V_sh of the paper's primary clean-accuracy comparisons)."""
    claims, _ = evaluate_claims(run_dir, load_claim_set("paper"))
    comps = [(claim, c) for claim in claims if claim.role == "primary" for c in claim.comparisons
             if c.metric == "clean_accuracy"]
    effects: dict[str, float] = {}
    pairs = []
    for claim, c in comps:
        if c.model_a not in effects and c.model_b not in effects:
            effects[c.model_b] = 0.0
        if c.model_a not in effects:
            effects[c.model_a] = effects[c.model_b] + c.effect
        elif c.model_b not in effects:
            effects[c.model_b] = effects[c.model_a] - c.effect
        margin = c.test.margin if claim.kind == "equivalence" else None
        pairs.append((c.model_a, c.model_b, None if margin is None else float(margin)))
    return {"effects": effects, "comparisons": pairs,
            "sigma2": float(np.mean([c.crossed.s2 for _, c in comps]) / 2),
            "tau2": float(np.mean([c.crossed.v_shared for _, c in comps]) / 2),
            "seeds": int(comps[0][1].n_seeds)}


def cp_upper(x: int, n: int) -> float:
    return float(sps.beta.ppf(0.975, x + 1, n - x)) if x < n else 1.0


def main() -> None:
    m = measured(sys.argv[1])
    comps = tuple(tuple(c) for c in m["comparisons"])
    out = {"measured on": sys.argv[1], **m, "looks": [5, 10, 15, 20, 25, 30], "alpha": 0.05, "futility": 0.10,
           "families per scenario": 10_000, "scenarios": {}, "single comparisons": {}}
    for i, sc in enumerate(scenarios(m["effects"], comps, m["sigma2"], m["tau2"])):
        r = simulate(sc, 10_000, seed=100 + i)
        r["fwer Clopper-Pearson upper 95%"] = cp_upper(r["errors"], r["n"])
        out["scenarios"][sc.name] = r
    for i, (a, b, _) in enumerate(c for c in comps if c[2] is None):
        d = m["effects"][a] - m["effects"][b]
        sc = Scenario(f"{a} vs {b}", {a: d, b: 0.0}, ((a, b, None),), m["sigma2"], m["tau2"])
        out["single comparisons"][sc.name] = {"effect": d, "simulated": simulate(sc, 10_000, seed=200 + i),
                                              "analytic": analytic_single(sc)}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
