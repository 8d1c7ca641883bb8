"""The claims report's evaluation driver (``rbleak claims``): reads a run's stored per-image results
through :class:`~robustbench_leak.store.StoreReader`, computes each paired comparison with
:mod:`robustbench_leak.stats`, and rules on it with :mod:`robustbench_leak.report.verdicts`.

Claim sets are data (:mod:`robustbench_leak.report.claim_set`); the Markdown is
:mod:`robustbench_leak.report.claims_md`.

An effect is a difference between two models evaluated on the same test images, averaged over the
seeds both have. Its verdict reads the crossed seed x image standard error (:mod:`robustbench_leak.crossed`,
the rules in ``verdict_rules.yaml``); beside it are the two-stage bootstrap over seeds then images, the
image-level interval (images resampled jointly across seeds, seeds fixed), the seed-level t-interval on the
per-seed effects, a seed-level t-test and exact sign-flip test, and an image-clustered paired permutation
test (conditional on the trained models).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import stats
from ..crossed import Crossed, crossed
from ..metrics import robust_correct
from ..store import StoreReader
from . import verdicts
from .claim_set import ClaimSet, ClaimSpec, Declared, load_claim_set
from .registration import Registration, judge
from .spatial_sensitivity import Sensitivity, sensitivity


@dataclass
class Comparison:
    metric: str  # clean_accuracy | robust_accuracy | rho
    attack: str
    model_a: str
    model_b: str
    effect: float  # mean over seeds of the per-seed effects
    image_ci: tuple[float, float]
    seed_ci: tuple[float, float]  # t-interval on the per-seed effects (shown beside the verdict's)
    two_stage_ci: tuple[float, float]  # percentile interval of the two-stage draws (too narrow; not printed)
    seeds: list[int]
    per_seed: list[float]
    seed_test: dict[str, Any]
    sign_flip: dict[str, Any]
    clustered: dict[str, Any]
    mean_a: float
    mean_b: float
    n_images: int  # images per seed (before the mask)
    se: float = float("nan")  # the verdict's standard error (crossed seed x image model)
    crossed: Crossed | None = None
    two_stage_se: float = float("nan")  # the two-stage bootstrap's, scaled: a description
    ruling: verdicts.Ruling | None = None
    test: verdicts.Test | None = None
    flagged: list[str] = field(default_factory=list)  # "model seed N: flag" of the cells used
    not_counted: list[str] = field(default_factory=list)  # why its verdict does not count (flagged cells)
    attack_failed: dict[int, int] = field(default_factory=dict)  # rho: seed -> images excluded (attack failed)
    sensitivity: Sensitivity | None = None
    sensitivity_note: str = ""  # why there is none, for spatial comparisons
    spectra: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # low_freq_share: model -> per seed
    spectra_figure: Path | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def seeds_agreeing(self) -> int:
        """Seeds whose effect is positive (the claimed side for directional claims)."""
        return int(sum(e > 0 for e in self.per_seed))


@dataclass
class Claim:
    title: str
    kind: str  # "directional" | "equivalence"
    comparisons: list[Comparison] = field(default_factory=list)
    verdict: str = verdicts.INCONCLUSIVE
    missing: list[str] = field(default_factory=list)
    role: str = "primary"  # primary | secondary | exploratory
    declared: Declared | None = None
    post_hoc: bool = True  # changed after the run it is judged on started (or never declared)
    registration: Registration | None = None
    protocol: str = ""  # the protocol line of the folder the cells come from, when not the report's own


def _cells(store: StoreReader, run_id: str, model: str, attack: str) -> dict[int, tuple[str, dict[str, Any], str]]:
    """seed -> (cell_key, info, attack kind) of a model's finished cells of one attack label; the info carries
    ``_stale`` when the cell predates its engine's current version (a fix that changes its results)."""
    frame = store.done_eval_cells(run_id, model, attack)
    out = {}
    for r in frame.itertuples():
        spec = (json.loads(r.spec) if r.spec else {}).get("attack", {})
        info = json.loads(r.info) if r.info else {}
        stale = _stale(spec)
        info = {**info, "_stale": stale} if stale else info
        out[int(r.seed)] = (r.cell_key, {**info, "_per_example": per_example(spec)}, str(spec.get("kind", "")))
    return out


