"""Markdown of the claims report: a summary table, the verdict rules and margins, the sanity-flagged cells,
then the claims under one heading per role (primary: the Holm-corrected family, with its power table;
secondary and exploratory: uncorrected), each comparison with its verdict interval, the seed- and
image-level intervals, per-seed effects, p-values and its verdict, and spatial sensitivity."""

from __future__ import annotations

import math
import os
from pathlib import Path

from scipy import stats as sps

from . import verdicts
from .claims import Claim, Comparison
from .fmt import md_text
from .spatial_sensitivity import Sensitivity, heatmap
from .verdicts import rho_text, rules_text


def _pts(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:+.2f}"


def _val(x: float, rho: bool) -> str:
    if not math.isfinite(x):
        return "–"
    return rho_text(x) if rho else _pts(x)


def _ci(ci: tuple[float, float], rho: bool) -> str:
    if not all(math.isfinite(v) for v in ci):
        return "–"
    return f"[{_val(ci[0], rho)}, {_val(ci[1], rho)}]"


def _p(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3g}"


def _clustered_p(test: dict) -> str:
    """The clustered p; at the Monte Carlo floor it says so (no permutation was as extreme)."""
    p = test["p_value"]
    if not test["exact"] and test["n_perm"] and p <= 1 / (1 + test["n_perm"]) + 1e-12:
        return f"<= {p:.1g} (none of {test['n_perm']:,} permutations as extreme)"
    return _p(p)


def comparison_row(c: Comparison) -> str:
    rho = c.metric == "rho"
    unit = "" if rho else " pts"
    means = (f"A {c.mean_a:.4f} vs B {c.mean_b:.4f}" if rho else f"A {100 * c.mean_a:.2f}% vs B {100 * c.mean_b:.2f}%")
    seeds = ", ".join(f"{s}: {_val(e, rho)}" for s, e in zip(c.seeds, c.per_seed))
    cl = c.clustered
    clustered = (f"{_clustered_p(cl)} ({cl['images_differing']} images differ, "
                 f"{cl['images_differing_in_2_or_more_seeds']} in 2+ seeds)")
    r = c.ruling
    verdict = "not counted" if c.not_counted else (r.verdict if r else "–")
    level = f"{100 * r.level:.3g}%: {_ci(r.interval, rho)}" if r else "–"
    p = "–" if r is None else (f"{_p(r.p)}; Holm {_p(r.p_adjusted)}" if r.p_adjusted != r.p or _corrected(c) else
                               _p(r.p))
    return (f"| {c.model_a} vs {c.model_b} | {c.attack} | {c.metric} | {_val(c.effect, rho)}{unit} ({means}) | "
            f"{level} | {_two_stage(c)} | {_ci(c.seed_ci, rho)} | {_ci(c.image_ci, rho)} | {seeds} | {p} | "
            f"t-test {_p(c.seed_test['p_value'])}; sign-flip {_p(c.sign_flip['p_value'])} | {clustered} | "
            f"{verdict} |")


def stats_t(k: int) -> float:
    return float(sps.t.ppf(0.975, k - 1))


def _two_stage(c: Comparison) -> str:
    """The two-stage bootstrap's 95% interval (its scaled SD, t with k - 1 df): a description."""
    if c.n_seeds < 2 or not math.isfinite(c.two_stage_se):
        return "–"
    half = stats_t(c.n_seeds) * c.two_stage_se
    return _ci((c.effect - half, c.effect + half), c.metric == "rho")


def _not_counted_text(reasons: list[str]) -> str:
    """'N cells that predate the fix (...)' and 'cells not converged (model seed N, ...)', each once."""
    stale = [r for r in dict.fromkeys(reasons) if ": predates the fix" in r]
    loose = [r.split(": ")[0] for r in dict.fromkeys(reasons) if r.endswith(": not converged")]
    parts = []
    if stale:
        parts.append(f"{len(stale)} cells that predate the fix ({stale[0].split('(', 1)[1].rstrip(')')})")
    if loose:
        parts.append(f"cells whose attack did not converge ({', '.join(loose)})")
    return " and ".join(parts)


def _corrected(c: Comparison) -> bool:
    return c.ruling is not None and "Holm step" in c.ruling.reason


TABLE_HEAD = ["| A vs B | attack | metric | effect A - B (mean over seeds) | verdict interval (crossed seed x image) "
              "| two-stage bootstrap 95% CI | seed-level 95% CI (t) | image-level 95% CI | per seed (seed: effect) "
              "| verdict p | seed-level p | image-clustered p (given the trained models) | comparison |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def declared_text(claim: Claim) -> str:
    """The claim's definition hash (prefix), the date of the last commit that changed it, and whether it was
    fixed before the run it is judged on."""
    when = (f"last changed {claim.declared.date:%Y-%m-%d} ({claim.declared.commit[:7]})" if claim.declared
            else "not declared")
    head = f"`{claim.registration.sha256[:12]}` " if claim.registration is not None else ""
    return f"{head}{when}, " + ("**post hoc**" if claim.post_hoc else "before the run")


def summary_table(claims: list[Claim]) -> str:
    lines = ["| # | claim | verdict | role | definition (SHA-256; last change; pre-registered?) | comparisons (seeds) |",
             "|---|---|---|---|---|---|"]
    for i, claim in enumerate(claims, 1):
        seeds = ", ".join(f"{c.model_a} vs {c.model_b} on {c.attack} ({c.n_seeds})" for c in claim.comparisons)
        lines.append(f"| {i} | {md_text(claim.title)} | **{claim.verdict}** | {claim.role} | {declared_text(claim)} | "
                     f"{seeds or 'none in the store'} |")
    return "\n".join(lines)


def seeds_line(claims: list[Claim]) -> str:
    """Which seeds the comparisons read: those both of a comparison's models have finished for its attack
    (a run adding seeds may be partway)."""
    sets: dict[tuple[int, ...], list[str]] = {}
    for claim in claims:
        for c in claim.comparisons:
            sets.setdefault(tuple(c.seeds), []).append(f"{c.model_a} vs {c.model_b} on {c.attack}")
    if not sets:
        return ""
    if len(sets) == 1:
        (seeds, _), = sets.items()
        return (f"Seeds used: {', '.join(map(str, seeds))} for every comparison (each comparison reads the seeds "
                "both of its models have finished for its attack).")
    parts = [f"{', '.join(map(str, seeds))} for {'; '.join(names)}" for seeds, names in sets.items()]
    return ("Seeds used (each comparison reads the seeds both of its models have finished for its attack; they "
            "differ here): " + " | ".join(parts) + ".")


def _pow_val(x: float, rho: bool) -> str:
    return "–" if not math.isfinite(x) else (f"{x:.4f}" if rho else f"{100 * x:.2f} pts")


def power_table(claims: list[Claim]) -> list[str]:
    """Per primary comparison: the minimal detectable effect at the power target with this run's seeds, and
    how many seeds would decide the observed effect on the side it lies (at the family's Bonferroni level
    alpha / m, which bounds every Holm step), with the test set's floor Var(k) = s^2 / k + V_sh."""
    comps = [(claim, c) for claim in claims if claim.role == "primary" for c in claim.comparisons if c.test]
    if not comps:
        return []
    r = verdicts.rules()
    level = r.alpha / len(comps)
    lines = [f"Power of the primary comparisons ({100 * r.power.target:.0f}% power at alpha / {len(comps)} = "
             f"{level:.2g}, the strictest Holm step; Var(k seeds) = s^2 / k + V_sh, where V_sh, the shared test "
             "set's part, does not shrink with seeds; directional: a two-sided test of 0; equivalence: both "
             "one-sided tests of the TOST when the effect lies inside the margin, the test beyond the margin "
             "when it lies outside):", "",
             "| claim | A vs B | attack | metric | seeds | standard error | test-set floor sqrt(V_sh) | minimal "
             "detectable effect (equivalence: smallest margin shown at a true 0) | observed effect | side | seeds "
             "to decide the observed effect |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for claim, c in comps:
        i = claims.index(claim) + 1
        rho = c.metric == "rho"
        row = verdicts.power_row(c.test, level)
        if row.seeds is not None:
            need_text = str(row.seeds)
        elif row.floor_blocked:
            more = (f" ({row.images:,} test images would, with {row.images_seeds} seeds)"
                    if row.images is not None and row.images_seeds is not None else "")
            need_text = f"cannot be decided by seeds on this test set{more}"
        elif c.test.kind == "equivalence" and abs(abs(c.effect) - c.test.margin) == 0:
            need_text = "none (on the margin)"
        else:
            need_text = f"> {r.power.max_seeds}"
        floor = math.sqrt(c.test.v_shared) if math.isfinite(c.test.v_shared) else float("nan")
        lines.append(f"| {i} | {c.model_a} vs {c.model_b} | {c.attack} | {c.metric} | {c.n_seeds} | "
                     f"{_pow_val(c.se, rho)} | {_pow_val(floor, rho)} | {_pow_val(row.mde, rho)} | "
                     f"{_val(c.effect, rho)} | {row.side} | {need_text} |")
    return lines


def how_to_read() -> str:
    return ("How to read a comparison: accuracy effects are in percentage points, rho effects absolute. The "
            "verdict interval and verdict p are the rules' (the crossed seed x image model's standard error; for a "
            "primary comparison at its Holm step's level, with the Holm-adjusted p). The two-stage bootstrap "
            "interval (seeds with replacement, then images; its SD times sqrt(k / (k - 1)), t with k - 1 df: the "
            "previous rules' verdict interval) is a description. The image-level interval "
            "resamples the test images jointly across seeds with the seeds fixed (test-set sampling only; "
            f"{verdicts.rules().interval.resamples:,} draws). The seed-level interval "
            "is the 95% t-interval of the per-seed effects (training randomness on one fixed test set). The "
            "seed-level p-values test the per-seed effects against 0: a one-sample t-test, and an exact sign-flip "
            "test (which cannot go below 2 / 2^seeds). The image-clustered p is conditional on the trained "
            "models: it says whether these trained networks differ on this image population, not whether the "
            "architectures do (training randomness is held fixed); it is a permutation test that swaps A and B on an "
            "image in every seed at once, so an image counts once however many seeds it differs in (for accuracy "
            "a McNemar test clustered by image, exact; for rho a test of the mean paired difference, 10,000 "
            "permutations).")


def _link(figure: Path, base: Path | None) -> str:
    """A figure's path as the report links it: relative to the report's folder when there is one."""
    return os.path.relpath(figure, base) if base is not None else str(figure)


def _sensitivity_lines(c: Comparison, sens: Sensitivity, base: Path | None) -> list[str]:
    src = ("accuracy on the attacked images under each transform of the attack's grid, from the cells' "
           + ("`per_transform`" if sens.source == "per_transform" else "`grid` (written before `per_transform`)"))
    seeds = ", ".join(f"{s}: {_pts(e)}" for s, e in zip(sens.seeds, sens.grid_effect_per_seed))
    lines = [f"Sensitivity of {c.model_a} vs {c.model_b} on {c.attack} to the transform ({len(sens.table)} "
             f"transforms, seeds {', '.join(map(str, sens.seeds))}; {src}; exploratory: uncorrected, and no part of "
             "any verdict):", "",
             f"- averaged over the grid: A {100 * sens.grid_a:.2f}% vs B {100 * sens.grid_b:.2f}%, effect "
             f"{_pts(sens.grid_a - sens.grid_b)} pts, seed-level 95% CI {_ci(sens.grid_effect_ci, False)} pts "
             f"(per seed {seeds})"]
    names = {"-": "negative rotations", "0": "no rotation", "+": "positive rotations"}
    for key in ("-", "0", "+"):
        if key in sens.by_direction:
            a, b, d = sens.by_direction[key]
            lines.append(f"- {names[key]} only: A {100 * a:.2f}% vs B {100 * b:.2f}%, effect {_pts(d)} pts")
    lines.append("- per rotation, averaged over the shifts: " + ", ".join(
        f"{rot:+g}°: {_pts(d)}" for rot, d in sorted(sens.by_rotation.items())) + " pts")
    lines += ["", "The strongest transforms (lowest accuracy of A and B together), with the effect at each:", "",
              "| tx px | ty px | rotation ° | A | B | effect A - B (pts) | per seed |",
              "|---|---|---|---|---|---|---|"]
    seed_cols = [col for col in sens.table.columns if col.startswith("diff_seed")]
    for _, r in sens.top.iterrows():
        per = ", ".join(_pts(r[col]) for col in seed_cols)
        lines.append(f"| {r.tx:+.0f} | {r.ty:+.0f} | {r.rot:+.0f} | {100 * r.acc_a:.1f}% | {100 * r.acc_b:.1f}% | "
                     f"{_pts(r['diff'])} | {per} |")
    if sens.figure is not None:
        lines += ["", f"![A - B per transform: {c.model_a} vs {c.model_b} on {c.attack}]({_link(sens.figure, base)})"]
    return lines + [""]


def flagged_lines(claims: list[Claim]) -> list[str]:
    """The sanity-flagged cells the report's comparisons use, each once."""
    seen: dict[str, list[str]] = {}
    for claim in claims:
        for c in claim.comparisons:
            for flag in c.flagged:
                where = seen.setdefault(f"{c.attack}: {flag}", [])
                if f"{c.model_a} vs {c.model_b}" not in where:
                    where.append(f"{c.model_a} vs {c.model_b}")
    if not seen:
        return ["No cell used by this report was flagged by a sanity check."]
    lines = ["Cells used by this report that a sanity check flagged (their values are kept; read the comparisons "
             "that use them with care):", ""]
    lines += [f"- {flag} (used in {', '.join(where)})" for flag, where in seen.items()]
    return lines


HEADINGS = {
    "primary": "Primary claims (one family, Holm-corrected)",
    "secondary": "Secondary claims (uncorrected: read each on its own)",
    "exploratory": "Exploratory claims (uncorrected, not part of the tested family)",
}


def _claim_lines(i: int, claim: Claim, protocol: str, base: Path | None) -> list[str]:
    protocol = claim.protocol or protocol
    lines = [f"#### Claim {i}: {md_text(claim.title)}", "",
             f"**Verdict: {claim.verdict}** ({claim.kind} claim, {claim.role}; definition {declared_text(claim)})", ""]
    if claim.registration is not None:
        reg = claim.registration
        lines += [f"Definition SHA-256 `{reg.sha256}`: {reg.how}.", ""]
    if claim.verdict in (verdicts.MIXED, verdicts.answered(verdicts.MIXED)):
        parts = {v: [f"{c.model_a} vs {c.model_b} on {c.attack} ({c.metric})" for c in claim.comparisons
                     if c.ruling and c.ruling.verdict == v] for v in (verdicts.SUPPORTS, verdicts.CONTRADICTS)}
        lines += [f"Mixed: supported by {'; '.join(parts[verdicts.SUPPORTS])}; contradicted by "
                  f"{'; '.join(parts[verdicts.CONTRADICTS])}.", ""]
    if claim.comparisons:
        lines += [*TABLE_HEAD, *[comparison_row(c) for c in claim.comparisons], ""]
        for c in claim.comparisons:
            failed = ""
            if c.attack_failed:
                failed = (f" {sum(c.attack_failed.values())} clean-correct images the attack failed on for A or B "
                          f"are excluded from both means (per seed {', '.join(f'{s}: {n}' for s, n in c.attack_failed.items())})")
            if c.not_counted:
                lines.append(f"- {c.model_a} vs {c.model_b} on {c.attack} ({c.metric}): **not counted**: it rests on "
                             f"{_not_counted_text(c.not_counted)}, so the claim's verdict does not read it.{failed}")
            elif c.ruling:
                sign = (f"; {c.seeds_agreeing} of {c.n_seeds} seeds have A - B > 0"
                        if claim.kind == "directional" else "")
                lines.append(f"- {c.model_a} vs {c.model_b} on {c.attack} ({c.metric}): **{c.ruling.verdict}**: "
                             f"{c.ruling.reason}{sign}.{failed}")
            if c.flagged:
                lines.append(f"  Uses flagged cells: {'; '.join(c.flagged)}.")
        lines.append("")
        for c in claim.comparisons:
            if c.spectra_figure is not None:
                lines += [f"![mean perturbation spectra: {c.model_a} vs {c.model_b} on {c.attack}]"
                          f"({_link(c.spectra_figure, base)})", ""]
            if c.sensitivity is not None:
                lines += _sensitivity_lines(c, c.sensitivity, base)
            elif c.sensitivity_note:
                lines += [f"Sensitivity of {c.model_a} vs {c.model_b} on {c.attack} to the transform: "
                          f"{c.sensitivity_note}.", ""]
        lines += [protocol, ""] if protocol else []
    for m in claim.missing:
        lines.append(f"- missing from the store: {m}")
    return lines + [""]


def to_markdown(claims: list[Claim], protocol: str = "", base: Path | None = None,
                margins: verdicts.Margins | None = None, margin_lines: list[str] | None = None,
                exploratory_split: str = "") -> str:
    """The claims as Markdown; ``protocol`` (see ``claims.protocol_line``) is repeated under every table;
    figure links are relative to ``base`` (the report's folder); ``margins``: the claim set's (default: the
    rules'), with ``margin_lines`` saying what justifies them; ``exploratory_split``: a line saying the
    report reads a post-hoc subset (``--seeds``), so every verdict in it is exploratory."""
    n_primary = sum(len(c.comparisons) for c in claims if c.role == "primary" and not c.missing)
    lines = [*([exploratory_split, ""] if exploratory_split else []), summary_table(claims), "",
             *([seeds_line(claims), ""] if seeds_line(claims) else []),
             *([protocol, ""] if protocol else []), rules_text(margins, n_primary), "", *(margin_lines or []),
             how_to_read(), ""]
    lines += ["### Sanity-flagged cells", "", *flagged_lines(claims), ""]
    for role in verdicts.ROLES:
        chosen = [(i, claim) for i, claim in enumerate(claims, 1) if claim.role == role]
        if not chosen:
            continue
        head = HEADINGS[role] + (f": {n_primary} comparisons" if role == "primary" else "")
        lines += [f"### {head}", ""]
        if role == "primary":
            table = power_table(claims)
            lines += [*table, "", *([protocol, ""] if protocol else [])] if table else []
        for i, claim in chosen:
            lines += _claim_lines(i, claim, protocol, base)
    return "\n".join(lines)


def write_figures(claims: list[Claim], out_dir: Path, protocol: str = "", draw: bool = True) -> list[Path]:
    """Heatmaps of A - B per transform for the comparisons that have spatial sensitivity, and the mean
    perturbation spectra of A and B (every seed) for the spectra comparisons; with ``draw`` False only
    the paths the report links are set (a re-render check that leaves the published figures alone)."""
    from .figures import protocol_title
    from .spectra_plots import plot_spectra

    written = []
    for claim in claims:
        shown = (claim.protocol or protocol).strip("_").rstrip(".")  # the protocol line without its emphasis
        for c in claim.comparisons:
            name = f"spectra_{c.attack}_{c.model_a}_vs_{c.model_b}"
            if any(c.spectra.values()) and not draw:
                if any(s and s.get("n", 0) > 0 for per_seed in c.spectra.values() for s in per_seed):
                    c.spectra_figure = out_dir / f"{name}.png"
            elif any(c.spectra.values()):
                entries = [(f"{c.attack}: {c.model_a} vs {c.model_b}", m, s) for m, per_seed in c.spectra.items()
                           for s in per_seed]
                with protocol_title(shown):
                    fig = plot_spectra(entries, out_dir, name=name)
                png = [f for f in fig.files if f.suffix == ".png"]
                if png:
                    c.spectra_figure = png[0]
                    written += fig.files
            if c.sensitivity is not None:
                title = f"{c.model_a} - {c.model_b}, {c.attack}: accuracy per transform"
                if shown:
                    title += "\n" + shown
                path = out_dir / f"spatial_diff_{c.attack}_{c.model_a}_vs_{c.model_b}.png"
                c.sensitivity.figure = heatmap(c.sensitivity, title, path) if draw else path
                written += [c.sensitivity.figure] if draw else []
    return written
