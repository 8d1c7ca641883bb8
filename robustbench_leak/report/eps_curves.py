"""Robust accuracy vs epsilon: the curves of every minimum-norm cell, with AutoAttack's points on the same axes.

RobustBench's definition, from a minimum-norm attack's per-image norms (``metrics.robustness_curve``): at
budget epsilon an image is robust when it is clean-correct and the attack needed more than epsilon to
change its prediction, or never did. A misclassified clean image is robust at no epsilon; an image the
attack never fooled is robust at every epsilon. The curve is an upper bound on the true robust accuracy
(a perturbation found is not always minimal). L2 attacks read the samples' ``l2``, L-inf attacks
(``Attack.norm == "linf"``) their ``linf``; each norm has its own row of panels.

AutoAttack cells are found by their kind (``autoattack``) and their params ``norm`` (``linf``/``l2``) and
``eps`` (or the cell's info, where the params leave them to the attack): each is a point (eps, its stored
``robust_accuracy``) in every panel of its norm and dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..attacks import find_attack
from ..metrics import robustness_curve
from .figures import Figure, grid, palette, save, shared_legend
from .fmt import row_label
from .loader import RunData

NORMS = ("l2", "linf")  # row order of the panels
NORM_LABELS = {"l2": "L2", "linf": "L-inf"}
POINT_KINDS = ("autoattack",)
CURVE_COLUMNS = ["dataset", "model", "seed", "budget", "accuracy"]  # fixed-epsilon attacks drawn as points: kind with params norm and eps


def attack_norm(spec: dict[str, Any]) -> str | None:
    """The norm a minimum-norm attack spec minimises (``l2``/``linf``); None for any other attack."""
    cls = find_attack(spec.get("kind", ""), spec.get("engine", ""))
    return cls.norm if cls is not None and cls.minimum_norm else None


def minimum_norm_labels(runs: list[RunData], norm: str | None = None) -> list[str]:
    """Attacks with per-image minimal perturbations (DeepFool, DDN, FMN, minnorm, ...), of ``norm`` if given."""
    labels: dict[str, None] = {}
    for run in runs:
        for label, spec in run.specs.items():
            found = attack_norm(spec)
            if found is not None and norm in (None, found):
                labels[label] = None
    return list(labels)


def point_norm(value: Any) -> str | None:
    """A fixed-epsilon attack's ``norm`` param as ``l2``/``linf`` (None: neither)."""
    text = str(value).strip().lower().replace("-", "")
    return {"linf": "linf", "inf": "linf", "l2": "l2", "2": "l2", "2.0": "l2"}.get(text)


