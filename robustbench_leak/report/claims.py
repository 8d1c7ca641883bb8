"""The paper's claims, each answered from stored per-sample results with an effect, a 95% CI, paired tests
and a verdict (``rbleak claims``).

Effects are differences between two models evaluated on the same test images, averaged over the seeds
both have. The CI resamples images (jointly across seeds, because every seed sees the same images;
2,000 bootstrap draws). The paired tests pool the (image, seed) pairs: exact McNemar for correctness,
Wilcoxon signed-rank for DeepFool's per-image rho.

Verdict rules, fixed before looking at any result:
- a directional claim ("A beats B") is *reproduced* when the pooled effect has the claimed sign, the
  paired test gives p < 0.05 and every seed shows the same sign; *not reproduced* when the effect has
  the opposite sign with p < 0.05; *inconclusive* otherwise;
- an equivalence claim ("A equals B") is *reproduced* when the whole CI lies inside the margin
  (1 accuracy point; 5% of B's mean rho), *not reproduced* when the whole CI lies outside it,
  *inconclusive* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..stats import CONFIDENCE, N_BOOT, mcnemar, wilcoxon
from ..store import Store

ALPHA = 0.05
ACCURACY_MARGIN = 0.01
RHO_MARGIN = 0.05  # relative to the reference model's mean rho


@dataclass
class Comparison:
    metric: str  # clean_accuracy | robust_accuracy | rho
    attack: str
    model_a: str
    model_b: str
    effect: float
    ci: tuple[float, float]
    per_seed: list[float]
    test: dict[str, Any]
    mean_a: float
    mean_b: float
    n_seeds: int


@dataclass
class Claim:
    title: str
    kind: str  # "directional" | "equivalence"
    comparisons: list[Comparison] = field(default_factory=list)
    verdict: str = "inconclusive"
    missing: list[str] = field(default_factory=list)


def _per_seed_samples(store: Store, run_id: str, model: str, attack: str) -> dict[int, pd.DataFrame]:
    cells = store.frame("SELECT rc.cell_key, rc.seed FROM run_cells rc JOIN cells c ON c.cell_key = rc.cell_key "
                        "AND c.status = 'done' WHERE rc.run_id = ? AND rc.kind = 'eval' AND rc.model = ? "
                        "AND rc.attack = ?", (run_id, model, attack))
    return {int(r.seed): store.samples(r.cell_key).set_index("idx") for r in cells.itertuples()}


def _joint_bootstrap(values: list[np.ndarray], masks: list[np.ndarray], seed: int = 0) -> tuple[float, float]:
    """CI of mean over seeds of the masked mean, resampling image indices jointly across seeds."""
    n = len(values[0])
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, N_BOOT, 200):
        idx = rng.integers(0, n, size=(min(200, N_BOOT - start), n))
        per_seed = []
        for v, m in zip(values, masks):
            mm = m[idx]
            with np.errstate(invalid="ignore", divide="ignore"):
                per_seed.append((v[idx] * mm).sum(1) / mm.sum(1))
        stats.append(np.mean(per_seed, axis=0))
    boot = np.concatenate(stats)
    boot = boot[np.isfinite(boot)]
    a = (1 - CONFIDENCE) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def compare(store: Store, run_id: str, model_a: str, model_b: str, attack: str, metric: str) -> Comparison | None:
    """``metric``: 'correct' (accuracy after ``attack``; clean accuracy for attack 'clean') or 'rho'."""
    sa, sb = _per_seed_samples(store, run_id, model_a, attack), _per_seed_samples(store, run_id, model_b, attack)
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        return None
    values, masks, per_seed, pa, pb = [], [], [], [], []
    for s in seeds:
        a, b = sa[s], sb[s].loc[sa[s].index]
        if not (a.label.to_numpy() == b.label.to_numpy()).all():
            raise ValueError(f"{model_a} and {model_b} were not evaluated on the same images ({attack}, seed {s})")
        if metric == "rho":
            mask = ((a.clean_pred == a.label) & (b.clean_pred == b.label)).to_numpy()
            va, vb = a.rho.to_numpy(float), b.rho.to_numpy(float)
        else:
            mask = np.ones(len(a), dtype=bool)
            va, vb = (a.adv_pred == a.label).to_numpy(float), (b.adv_pred == b.label).to_numpy(float)
        values.append(np.nan_to_num(va - vb))
        masks.append(mask)
        per_seed.append(float((va - vb)[mask].mean()) if mask.any() else float("nan"))
        pa.append(va[mask])
        pb.append(vb[mask])
    all_a, all_b = np.concatenate(pa), np.concatenate(pb)
    test = wilcoxon(all_a, all_b) if metric == "rho" else mcnemar(all_a.astype(bool), all_b.astype(bool))
    name = "rho" if metric == "rho" else ("clean_accuracy" if attack == "clean" else "robust_accuracy")
    return Comparison(name, attack, model_a, model_b, float(np.nanmean(per_seed)), _joint_bootstrap(values, masks),
                      per_seed, test, float(np.mean([x.mean() for x in pa])), float(np.mean([x.mean() for x in pb])),
                      len(seeds))


def _combine(verdicts: list[str]) -> str:
    """A claim holds when every comparison supports it and fails when any contradicts it."""
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    return "inconclusive"


def directional_verdict(comps: list[Comparison]) -> str:
    verdicts = []
    for c in comps:
        p = c.test["p_value"]
        if c.effect > 0 and p < ALPHA and all(e > 0 for e in c.per_seed):
            verdicts.append("reproduced")
        elif c.effect < 0 and p < ALPHA:
            verdicts.append("not reproduced")
        else:
            verdicts.append("inconclusive")
    return _combine(verdicts)


def equivalence_verdict(comps: list[Comparison]) -> str:
    verdicts = []
    for c in comps:
        margin = ACCURACY_MARGIN if c.metric != "rho" else RHO_MARGIN * abs(c.mean_b)
        lo, hi = c.ci
        if -margin <= lo and hi <= margin:
            verdicts.append("reproduced")
        elif lo > margin or hi < -margin:
            verdicts.append("not reproduced")
        else:
            verdicts.append("inconclusive")
    return _combine(verdicts)


# (title, kind, [(model_a, model_b, attack, metric)]) -- the claims of Tomen & van Gemert for Fashion-MNIST
PAPER_CLAIMS = [
    ("Windowed 7x7 is more accurate than the 3x3 baseline", "directional",
     [("cnn-7x7-hamming", "cnn-3x3", "clean", "correct")]),
    ("Windowed 7x7 is more accurate than plain 7x7", "directional",
     [("cnn-7x7-hamming", "cnn-7x7", "clean", "correct")]),
    ("Windowed 7x7 is more robust to DeepFool (larger minimal perturbation rho) than 3x3 and plain 7x7",
     "directional", [("cnn-7x7-hamming", "cnn-3x3", "deepfool", "rho"), ("cnn-7x7-hamming", "cnn-7x7", "deepfool", "rho")]),
    ("Windowed 7x7 is more robust to the spatial transformation than 3x3 and plain 7x7 (global transform, ART's "
     "threat model)", "directional",
     [("cnn-7x7-hamming", "cnn-3x3", "spatial", "correct"), ("cnn-7x7-hamming", "cnn-7x7", "spatial", "correct")]),
    ("... and under the per-example worst case over the transform grid (a stronger attack than the paper's)",
     "directional", [("cnn-7x7-hamming", "cnn-3x3", "spatial-worst", "correct"),
                     ("cnn-7x7-hamming", "cnn-7x7", "spatial-worst", "correct")]),
    ("Hann and Blackman windows perform like Hamming (clean accuracy and DeepFool rho)", "equivalence",
     [("cnn-7x7-hann", "cnn-7x7-hamming", "clean", "correct"), ("cnn-7x7-blackman", "cnn-7x7-hamming", "clean", "correct"),
      ("cnn-7x7-hann", "cnn-7x7-hamming", "deepfool", "rho"), ("cnn-7x7-blackman", "cnn-7x7-hamming", "deepfool", "rho")]),
    ("The gain holds at matched parameter count (windowed 7x7 narrowed to the 3x3 model's size vs 3x3)",
     "directional", [("cnn-7x7-hamming-matched", "cnn-3x3", "clean", "correct"),
                     ("cnn-7x7-hamming-matched", "cnn-3x3", "deepfool", "rho")]),
]


# The reproduction report's depth sweep (its Fig. 9): does windowing still help as the plain CNN gets deeper?
# Model names are those of configs/paper-depth-sweep.yaml.
DEPTHS = (2, 4, 8, 12, 16)
DEPTH_CLAIMS = [
    *[(f"At n_layers {d}, Hamming 7x7 is more accurate than plain 7x7", "directional",
       [(f"hamming-d{d}", f"plain-d{d}", "clean", "correct")]) for d in DEPTHS],
    *[(f"At n_layers {d}, Hamming 7x7 is more robust to DeepFool (larger rho) than plain 7x7", "directional",
       [(f"hamming-d{d}", f"plain-d{d}", "deepfool", "rho")]) for d in DEPTHS],
]

# The reproduction report's subsampling test: inputs subsampled 28 -> 14 carry relatively more high-frequency
# energy, where the report saw windowing help. Model names are those of configs/paper-mnist14.yaml.
SUBSAMPLED_CLAIMS = [
    ("On 14x14 inputs, windowed 7x7 is more accurate than plain 7x7 (the report's subsampling claim)", "directional",
     [("cnn-7x7-hamming", "cnn-7x7", "clean", "correct")]),
    ("On 14x14 inputs, windowed 7x7 is more accurate than the 3x3 baseline", "directional",
     [("cnn-7x7-hamming", "cnn-3x3", "clean", "correct")]),
    ("On 14x14 inputs, a windowed 7x7 first layer (3x3 after it) is more accurate than the 3x3 baseline",
     "directional", [("cnn-first7x7-3x3-hamming", "cnn-3x3", "clean", "correct")]),
    ("On 14x14 inputs, windowed 7x7 is more robust to DeepFool (larger rho) than 3x3 and plain 7x7", "directional",
     [("cnn-7x7-hamming", "cnn-3x3", "deepfool", "rho"), ("cnn-7x7-hamming", "cnn-7x7", "deepfool", "rho")]),
    ("On 14x14 inputs, windowed 7x7 is more robust to the spatial transformation (global transform) than 3x3 and "
     "plain 7x7", "directional",
     [("cnn-7x7-hamming", "cnn-3x3", "spatial", "correct"), ("cnn-7x7-hamming", "cnn-7x7", "spatial", "correct")]),
]

CLAIM_SETS = {"paper": PAPER_CLAIMS, "depth-sweep": DEPTH_CLAIMS, "subsampled": SUBSAMPLED_CLAIMS}


def evaluate_claims(run_dir: str | Path, claims: list = PAPER_CLAIMS) -> tuple[list[Claim], dict[str, Any]]:
    store = Store.open_existing(run_dir)
    try:
        run = store.latest_run()
        if run is None:
            raise ValueError(f"{store.path}: the store holds no run")
        out = []
        for title, kind, pairs in claims:
            claim = Claim(title, kind)
            for a, b, attack, metric in pairs:
                c = compare(store, run["run_id"], a, b, attack, metric)
                if c is None:
                    claim.missing.append(f"{a} vs {b} on {attack}")
                else:
                    claim.comparisons.append(c)
            if claim.comparisons and not claim.missing:
                claim.verdict = (directional_verdict if kind == "directional" else equivalence_verdict)(claim.comparisons)
            else:
                claim.verdict = "not evaluated"
            out.append(claim)
        return out, run
    finally:
        store.close()


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} pts"


def format_comparison(c: Comparison) -> str:
    if c.metric == "rho":
        effect = f"{c.effect:+.4f} (A {c.mean_a:.4f} vs B {c.mean_b:.4f})"
        ci = f"[{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]"
        seeds = ", ".join(f"{e:+.4f}" for e in c.per_seed)
        test = (f"Wilcoxon p = {c.test['p_value']:.3g} (n = {c.test['n']} image-seed pairs, median paired "
                f"difference {c.test['median_difference']:+.4f})")
    else:
        effect = f"{_pct(c.effect)} (A {100 * c.mean_a:.2f}% vs B {100 * c.mean_b:.2f}%)"
        ci = f"[{_pct(c.ci[0])}, {_pct(c.ci[1])}]"
        seeds = ", ".join(_pct(e) for e in c.per_seed)
        test = (f"McNemar p = {c.test['p_value']:.3g} (n = {c.test['n']}; only A correct {c.test['only_a_correct']}, "
                f"only B correct {c.test['only_b_correct']})")
    return (f"| {c.model_a} vs {c.model_b} | {c.attack} | {c.metric} | {effect} | {ci} | {seeds} | {test} |")


def verdict_rules() -> str:
    """The verdict rules in words, with the constants the code uses."""
    return (f"Verdict rules (fixed in `robustbench_leak/report/claims.py` before any result was seen): a "
            f"directional claim is *reproduced* when the pooled effect has the claimed sign, the paired test gives "
            f"p < {ALPHA} and every seed shows that sign; *not reproduced* when the effect has the opposite sign "
            f"with p < {ALPHA}; *inconclusive* otherwise. An equivalence claim is *reproduced* when the whole 95% CI "
            f"lies within +-{100 * ACCURACY_MARGIN:.0f} accuracy point(s) (+-{100 * RHO_MARGIN:.0f}% of B's mean "
            f"rho), *not reproduced* when it lies wholly outside, *inconclusive* otherwise. A claim with several "
            f"comparisons is reproduced when all are, not reproduced when any is.")


def summary_table(claims: list[Claim]) -> str:
    lines = ["| # | claim | verdict | comparisons (seeds) |", "|---|---|---|---|"]
    for i, claim in enumerate(claims, 1):
        seeds = ", ".join(f"{c.model_a} vs {c.model_b} on {c.attack} ({c.n_seeds})" for c in claim.comparisons)
        lines.append(f"| {i} | {claim.title} | **{claim.verdict}** | {seeds or 'none in the store'} |")
    return "\n".join(lines)


def protocol_line(run_dir: str | Path) -> str:
    """The latest run's config ``description`` as a line set under every table ('' when it has none)."""
    from .loader import config_description

    store = Store.open_existing(run_dir)
    try:
        run = store.latest_run()
    finally:
        store.close()
    desc = config_description((run or {}).get("config_yaml"))
    return f"_Protocol: {desc}._" if desc else ""


