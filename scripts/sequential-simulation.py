#!/usr/bin/env python3
"""The sequential seed design (rbleak run --until-decided) on simulated stores: family-wise error, power and
expected seeds for the global null, partial nulls and the observed effects at the variance components x0.5,
x1, x2, and one-comparison designs against their analytic power and expected seeds; for two generators of
per-seed values fitted to a published store: the latent 0/1-outcome model (image, model x image, seed and
seed x image effects, fitted to the store's per-image clean outcomes) and per-model normal parts (the mean
s^2 and V_sh of the paper's primary clean-accuracy comparisons). Writes the JSON that
docs/verdict-rules.md quotes and that tests/test_sequential.py reads for its (smaller) simulation:

    python scripts/sequential-simulation.py results/fashion-mnist > docs/sequential-simulation.json

``--families N`` (default 10,000) per scenario; ``--sim-images N`` (default 250) images drawn per simulated
test set of the latent model (10000: the full test set, no rescaling).
"""

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

import numpy as np
from scipy import stats as sps

from robustbench_leak.crossed import crossed
from robustbench_leak.report.claim_set import load_claim_set
from robustbench_leak.report.claims import evaluate_claims
from robustbench_leak.report.latent_sim import estimate
from robustbench_leak.report.sequential_sim import NormalModel, analytic_single, scenarios, simulate, single
from robustbench_leak.store import StoreReader


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


def clean_outcomes(run_dir: str, models: list[str]) -> dict[str, np.ndarray]:
    """Per model, its (seeds, images) 0/1 clean outcomes on the seeds every model finished."""
    with StoreReader(run_dir) as store:
        cells = store.newest_eval_cells()
        cells = cells[(cells.attack == "clean") & cells.model.isin(models)]
        seeds = sorted(set.intersection(*(set(cells[cells.model == m].seed) for m in models)))
        out = {}
        for m in models:
            rows = []
            for s in seeds:
                arrays = store.sample_arrays(cells[(cells.model == m) & (cells.seed == s)].cell_key.iloc[0])
                rows.append((arrays["clean_pred"] == arrays["label"]).astype(np.float64))
            out[m] = np.array(rows)
    return out


def cp_upper(x: int, n: int) -> float:
    return float(sps.beta.ppf(0.975, x + 1, n - x)) if x < n else 1.0


def run_scenarios(model, comps, families: int, seed: int) -> dict:
    out = {"scenarios": {}, "single comparisons": {}}
    for i, sc in enumerate(scenarios(model, comps)):
        r = simulate(sc, families, seed=seed + i)
        r["fwer Clopper-Pearson upper 95%"] = cp_upper(r["errors"], r["n"])
        out["scenarios"][sc.name] = r
    for i, (a, b, _) in enumerate(c for c in comps if c[2] is None):
        for j, scale in enumerate((1.0, 2.0)):
            sc = single(model, a, b, scale)
            out["single comparisons"][sc.name] = {
                "effect": model.mean(a) - model.mean(b), "s2, V_sh": list(sc.model.moments(a, b)),
                "simulated": simulate(sc, families, seed=seed + 100 + 10 * i + j), "analytic": analytic_single(sc)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--families", type=int, default=10_000)
    ap.add_argument("--sim-images", type=int, default=250)
    args = ap.parse_args()
    m = measured(args.run_dir)
    comps = tuple(tuple(c) for c in m["comparisons"])
    models = sorted(m["effects"])
    correct = clean_outcomes(args.run_dir, models)
    latent = replace(estimate(correct), sim_images=args.sim_images)
    store_moments = {}
    for a, b, _ in comps:
        c = crossed(correct[a] - correct[b])
        store_moments[f"{a} vs {b}"] = {"store crossed (s2, V_sh)": [c.s2, c.v_shared],
                                        "latent (s2, V_sh)": list(latent.moments(a, b))}
    started = time.process_time()
    out = {"measured on": args.run_dir, **m, "looks": [5, 10, 15, 20, 25, 30], "alpha": 0.05, "futility": 0.10,
           "families per scenario": args.families,
           "latent": {"components": asdict(latent),
                      "fitted on seeds": int(len(next(iter(correct.values())))),
                      "comparisons' moments": store_moments,
                      **run_scenarios(latent, comps, args.families, 1000)},
           **run_scenarios(NormalModel(m["effects"], m["sigma2"], m["tau2"]), comps, args.families, 100)}
    out["cpu seconds"] = round(time.process_time() - started)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