def curve_frame(runs: list[RunData], table: pd.DataFrame, attack: str, n_budgets: int = 121,
                column: str = "l2", top: float | None = None) -> pd.DataFrame:
    """Robust accuracy vs budget of every row under the minimum-norm attack ``attack``, per seed (long frame),
    from the samples' ``column`` (``l2`` or ``linf``).

    Budgets run from 0 to ``top``, by default a little past the 98th percentile of the successful
    perturbations of all rows of a dataset, so curves of one dataset share their x axis.
    """
    by_run = {r.label: r for r in runs}
    per_row = []
    for _, row in table.iterrows():
        run = by_run[row.run]
        cells = run.cells[(run.cells.model == row.model) & (run.cells.dataset == row.dataset)
                          & (run.cells.attack == attack)]
        for key, seed in zip(cells.cell_key, cells.seed):
            s = run.samples[run.samples.cell_key == key]
            if len(s) and column in s and s[column].notna().all():
                per_row.append((row.dataset, row_label(row, table), int(seed), s))
    frames = []
    for dataset in dict.fromkeys(d for d, _, _, _ in per_row):
        rows = [r for r in per_row if r[0] == dataset]
        flipped = np.concatenate([s[column][s.adv_pred != s.clean_pred].to_numpy(float) for _, _, _, s in rows])
        flipped = flipped[np.isfinite(flipped)]
        end = top if top is not None else float(np.quantile(flipped, 0.98)) * 1.1 if len(flipped) else 1.0
        budgets = np.linspace(0.0, end, n_budgets)
        for _, label, seed, s in rows:
            acc = robustness_curve(s.label.to_numpy(), s.clean_pred.to_numpy(), s.adv_pred.to_numpy(),
                                   s[column].to_numpy(float), budgets)
            frames.append(pd.DataFrame({"dataset": dataset, "model": label, "seed": seed, "budget": budgets,
                                        "accuracy": acc}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def point_frame(runs: list[RunData], table: pd.DataFrame) -> pd.DataFrame:
    """The stored robust accuracy of every fixed-epsilon cell (``POINT_KINDS``) of a leaderboard row: columns
    dataset, model (row label), seed, attack, norm, eps, accuracy. ``norm`` and ``eps`` come from the cell's
    params, or from its info where the params leave them to the attack (a per-dataset default)."""
    by_run = {r.label: r for r in runs}
    out = []
    for _, row in table.iterrows():
        run = by_run[row.run]
        cells = run.cells[(run.cells.model == row.model) & (run.cells.dataset == row.dataset)]
        for cell in cells.itertuples():
            spec = cell.spec.get("attack") or {}
            if spec.get("kind") not in POINT_KINDS:
                continue
            params, info = spec.get("params") or {}, cell.info or {}
            norm = point_norm(params.get("norm", info.get("norm")))
            eps = params.get("eps") if params.get("eps") is not None else info.get("eps")
            res = run.results[(run.results.cell_key == cell.cell_key) & (run.results.metric == "robust_accuracy")]
            if norm is None or isinstance(eps, bool) or not isinstance(eps, (int, float)) or res.empty:
                continue
            value = float(res.value.iloc[0])
            if np.isfinite(value):
                out.append({"dataset": row.dataset, "model": row_label(row, table), "seed": int(cell.seed),
                            "attack": cell.attack, "norm": norm, "eps": float(eps), "accuracy": value})
    return pd.DataFrame(out, columns=["dataset", "model", "seed", "attack", "norm", "eps", "accuracy"])


def curve_panels(runs: list[RunData], table: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame, pd.DataFrame]]:
    """(norm, attack, dataset, curves, AutoAttack points) per panel: L2 panels first, then L-inf. Points of a
    norm and dataset that no minimum-norm cell shares get a panel of their own (attack ``autoattack``)."""
    points = point_frame(runs, table)
    panels: list[tuple[str, str, str, pd.DataFrame, pd.DataFrame]] = []
    for norm in NORMS:
        for attack in minimum_norm_labels(runs, norm):
            for dataset, curves in curve_frame(runs, table, attack, column=norm).groupby("dataset", sort=False):
                here = points[(points.norm == norm) & (points.dataset == dataset)]
                if len(here) and here.eps.max() * 1.05 > curves.budget.max():  # every point inside the axes
                    curves = curve_frame(runs, table, attack, column=norm, top=float(here.eps.max()) * 1.05)
                    curves = curves[curves.dataset == dataset]
                panels.append((norm, attack, str(dataset), curves, here))
        drawn = {p[2] for p in panels if p[0] == norm}
        for dataset, here in points[points.norm == norm].groupby("dataset", sort=False):
            if str(dataset) not in drawn:
                panels.append((norm, "autoattack", str(dataset), pd.DataFrame(columns=CURVE_COLUMNS), here))
    return panels


def robust_accuracy_curves(runs: list[RunData], table: pd.DataFrame, out: Path) -> Figure:
    fig_info = Figure("robustness_curves", "Robust accuracy vs ε",
                      "Robust accuracy over all attacked images (RobustBench's: a misclassified clean image is robust "
                      "at no ε, an image the attack never fooled at every ε) when the attacker may change each image "
                      "by at most ε in the panel's norm (pixels in [0, 1]), from a minimum-norm attack's per-image "
                      "perturbations: an upper bound on the true robust accuracy, since a perturbation found is not "
                      "always minimal (the ensembles minnorm and minnorm-linf are the tightest). One row of panels per "
                      "norm. Shaded: min-max across seeds. Diamonds: AutoAttack's robust accuracy at its ε (mean over "
                      "seeds; bars min-max), which a curve of the same model should not undercut by much if both "
                      "attacks are strong.")
    panels = curve_panels(runs, table)
    if not panels:
        fig_info.notes.append("no minimum-norm attack cell (DeepFool, DDN, FMN, SuperDeepFool, minnorm, FMN-Linf, "
                              "minnorm-linf) with per-image norms in these runs")
        return fig_info
    rows = [n for n in NORMS if any(p[0] == n for p in panels)]
    n_cols = max(sum(p[0] == n for p in panels) for n in rows)
    colours = palette(table)
    fig, axes = grid(len(rows), n_cols, 5.2, 3.6)
    used = []
    for i, norm in enumerate(rows):
        mine = [p for p in panels if p[0] == norm]
        for ax, (_, attack, dataset, curves, points) in zip(axes[i], mine):
            _draw_panel(ax, curves, points, colours)
            ax.set_xlabel(f"{NORM_LABELS[norm]} budget ε")
            ax.set_title(f"{attack} on {dataset}")
            used.append(ax)
        for ax in axes[i][len(mine):]:
            ax.axis("off")
    shared_legend(fig, used)
    fig_info.files = save(fig, out, fig_info.name)
    return fig_info


def _draw_panel(ax: Any, curves: pd.DataFrame, points: pd.DataFrame, colours: dict[str, Any]) -> None:
    for label, sub in curves.groupby("model", sort=False):
        stats = sub.groupby("budget")["accuracy"].agg(["mean", "min", "max"]) * 100
        ax.plot(stats.index, stats["mean"], color=colours[label], lw=2, label=label)
        if sub.seed.nunique() > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[label], alpha=0.2, lw=0)
    for (label, eps), sub in points.groupby(["model", "eps"], sort=False):
        acc = sub.accuracy.to_numpy(float) * 100
        mean = float(acc.mean())
        ax.errorbar(eps, mean, yerr=[[mean - acc.min()], [acc.max() - mean]], fmt="D", ms=7, capsize=3,
                    color=colours.get(label, "0.2"), markeredgecolor="black", zorder=4)
    if len(points):  # one legend entry for every model's diamonds
        ax.plot([], [], "D", color="0.6", markeredgecolor="black", label="AutoAttack (ε, robust accuracy)")
    if curves.empty:  # points only: start the axis at 0 as the curves do
        ax.set_xlim(0, float(points.eps.max()) * 1.1)
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