def to_markdown(claims: list[Claim], protocol: str = "") -> str:
    """The claims as Markdown; ``protocol`` (see :func:`protocol_line`) is repeated under every table."""
    lines = [summary_table(claims), "", *([protocol, ""] if protocol else []), verdict_rules(), ""]
    for i, claim in enumerate(claims, 1):
        lines += [f"### Claim {i}: {claim.title}", "", f"**Verdict: {claim.verdict}** ({claim.kind} claim)", ""]
        if claim.comparisons:
            lines += ["| A vs B | attack | metric | effect A - B (mean over seeds) | 95% CI | per seed | paired test |",
                      "|---|---|---|---|---|---|---|"]
            lines += [format_comparison(c) for c in claim.comparisons]
            lines += ["", protocol] if protocol else []
        for m in claim.missing:
            lines.append(f"- missing from the store: {m}")
        lines.append("")
    return "\n".join(lines)


def art_defect_table(art_dir: str | Path) -> str:
    """ART as-is vs fixed vs the native engine on the same grid, per model and seed, from the store."""
    store = Store.open_existing(art_dir)
    try:
        run = store.latest_run()
        rows = store.frame("""
            SELECT rc.model, rc.seed, rc.attack, m.metric, m.value, m.lo, m.hi FROM run_cells rc
            JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done' JOIN metrics m ON m.cell_key = rc.cell_key
            WHERE rc.run_id = ? AND rc.kind = 'eval'""", (run["run_id"],))
    finally:
        store.close()
    if rows.empty:
        return "(no finished cells)"
    lines = ["| model | seed | attack | clean accuracy | accuracy under the attack [95% CI] | chosen transform (rows, cols) px, deg |",
             "|---|---|---|---|---|---|"]
    for (model, seed, attack), g in rows.groupby(["model", "seed", "attack"], sort=True):
        v = g.set_index("metric")
        ra = v.loc["robust_accuracy"]
        ci = f"[{100 * ra.lo:.1f}, {100 * ra.hi:.1f}]" if pd.notna(ra.lo) else ""
        t = f"({v.value['shift_rows']:+.0f}, {v.value['shift_cols']:+.0f}), {v.value['rotation_deg']:+.0f}"
        lines.append(f"| {model} | {seed} | {attack} | {100 * v.value['clean_accuracy']:.1f}% | "
                     f"{100 * ra.value:.1f}% {ci} | {t} |")
    return "\n".join(lines)


