"""Paired comparison of two models evaluated on the same images, from stored per-sample results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import robust_correct
from ..options import did_you_mean
from ..stats import mcnemar, wilcoxon
from ..store import StoreReader
from .claims import per_example


def compare_models(run_dir: str | Path, model_a: str, model_b: str, attack: str | None = None) -> list[dict[str, Any]]:
    """One record per (dataset, seed, attack) both models have: McNemar on correctness after the attack
    and, where per-sample rho exists (DeepFool), Wilcoxon on rho over images both classified correctly."""
    if model_a == model_b:
        raise ValueError(f"model_a and model_b are both {model_a!r}; compare two different models")
    with StoreReader(run_dir) as store:
        run = store.latest_run()
        if run is None:
            raise ValueError(f"{store.path}: the store holds no run")
        a, b = store.done_eval_cells(run["run_id"], model_a), store.done_eval_cells(run["run_id"], model_b)
        for name, frame in ((model_a, a), (model_b, b)):
            if frame.empty:
                known = store.run_model_names(run["run_id"])
                raise ValueError(f"{store.path}: no model {name!r} in the latest run; models: {', '.join(known)}")
        if attack is not None and attack not in set(a.attack) | set(b.attack):
            known = sorted(set(a.attack) | set(b.attack))
            raise ValueError(f"--attack: {attack!r} is not an attack label of {model_a} or {model_b} in "
                             f"{store.path}{did_you_mean(attack, known)}; labels: {', '.join(known)}")
        keep = ["cell_key", "dataset", "seed", "attack", "spec"]
        pairs = a[keep].merge(b[keep].drop(columns="spec"), on=["dataset", "seed", "attack"], suffixes=("_a", "_b"))
        if attack is not None:
            pairs = pairs[pairs.attack == attack]
        records = []
        for row in pairs.itertuples():
            sa, sb = store.samples(row.cell_key_a), store.samples(row.cell_key_b)
            if sa.empty or sb.empty:
                continue
            joined = sa.merge(sb, on="idx", suffixes=("_a", "_b"))
            if not (joined.label_a == joined.label_b).all():
                raise ValueError(f"{model_a} and {model_b} were not evaluated on the same images for {row.attack}")
            spec = (json.loads(row.spec) if row.spec else {}).get("attack", {})
            # RobustBench's robust accuracy, as the leaderboard and the claims count it: a per-example attack
            # leaves a misclassified image misclassified, whatever class its search ended in (clean cells store
            # adv_pred = clean_pred, so either count gives their accuracy)
            each = per_example(spec)
            y = joined.label_a.to_numpy()
            rec: dict[str, Any] = {"dataset": row.dataset, "seed": int(row.seed), "attack": row.attack,
                                   "model_a": model_a, "model_b": model_b,
                                   "correctness": mcnemar(
                                       robust_correct(y, joined.clean_pred_a.to_numpy(), joined.adv_pred_a.to_numpy(), each),
                                       robust_correct(y, joined.clean_pred_b.to_numpy(), joined.adv_pred_b.to_numpy(), each))}
            if joined.rho_a.notna().any() and joined.rho_b.notna().any():
                both = (joined.clean_pred_a == joined.label_a) & (joined.clean_pred_b == joined.label_b)
                rec["rho"] = wilcoxon(joined.rho_a[both].to_numpy(float), joined.rho_b[both].to_numpy(float))
            records.append(rec)
        return records


def format_records(records: list[dict[str, Any]]) -> str:
    lines = []
    for r in records:
        c = r["correctness"]
        lines.append(f"{r['dataset']} seed {r['seed']} {r['attack']}: accuracy {r['model_a']} {100 * c['accuracy_a']:.1f}% "
                     f"vs {r['model_b']} {100 * c['accuracy_b']:.1f}% (n={c['n']}; only-A {c['only_a_correct']}, "
                     f"only-B {c['only_b_correct']}; McNemar p={c['p_value']:.3g})")
        if "rho" in r:
            w = r["rho"]
            lines.append(f"    rho median {w['median_a']:.4f} vs {w['median_b']:.4f} (paired median difference "
                         f"{w['median_difference']:+.4f}, n={w['n']}; Wilcoxon p={w['p_value']:.3g})")
    return "\n".join(lines) if lines else "no attack evaluated for both models on the same images"


def nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj
