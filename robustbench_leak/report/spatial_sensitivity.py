"""How much a spatial comparison depends on the transform the attack chose.

Reads, from each spatial eval cell's info, the accuracy under every transform of the attack's grid:
``per_transform`` = {"tx": [...], "ty": [...], "rot": [...], "accuracy": [...]} (pixels, pixels, degrees;
accuracy on the attacked images), or, in stores written before that contract, ``grid`` = [{"shift_rows",
"shift_cols", "rotation_deg", "accuracy"}, ...] (the global attack's search, on the images it was fitted
on). Paired between models A and B per seed, then averaged over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..stats import t_interval

TOP_K = 5
KEYS = ["tx", "ty", "rot"]


def transform_table(info: dict[str, Any]) -> tuple[pd.DataFrame, str] | None:
    """(tx, ty, rot, accuracy) per grid point of one cell, and where it came from; None when not stored."""
    per = info.get("per_transform")
    if isinstance(per, dict) and all(k in per for k in (*KEYS, "accuracy")):
        frame = pd.DataFrame({k: np.asarray(per[k], dtype=float) for k in (*KEYS, "accuracy")})
        return frame, "per_transform"
    grid = info.get("grid")
    if isinstance(grid, list) and grid and all(isinstance(p, dict) for p in grid):
        frame = pd.DataFrame(grid)
        if {"shift_rows", "shift_cols", "rotation_deg", "accuracy"} <= set(frame.columns):
            frame = frame.rename(columns={"shift_cols": "tx", "shift_rows": "ty", "rotation_deg": "rot"})
            return frame[[*KEYS, "accuracy"]].astype(float), "grid"
    return None


@dataclass
class Sensitivity:
    source: str  # per_transform | grid
    seeds: list[int]
    table: pd.DataFrame  # one row per transform: tx, ty, rot, acc_a, acc_b, diff (means over seeds), diff_seed<k>
    grid_a: float  # accuracy averaged over the grid and the seeds
    grid_b: float
    grid_effect_per_seed: list[float]
    grid_effect_ci: tuple[float, float]  # t-interval over seeds
    by_direction: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # '+'/'-'/'0' -> (a, b, diff)
    by_rotation: dict[float, float] = field(default_factory=dict)  # rotation -> diff averaged over the shifts
    top: pd.DataFrame | None = None  # the TOP_K strongest transforms (lowest accuracy of A and B together)
    figure: Path | None = None


def sensitivity(infos_a: dict[int, dict[str, Any]], infos_b: dict[int, dict[str, Any]]) -> Sensitivity | None:
    """Paired per-transform differences A - B over the seeds where both cells stored their grid."""
    per_seed, sources = [], set()
    for seed in sorted(set(infos_a) & set(infos_b)):
        ta, tb = transform_table(infos_a[seed]), transform_table(infos_b[seed])
        if ta is None or tb is None:
            continue
        sources |= {ta[1], tb[1]}
        merged = ta[0].merge(tb[0], on=KEYS, suffixes=("_a", "_b"))
        if merged.empty:
            continue
        merged["seed"] = seed
        per_seed.append(merged)
    if not per_seed:
        return None
    frame = pd.concat(per_seed, ignore_index=True)
    frame["diff"] = frame.accuracy_a - frame.accuracy_b
    seeds = sorted(frame.seed.unique().tolist())
    # keep the transforms every used seed has, so each mean is over the same seeds
    counts = frame.groupby(KEYS).seed.transform("nunique")
    frame = frame[counts == len(seeds)]
    table = frame.groupby(KEYS, as_index=False).agg(acc_a=("accuracy_a", "mean"), acc_b=("accuracy_b", "mean"),
                                                    diff=("diff", "mean"))
    wide = frame.pivot_table(index=KEYS, columns="seed", values="diff").reset_index()
    wide.columns = [*KEYS, *[f"diff_seed{s}" for s in wide.columns[3:]]]
    table = table.merge(wide, on=KEYS)
    grid_per_seed = frame.groupby("seed")["diff"].mean().reindex(seeds).tolist()
    out = Sensitivity(source="per_transform" if sources == {"per_transform"} else "grid", seeds=seeds, table=table,
                      grid_a=float(table.acc_a.mean()), grid_b=float(table.acc_b.mean()),
                      grid_effect_per_seed=[float(v) for v in grid_per_seed],
                      grid_effect_ci=t_interval(np.array(grid_per_seed)))
    for name, sel in (("-", table.rot < 0), ("0", table.rot == 0), ("+", table.rot > 0)):
        if sel.any():
            sub = table[sel]
            out.by_direction[name] = (float(sub.acc_a.mean()), float(sub.acc_b.mean()), float(sub["diff"].mean()))
    out.by_rotation = {float(r): float(d) for r, d in table.groupby("rot")["diff"].mean().items()}
    strength = (table.acc_a + table.acc_b) / 2
    out.top = table.assign(strength=strength).nsmallest(TOP_K, "strength")
    return out


def heatmap(sens: Sensitivity, title: str, path: Path) -> Path:
    """A - B per transform: rotation (degrees) across, the (tx, ty) shift flattened down; PNG at ``path``."""
    from .figures import plt, style

    style()
    t = sens.table.sort_values(["ty", "tx", "rot"])
    t = t.assign(shift=[f"({int(x):+d}, {int(y):+d})" for x, y in zip(t.tx, t.ty)])
    pivot = t.pivot_table(index="shift", columns="rot", values="diff", sort=False) * 100
    values = pivot.to_numpy(float)
    bound = max(1.0, float(np.nanmax(np.abs(values)))) if values.size else 1.0
    fig, ax = plt.subplots(figsize=(0.55 * values.shape[1] + 2.4, 0.3 * values.shape[0] + 1.6))
    image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(values.shape[1]), [f"{c:+g}" for c in pivot.columns])
    ax.set_yticks(range(values.shape[0]), list(pivot.index))
    ax.set_xlabel("rotation (°)")
    ax.set_ylabel("shift (tx, ty) px")
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label="accuracy A - B (points, mean over seeds)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