def coverage_lines(run_dir: str | Path) -> list[str]:
    """Which seeds of each model of the latest run have every attack cell finished, so a partial run says so."""
    store = Store.open_existing(run_dir)
    try:
        run = store.latest_run()
        cells = store.frame("""
            SELECT rc.model, rc.seed, COALESCE(SUM(c.status = 'done'), 0) AS done, COUNT(*) AS planned FROM run_cells rc
            LEFT JOIN cells c ON c.cell_key = rc.cell_key WHERE rc.run_id = ? AND rc.kind = 'eval'
            GROUP BY rc.model, rc.seed""", (run["run_id"],))
    finally:
        store.close()
    if cells.empty:
        return ["- coverage: no eval cells planned"]
    parts, complete = [], True
    for model, g in cells.groupby("model", sort=False):
        full = [int(r.seed) for r in g.itertuples() if r.done == r.planned]
        partial = [f"{int(r.seed)} ({int(r.done)}/{int(r.planned)})" for r in g.itertuples()
                   if r.done != r.planned]
        complete &= not partial
        parts.append(f"{model}: seeds {', '.join(map(str, full)) or 'none'} complete"
                     + (f"; incomplete: {', '.join(partial)}" if partial else ""))
    head = "every planned cell finished" if complete else "**incomplete run: verdicts use the finished seeds only**"
    return [f"- coverage ({head}): " + "; ".join(parts)]


def provenance_lines(run_dir: str | Path) -> list[str]:
    import json

    store = Store.open_existing(run_dir)
    try:
        run = store.latest_run()
        first = store.frame("SELECT MIN(started_at) AS t FROM runs").t.iloc[0]
    finally:
        store.close()
    versions = json.loads(run["versions"] or "{}")
    shown = ", ".join(f"{k} {versions[k]}" for k in ("torch", "adversarial-robustness-toolbox", "timm", "numpy")
                      if k in versions)
    return [f"- store: `{Path(run_dir) / 'results.sqlite'}`, latest run `{run['run_id']}` ({run['status']}; "
            f"first run started {first}, latest finished {run['finished_at']})",
            f"- config: `{run['config_path']}` (sha256 prefix {run['config_hash']}), git commit {run['git_commit']}",
            f"- device: {run['device']}; {shown}"]
