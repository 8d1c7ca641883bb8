"""Leaderboard figures (seaborn/matplotlib, PNG and SVG under ``<out>/plots/``), all built from stored records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .eps_curves import minimum_norm_labels, robust_accuracy_curves
from .figures import Figure, grid, palette, protocol_title, save, shared_legend, style
from .fmt import PERCENT_METRICS, missing, row_label, split_column
from .loader import RunData, parse_json
from .spatial_sensitivity import transform_table


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats in both x and y (higher is better in both)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.ones(len(x), bool)
    for i in range(len(x)):
        better = (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        keep[i] = not better.any()
    return keep


def _attack_labels(runs: list[RunData], kind: str) -> list[str]:
    labels: dict[str, None] = {}
    for run in runs:
        for label, spec in run.specs.items():
            if spec["kind"] == kind:
                labels[label] = None
    return list(labels)


def clean_column(runs: list[RunData], table: pd.DataFrame) -> str | None:
    for label in _attack_labels(runs, "clean"):
        if f"{label}.accuracy" in table.columns:
            return f"{label}.accuracy"
    return next((c for c in table.columns if c.endswith(".clean_accuracy")), None)


def robustness_columns(runs: list[RunData], table: pd.DataFrame) -> list[str]:
    cols = [f"{label}.rho_mean" for label in minimum_norm_labels(runs, "l2")]
    cols += [f"{label}.linf_median" for label in minimum_norm_labels(runs, "linf")]
    cols += [f"{label}.robust_accuracy" for label in _attack_labels(runs, "spatial")]
    return [c for c in cols if c in table.columns and table[c].notna().any()]


def _scale(col: str) -> float:
    return 100.0 if split_column(col)[1] in PERCENT_METRICS else 1.0


def _err(row: pd.Series, col: str) -> tuple[float, float]:
    """(below, above) error bar: the confidence interval when stored, else the std across seeds."""
    value, lo, hi = row.get(col), row.get(f"{col}.lo"), row.get(f"{col}.hi")
    if not missing(lo) and not missing(hi):
        return max(value - lo, 0.0), max(hi - value, 0.0)
    std = row.get(f"{col}.std")
    return (std, std) if not missing(std) else (0.0, 0.0)


def _axis_label(col: str) -> str:
    return col + (" (%)" if _scale(col) == 100 else "")


def _annotate(ax, points: list[tuple[float, float, str]]) -> None:
    """One label per position: models on the same point share it, one name per line."""
    at: dict[tuple[float, float], list[str]] = {}
    for x, y, label in points:
        at.setdefault((round(x, 9), round(y, 9)), []).append(label)
    for (x, y), labels in at.items():
        ax.annotate("\n".join(labels), (x, y), xytext=(7, 4), textcoords="offset points", fontsize=7)


def _limits(ax, x_col: str, y_col: str) -> None:
    ax.margins(0.15)
    for col, get, put in ((x_col, ax.get_xlim, ax.set_xlim), (y_col, ax.get_ylim, ax.set_ylim)):
        if _scale(col) != 100:
            continue
        lo, hi = get()
        if hi - lo < 4:  # all points (nearly) equal: show a readable span, not hundredths of a percent
            lo, hi = (lo + hi) / 2 - 5, (lo + hi) / 2 + 5
        put(max(lo, -2.0), min(hi, 102.0))  # never suggest accuracies below 0% or above 100%


def accuracy_vs_robustness(runs: list[RunData], table: pd.DataFrame, out: Path) -> Figure:
    fig_info = Figure("accuracy_vs_robustness", "Clean accuracy vs robustness",
                      "Each point is a leaderboard row; error bars are the row's 95% interval when stored (rows "
                      "with several seeds: t-interval over seeds; single-seed rows: bootstrap over test images), "
                      "else the std across seeds. Ringed points joined by the dashed line form the Pareto front: "
                      "no other model is both more accurate and more robust.")
    x_col, y_cols = clean_column(runs, table), robustness_columns(runs, table)
    if x_col is None or not y_cols:
        fig_info.notes.append("needs a clean accuracy column and a minimum-norm rho_mean (L-inf: linf_median) or "
                              "spatial accuracy column")
        return fig_info
    colours = palette(table)
    datasets = list(dict.fromkeys(table.dataset))
    fig, axes = grid(len(datasets), len(y_cols), 4.6, 3.6)
    for i, dataset in enumerate(datasets):
        rows = table[table.dataset == dataset]
        for j, y_col in enumerate(y_cols):
            ax = axes[i][j]
            sub = rows[rows[x_col].notna() & rows[y_col].notna()]
            xs, ys = sub[x_col].to_numpy(float) * _scale(x_col), sub[y_col].to_numpy(float) * _scale(y_col)
            for (_, r), x, y in zip(sub.iterrows(), xs, ys):
                label = row_label(r, table)
                xerr = np.array(_err(r, x_col)).reshape(2, 1) * _scale(x_col)
                yerr = np.array(_err(r, y_col)).reshape(2, 1) * _scale(y_col)
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colours[label], ms=7, capsize=3,
                            label=label, zorder=3)
            if len(sub) <= 8:
                _annotate(ax, [(x, y, row_label(r, table)) for (_, r), x, y in zip(sub.iterrows(), xs, ys)])
            front = pareto_front(xs, ys)
            if front.any():
                order = np.argsort(xs[front])
                ax.plot(xs[front][order], ys[front][order], "--", color="0.3", lw=1, zorder=2, label="Pareto front")
                ax.scatter(xs[front], ys[front], s=170, facecolors="none", edgecolors="0.1", lw=1.2, zorder=4)
            ax.set_xlabel(_axis_label(x_col))
            ax.set_ylabel(_axis_label(y_col))
            ax.set_title(f"{dataset}: {split_column(y_col)[0]}" if len(datasets) > 1 else split_column(y_col)[0])
            _limits(ax, x_col, y_col)
            ax.grid(alpha=0.3)
    n_entries = len(set(h for ax in axes.flat for h in ax.get_legend_handles_labels()[1]))
    shared_legend(fig, axes, loc="outside lower center", ncol=min(n_entries, 4))
    fig_info.files = save(fig, out, fig_info.name)
    return fig_info


def spatial_grids(runs: list[RunData], table: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(attack label, row label, mean accuracy per (translation, rotation)) for cells that stored their grid
    (info ``per_transform``, or ``grid`` in older stores)."""
    by_run = {r.label: r for r in runs}
    out = []
    for label in _attack_labels(runs, "spatial"):
        for _, row in table.iterrows():
            run = by_run[row.run]
            cells = run.cells[(run.cells.model == row.model) & (run.cells.dataset == row.dataset)
                              & (run.cells.attack == label)]
            tables = [t[0] for t in map(transform_table, cells["info"]) if t is not None]
            if not tables:
                continue
            frame = pd.concat(tables, ignore_index=True).rename(
                columns={"ty": "shift_rows", "tx": "shift_cols", "rot": "rotation_deg"})
            frame["translation"] = [f"({int(r):+d}, {int(c):+d})" for r, c in zip(frame.shift_rows, frame.shift_cols)]
            frame = frame.groupby(["shift_rows", "shift_cols", "translation", "rotation_deg"], as_index=False)[
                "accuracy"].mean()  # mean over seeds
            pivot = frame.pivot_table(index="translation", columns="rotation_deg", values="accuracy", sort=False)
            order = frame.drop_duplicates("translation").sort_values(["shift_rows", "shift_cols"]).translation
            title = row_label(row, table) + (f" ({row.dataset})" if table.dataset.nunique() > 1 else "")
            out.append((label, title, pivot.loc[list(order), sorted(pivot.columns)]))
    return out