def per_example(spec: dict[str, Any]) -> bool:
    """Whether the attack perturbs each image on its own, so a misclassified clean image is not robust
    (RobustBench's robust accuracy, ``metrics.robust_correct``); a global transform counts its own accuracy."""
    from ..attacks.base import attack_class

    try:
        return bool(attack_class(str(spec.get("kind")), spec.get("engine")).per_example(spec.get("params") or {}))
    except (KeyError, ValueError):
        return True


def _stale(spec: dict[str, Any]) -> str:
    """'' or why the cell predates its engine's current version."""
    from ..attacks.base import attack_class

    try:
        current = attack_class(str(spec.get("kind")), spec.get("engine")).version
    except (KeyError, ValueError):
        return ""
    have = int(spec.get("version", 1))
    return f"computed by {spec.get('engine')} {spec.get('kind')} v{have}, before v{current}" if have < current else ""


# a verdict that rests on a cell with one of these flags does not count: its numbers are not the attack's
NOT_COUNTED = ("did not converge",)


def _flags(model: str, seed: int, info: dict[str, Any]) -> list[str]:
    stale = [info["_stale"]] if info.get("_stale") else []
    return [f"{model} seed {seed}: {flag}" for flag in [*(info.get("flags") or []), *stale]]


def _not_counted(model: str, seed: int, info: dict[str, Any]) -> list[str]:
    why = [f"{model} seed {seed}: not converged" for flag in info.get("flags") or [] if any(x in flag for x in NOT_COUNTED)]
    return why + ([f"{model} seed {seed}: predates the fix ({info['_stale']})"] if info.get("_stale") else [])


def compare(store: StoreReader, run_id: str, model_a: str, model_b: str, attack: str, metric: str,
            only_seeds: Sequence[int] | None = None) -> Comparison | None:
    """``metric``: 'correct' (accuracy after ``attack``; clean accuracy for attack 'clean'), 'rho' or
    'low_freq_share'; ``only_seeds``: use only these training seeds (default: every seed both models have)."""
    ca, cb = _cells(store, run_id, model_a, attack), _cells(store, run_id, model_b, attack)
    seeds = sorted(set(ca) & set(cb))
    if only_seeds is not None:
        seeds = [s for s in seeds if s in only_seeds]
    if not seeds:
        return None
    diffs, masks, mean_a, mean_b, flagged, not_counted, failed = [], [], [], [], [], [], {}
    stale = [s for s in seeds if ca[s][1].get("_stale") or cb[s][1].get("_stale")]
    if stale and len(stale) < len(seeds):  # judged on the current engine's cells; the older ones stay, labelled
        why = ca[stale[0]][1].get("_stale") or cb[stale[0]][1].get("_stale")
        flagged.append(f"seeds {', '.join(map(str, stale))} left out: their cells predate the fix ({why})")
        seeds = [s for s in seeds if s not in stale]
    n_images = None
    for s in seeds:
        a = store.samples(ca[s][0]).set_index("idx")
        b = store.samples(cb[s][0]).set_index("idx").reindex(a.index)
        if n_images is not None and len(a) != n_images:
            raise ValueError(f"{model_a} vs {model_b} on {attack}: seed {s} has {len(a)} images, others {n_images}")
        n_images = len(a)
        if not (a.label.to_numpy() == b.label.to_numpy()).all():
            raise ValueError(f"{model_a} and {model_b} were not evaluated on the same images ({attack}, seed {s})")
        if metric == "rho":
            for model, t in ((model_a, a), (model_b, b)):
                if "rho" not in t or not np.isfinite(t.rho.to_numpy(float)).any():
                    raise ValueError(f"{model} on {attack} (seed {s}): no per-image rho stored (rho is a minimum-norm "
                                     "attack's, e.g. deepfool or minnorm); compare this attack on metric correct")
            mask = ((a.clean_pred == a.label) & (b.clean_pred == b.label)).to_numpy()
            va, vb = a.rho.to_numpy(float), b.rho.to_numpy(float)
            # the stated rule: an image the attack failed on (still classified correctly, so its rho is not a
            # perturbation that fools) is excluded from both models' means; the count is printed
            fooled = ((a.adv_pred != a.label) & (b.adv_pred != b.label)).to_numpy()
            failed[s] = int((mask & ~fooled).sum())
            mask = mask & fooled & np.isfinite(va) & np.isfinite(vb)
        elif metric == "low_freq_share":
            if "hf_share" not in a or "hf_share" not in b:
                return None  # a store from before perturbation spectra were recorded
            va, vb = 1 - a.hf_share.to_numpy(float), 1 - b.hf_share.to_numpy(float)
            mask = ((a.clean_pred == a.label) & (b.clean_pred == b.label)).to_numpy() & np.isfinite(va) & np.isfinite(vb)
        else:
            mask = np.ones(len(a), dtype=bool)
            va = robust_correct(a.label.to_numpy(), a.clean_pred.to_numpy(), a.adv_pred.to_numpy(),
                                ca[s][1]["_per_example"] and attack != "clean").astype(float)
            vb = robust_correct(b.label.to_numpy(), b.clean_pred.to_numpy(), b.adv_pred.to_numpy(),
                                cb[s][1]["_per_example"] and attack != "clean").astype(float)
        diffs.append(np.where(mask, np.nan_to_num(va - vb), 0.0))
        masks.append(mask)
        mean_a.append(va[mask].mean() if mask.any() else np.nan)
        mean_b.append(vb[mask].mean() if mask.any() else np.nan)
        flagged += _flags(model_a, s, ca[s][1]) + _flags(model_b, s, cb[s][1])
        not_counted += _not_counted(model_a, s, ca[s][1]) + _not_counted(model_b, s, cb[s][1])
    diff, mask = np.stack(diffs), np.stack(masks)
    if metric == "low_freq_share" and not mask.any():
        return None  # no spectra stored for these cells (computed before spectra were recorded)
    per_seed = stats.per_seed_effects(diff, mask)
    r = verdicts.rules().interval
    boot = stats.paired_bootstrap(diff, mask, n_boot=r.resamples, seed=r.random_seed)
    name = metric if metric in ("rho", "low_freq_share") else ("clean_accuracy" if attack == "clean" else "robust_accuracy")
    comp = Comparison(name, attack, model_a, model_b, float(np.nanmean(per_seed)), boot["image"],
                      stats.t_interval(per_seed), boot["two_stage"], seeds, [float(e) for e in per_seed],
                      stats.seed_t_test(per_seed), stats.sign_flip_test(per_seed),
                      stats.clustered_permutation_test(diff, mask), float(np.nanmean(mean_a)),
                      float(np.nanmean(mean_b)), int(n_images or 0), flagged=flagged, not_counted=not_counted,
                      attack_failed=failed if any(failed.values()) else {})
    comp.crossed = crossed(diff, mask)
    comp.se = comp.crossed.se
    comp.two_stage_se = stats.two_stage_se(boot["two_stage_sd"], len(seeds))
    if metric == "low_freq_share":
        comp.spectra = {m: [c[s][1]["spectrum"] for s in seeds if c[s][1].get("spectrum")]
                        for m, c in ((model_a, ca), (model_b, cb))}
    first = ca[seeds[0]]
    # sensitivity to the chosen transform: spatial attacks that choose one (not the per-example worst cases)
    if first[2] == "spatial" and first[1].get("mode") not in ("worst_of_grid", "worst_of_k"):
        comp.sensitivity = sensitivity({s: ca[s][1] for s in seeds}, {s: cb[s][1] for s in seeds})
        if comp.sensitivity is None:
            comp.sensitivity_note = ("not available for this run: its spatial cells store no per-transform "
                                     "accuracies (cell info 'per_transform' or 'grid')")
    return comp