def spatial_heatmaps(runs: list[RunData], table: pd.DataFrame, out: Path) -> Figure:
    fig_info = Figure("spatial_heatmap", "Spatial robustness: accuracy over translation × rotation",
                      "Accuracy (0-1) on the attacked images under each single transform of the attack's grid: "
                      "rows are (vertical, horizontal) shifts in pixels, columns rotations in degrees. The attack's "
                      "worst case is the minimum of each map.")
    maps = spatial_grids(runs, table)
    if not maps:
        fig_info.notes.append(
            "no per-transform accuracies stored: the ART engine reports only the one global transform it chose "
            "(column <attack>.transform in the table); a spatial engine that stores its grid gives this heatmap")
        return fig_info
    n_cols = min(3, len(maps))
    n_rows = -(-len(maps) // n_cols)
    n_trans, n_rot = maps[0][2].shape
    fig, axes = grid(n_rows, n_cols, max(2.8, 0.5 * n_rot + 1.6), max(2.6, 0.28 * n_trans + 1.2))
    image = None
    for ax, (label, title, pivot) in zip(axes.flat, maps):
        values = pivot.to_numpy(float)
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(values.shape[1]), [f"{c:g}" for c in pivot.columns])
        ax.set_yticks(range(values.shape[0]), list(pivot.index))
        if values.size <= 120:
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if v > 0.6 else "white")
        ax.set_title(f"{title}: {label}")
        ax.set_xlabel("rotation (°)")
        ax.set_ylabel("shift (rows, cols) px")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="accuracy", shrink=0.8)
    for ax in list(axes.flat)[len(maps):]:
        ax.axis("off")
    fig_info.files = save(fig, out, fig_info.name)
    return fig_info