def rule_claims(claims: list[Claim], margins: verdicts.Margins | None = None) -> None:
    """Apply the verdict policy: the primary comparisons of all claims as one Holm family, the secondary and
    exploratory ones each uncorrected; then each claim from its comparisons."""
    for role in verdicts.ROLES:
        comps = [(claim, c) for claim in claims if claim.role == role and not claim.missing
                 for c in claim.comparisons if not c.not_counted]
        for claim, c in comps:
            m = verdicts.margin(c.metric, c.mean_b, margins) if claim.kind == "equivalence" else float("nan")
            x = c.crossed
            c.test = verdicts.Test(claim.kind, c.metric, c.effect, c.se, c.n_seeds, m,
                                   *((x.s2, x.v_shared, x.df_satterthwaite, x.n) if x else ()))
        rulings = verdicts.rule_family([c.test for _, c in comps], corrected=role == "primary")
        for (_, c), ruling in zip(comps, rulings):
            c.ruling = ruling
    for claim in claims:
        counted = [c.ruling.verdict for c in claim.comparisons if c.ruling is not None]
        verdict = (verdicts.NOT_EVALUATED if not counted or claim.missing else verdicts.combine(counted))
        if any(c.not_counted for c in claim.comparisons) and verdict != verdicts.NOT_EVALUATED:
            # a part of the claim is unknown: all-one-way is no longer shown, conflicting stays conflicting
            verdict = verdict if verdict == verdicts.MIXED else verdicts.INCONCLUSIVE
        claim.verdict = verdicts.answered(verdict) if claim.role == "exploratory" else verdict


def rule(claim: Claim) -> None:
    """One claim ruled on its own (a family of its comparisons when it is primary)."""
    rule_claims([claim])


def _check_names(claim_set: ClaimSet, known: list[str], what: str, where: str) -> None:
    """A claim set naming a model (or attack label) that the run lacks is a typo until shown otherwise."""
    for i, spec in enumerate(claim_set.claims):
        for j, p in enumerate(spec.comparisons):
            for key in (("a", "b") if what == "model" else ("attack",)):
                name = getattr(p, key)
                if name not in known and not (what == "attack" and spec.config):
                    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise ValueError(f"{claim_set.source or claim_set.name or 'claim set'}: claims.{i}.comparisons.{j}.{key}: "
                                     f"{what} {name!r} is not in {where}; {hint}({what}s: {', '.join(known)})")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _declared_before(spec: ClaimSpec, first_start: str | None) -> bool:
    if spec.declared is None or not first_start:
        return False
    return spec.declared.date < _parse_time(first_start)


def _config_matches(run: dict[str, Any], config: str) -> bool:
    """Whether a stored run is of the config file a claim names (by file name or by the config's name)."""
    stem = Path(config).name.removesuffix(".yaml").removesuffix(".yml")
    return Path(str(run.get("config_path") or "")).name == Path(config).name or run.get("config_name") == stem


def claim_folders(claim_set: ClaimSet, others: Sequence[str | Path]) -> dict[str, Path]:
    """For each other config a claim of the set names, the folder of ``others`` whose latest run is of it.

    A folder that answers no such claim, or two folders for one config, is refused (a mistyped path would
    otherwise leave the claim silently unevaluated)."""
    wanted = sorted({spec.config for spec in claim_set.claims if spec.config})
    found: dict[str, Path] = {}
    for folder in others:
        try:
            with StoreReader(folder) as store:
                run = store.latest_run()
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"--with: {exc}") from None
        if run is None:
            raise ValueError(f"--with: {folder}: the store holds no run")
        match = [c for c in wanted if _config_matches(run, c)]
        if not match:
            raise ValueError(f"--with: {folder}: its run is of config {run.get('config_name')!r}, which no claim of "
                             f"{claim_set.name or 'the claim set'} names (claims name: {', '.join(wanted) or 'none'})")
        if match[0] in found:
            raise ValueError(f"--with: {folder}: {found[match[0]]} already holds {match[0]}'s cells; give one folder")
        found[match[0]] = Path(folder)
    return found