def training_curves(runs: list[RunData], table: pd.DataFrame, out: Path) -> Figure:
    fig_info = Figure("training_curves", "Training curves",
                      "Training loss, and train (dashed) and test (solid) accuracy after each epoch; one line per "
                      "training seed.")
    by_run = {r.label: r for r in runs}
    colours = palette(table)
    lines = []
    for _, row in table.iterrows():
        run = by_run[row.run]
        models = run.models[(run.models.model == row.model) & (run.models.dataset == row.dataset)]
        for m in models.itertuples():
            history = parse_json(m.history, [])
            if history:
                lines.append((row, row_label(row, table), pd.DataFrame(history)))
            else:
                fig_info.notes.append(f"{row_label(row, table)} seed {m.seed}: no training history stored")
    if not lines:
        return fig_info
    datasets = list(dict.fromkeys(r.dataset for r, _, _ in lines))
    fig, axes = grid(len(datasets), 2, 4.6, 3.3)
    for i, dataset in enumerate(datasets):
        loss_ax, acc_ax = axes[i]
        seen: set[str] = set()
        for row, label, h in (line for line in lines if line[0].dataset == dataset):
            shown = label if label not in seen else None
            seen.add(label)
            loss_ax.plot(h.epoch, h.loss, "o-", color=colours[label], ms=3, label=shown)
            if "test_accuracy" in h:
                tested = h.dropna(subset=["test_accuracy"])  # eval_every > 1 tests only some epochs
                acc_ax.plot(tested.epoch, 100 * tested.test_accuracy, "o-", color=colours[label], ms=3, label=shown)
            if "train_accuracy" in h:
                acc_ax.plot(h.epoch, 100 * h.train_accuracy, "--", color=colours[label], alpha=0.7)
        prefix = f"{dataset}: " if len(datasets) > 1 else ""
        loss_ax.set(xlabel="epoch", ylabel="training loss", title=prefix + "loss")
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title=prefix + "accuracy (solid test, dashed train)")
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    shared_legend(fig, axes)
    fig_info.files = save(fig, out, fig_info.name)
    return fig_info


def perturbation_spectra(runs: list[RunData], table: pd.DataFrame, out: Path) -> Figure:
    """The mean perturbation spectrum of every minimum-norm cell that stored one, per model (seeds share a
    colour), one panel per attack."""
    from .spectra_plots import plot_spectra

    found = []
    for run in runs:
        for cell in run.cells.itertuples():
            spectrum = cell.info.get("spectrum") if isinstance(cell.info, dict) else None
            if spectrum:
                found.append((cell.model, cell.attack, cell.dataset, spectrum))
    datasets = {d for _, _, d, _ in found}
    order = {m: i for i, m in enumerate(dict.fromkeys(table.model))}
    found.sort(key=lambda f: (order.get(f[0], len(order)), f[1]))
    entries = [(a, " · ".join([m] + ([d] if len(datasets) > 1 else [])), s) for m, a, d, s in found]
    fig = plot_spectra(entries, out)
    if not found:
        fig.notes.append("no minimum-norm cell of these runs stored a perturbation spectrum")
    return fig


def make_plots(runs: list[RunData], table: pd.DataFrame, out: Path) -> list[Figure]:
    """Every figure of the leaderboard; a figure that cannot be made says why in its notes."""
    from .kernels import first_layer_kernels, windows_figure

    style()
    protocol = "; ".join(r.protocol() for r in runs if r.protocol())
    with protocol_title(protocol):  # over every figure made from the runs' results (not the window shapes)
        figures = [accuracy_vs_robustness(runs, table, out), robust_accuracy_curves(runs, table, out),
                   spatial_heatmaps(runs, table, out), training_curves(runs, table, out),
                   first_layer_kernels(runs, table, out), perturbation_spectra(runs, table, out)]
    if protocol:
        for fig in figures:
            fig.caption += f" {protocol[0].upper()}{protocol[1:]}."
    figures.append(windows_figure(out))
    for fig in figures:
        if not fig.files:  # a figure of an earlier render must not outlive its data
            for suffix in (".png", ".svg"):
                (out / f"{fig.name}{suffix}").unlink(missing_ok=True)
    return figures