def evaluate_claims(run_dir: str | Path, claim_set: ClaimSet | str = "paper",
                    seeds: Sequence[int] | None = None,
                    others: Sequence[str | Path] = ()) -> tuple[list[Claim], dict[str, Any]]:
    """Every claim of ``claim_set`` (a :class:`ClaimSet`, a shipped set's name or a YAML path) on the
    latest run of ``run_dir``; ``seeds``: only these training seeds (each must be in the run). A claim that
    names another config (``config:``) reads the folder of ``others`` holding that config's run, or, without
    one, ``run_dir``'s store."""
    if not isinstance(claim_set, ClaimSet):
        claim_set = load_claim_set(claim_set)
    folders = claim_folders(claim_set, others)
    with StoreReader(run_dir) as store:
        run = store.latest_run()
        if run is None:
            raise ValueError(f"{store.path}: the store holds no run")
        first_start, stored, later = _stored_records(store)
        run = {**run, "first_started_at": first_start}
        if seeds is not None:
            have = sorted(int(x) for x in store.eval_coverage(run["run_id"])["seed"].unique())
            unknown = [x for x in seeds if x not in have]
            if unknown:
                raise ValueError(f"--seeds: seed {unknown[0]} is not in {store.path}'s latest run (seeds {have})")
        where = f"{store.path}'s latest run"
        _check_names(claim_set, store.run_model_names(run["run_id"]), "model", where)
        _check_names(claim_set, store.attack_order(run["run_id"]), "attack", f"{store.path}")
        out = []
        declared_ok = []
        sources = {config: StoreReader(folder) for config, folder in folders.items()}
        try:
            for spec in claim_set.claims:
                src, src_run = _source(store, run, sources, spec)
                if spec.config:  # answered by another config's cells: declared before the first of them, or none
                    own_start = src.first_cell_start(src_run, [p.attack for p in spec.comparisons])
                    declared_ok.append(own_start is None or _declared_before(spec, own_start))
                else:
                    declared_ok.append(_declared_before(spec, first_start))
            registrations = judge(claim_set, stored, first_start, declared_ok, later)
            elsewhere = {}  # a claim answered elsewhere is judged against that store's records, once per store
            for config, src in sources.items():
                start, src_stored, src_later = _stored_records(src)
                elsewhere[config] = judge(claim_set, src_stored, start, declared_ok, src_later)
            registrations = [elsewhere[spec.config][i] if spec.config in elsewhere else reg
                             for i, (spec, reg) in enumerate(zip(claim_set.claims, registrations))]
            for spec, reg in zip(claim_set.claims, registrations):
                out.append(_evaluate_one(spec, reg, *_source(store, run, sources, spec), seeds))
                if spec.config in folders:
                    out[-1].protocol = protocol_line(folders[spec.config])
        finally:
            for src in sources.values():
                src.close()
        rule_claims(out, claim_set.margins)
        return out, run


def _stored_records(store: StoreReader) -> tuple[str | None, list[dict[str, Any]] | None,
                                                  tuple[str, list[dict[str, Any]]] | None]:
    """(first run's start, the claim records it stored or None, (start, records) of the first later run that
    stored some when the first did not) of ``store``: what ``registration.judge`` compares against."""
    runs = store.runs()
    first_start = runs.started_at.min()
    records = [(r.started_at, json.loads(r.claims)) for r in runs.itertuples()
               if isinstance(getattr(r, "claims", None), str) and r.claims]
    first_has = len(runs) and isinstance(runs.iloc[0].get("claims"), str) and runs.iloc[0].get("claims")
    stored = records[0][1] if first_has else None
    later = records[0] if records and not first_has else None
    return first_start, stored, later


def _source(store: StoreReader, run: dict[str, Any], sources: dict[str, StoreReader],
            spec: ClaimSpec) -> tuple[StoreReader, str]:
    """The store and run whose cells answer ``spec``: its config's folder where one was given, else the run's."""
    src = sources.get(spec.config) if spec.config else None
    return (src, src.latest_run()["run_id"]) if src is not None else (store, run["run_id"])


def _evaluate_one(spec: ClaimSpec, reg: Registration, store: StoreReader, run_id: str,
                  seeds: Sequence[int] | None) -> Claim:
    claim = Claim(spec.title, spec.kind, role=spec.role, declared=spec.declared,
                  post_hoc=reg.status == "post hoc", registration=reg)
    for p in spec.comparisons:
        try:
            c = compare(store, run_id, p.a, p.b, p.attack, p.metric, seeds)
        except ValueError as exc:
            raise ValueError(f"claim {spec.title[:80]!r}, {p.a} vs {p.b} on {p.attack} ({p.metric}): {exc}") from None
        if c is None:
            why = (": no perturbation spectra stored (cells computed before spectra were recorded)"
                   if p.metric == "low_freq_share" else "")
            claim.missing.append(f"{p.a} vs {p.b} on {p.attack}{why}")
        else:
            claim.comparisons.append(c)
    return claim


def _per_seed(store: StoreReader, run_id: str, model: str, attack: str) -> dict[int, pd.DataFrame]:
    return {int(r.seed): store.samples(r.cell_key).set_index("idx")
            for r in store.done_eval_cells(run_id, model, attack).itertuples()}


def margin_lines(run_dir: str | Path, claim_set: ClaimSet, seeds: Sequence[int] | None = None) -> list[str]:
    """The claim set's margins with their justification, and the measurements that justify them (one model's
    seed-to-seed spread of clean accuracy; DeepFool's looseness against the minimum-norm ensemble)."""
    m = claim_set.margins
    if m is None or not any(c.kind == "equivalence" for c in claim_set.claims):
        return []
    lines = [f"Equivalence margins (stated in the claim set): +-{100 * m.accuracy:.2g} accuracy points and "
             f"+-{100 * m.rho:.2g}% of B's mean rho. {m.justification}"]
    ev = m.evidence
    if ev is not None:
        with StoreReader(run_dir) as store:
            run_id = store.latest_run()["run_id"]
            clean = _per_seed(store, run_id, ev.model, ev.clean)
            df, ens = _per_seed(store, run_id, ev.model, ev.deepfool), _per_seed(store, run_id, ev.model, ev.ensemble)
        keep = (lambda s: seeds is None or s in seeds)
        acc = [float((f.adv_pred == f.label).mean()) for s, f in sorted(clean.items()) if keep(s)]
        ratios = []
        for s in sorted(set(df) & set(ens)):
            if keep(s):
                a, b = df[s].rho, ens[s].rho.reindex(df[s].index)
                ok = (df[s].clean_pred == df[s].label) & np.isfinite(a) & np.isfinite(b) & (b > 0)
                if ok.any():
                    ratios.append(float(np.median(a[ok] / b[ok])))
        if len(acc) >= 2:
            lines.append(f"Measured on this run: {ev.model}'s clean accuracy varies by "
                         f"{100 * float(np.std(acc, ddof=1)):.2f} points (SD over {len(acc)} seeds, "
                         f"{100 * min(acc):.2f}% to {100 * max(acc):.2f}%).")
        if ratios:
            lines.append(f"Measured on this run: {ev.model}'s DeepFool rho (`{ev.deepfool}`) exceeds the "
                         f"minimum-norm ensemble's (`{ev.ensemble}`) by a median of {100 * (min(ratios) - 1):.1f}% "
                         f"to {100 * (max(ratios) - 1):.1f}% per seed ({len(ratios)} seeds; images both attacks "
                         f"fooled, classified correctly).")
    return [" ".join(lines), ""]


def protocol_line(run_dir: str | Path) -> str:
    """The latest run's config ``description`` as a line set under every table ('' when it has none)."""
    from .loader import config_description

    with StoreReader(run_dir) as store:
        run = store.latest_run()
    desc = config_description((run or {}).get("config_yaml"))
    return f"_Protocol: {desc}._" if desc else ""


def art_defect_table(art_dir: str | Path) -> str:
    """ART as-is vs fixed vs the native engine on the same grid, per model and seed, from the store."""
    with StoreReader(art_dir) as store:
        run = store.latest_run()
        rows = store.results(run["run_id"])
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
    with StoreReader(run_dir) as store:
        run = store.latest_run()
        cells = store.eval_coverage(run["run_id"])
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
    with StoreReader(run_dir) as store:
        run = store.latest_run()
        first = store.runs().started_at.min()
    versions = json.loads(run["versions"] or "{}")
    shown = ", ".join(f"{k} {versions[k]}" for k in ("torch", "adversarial-robustness-toolbox", "timm", "numpy")
                      if k in versions)
    return [f"- store: `{Path(run_dir) / 'results.sqlite'}`, latest run `{run['run_id']}` ({run['status']}; "
            f"first run started {first}, latest finished {run['finished_at']})",
            f"- config: `{run['config_path']}` (sha256 prefix {run['config_hash']}), git commit {run['git_commit']}",
            f"- device: {run['device']}; {shown}"]
