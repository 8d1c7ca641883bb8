"""The attack-strength table: per model of a run and per member of its minimum-norm ensemble, the
member's success, median rho, AttackBench optimality, passes per image and share of the minima, with
the ensemble's gradient-masking checks. Read from the stored metrics of the minnorm cells
(``attacks/optimality.py``, ``attacks/masking.py``); values are means over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .loader import RunData, load_runs

COLUMNS = ("success", "rho_median", "optimality", "passes", "minimum_share")
HEAD = ("| model | attack | success | median rho | optimality | passes / image | minimum found | seeds |",
        "|---|---|---|---|---|---|---|---|")


def strength_frame(runs: list[RunData]) -> pd.DataFrame:
    """One row per (run, dataset, model, ensemble label, member): the member's strength, mean over seeds."""
    rows = []
    for run in runs:
        res = run.results
        for label, spec in run.specs.items():
            sub = res[res.attack == label]
            members = sorted({m[len("optimality_"):] for m in sub.metric if m.startswith("optimality_")})
            for (dataset, model), group in sub.groupby(["dataset", "model"], sort=False):
                for member in members:
                    row = {"run": run.label, "dataset": dataset, "model": model, "attack": label, "member": member,
                           "seeds": int(group.seed.nunique())}
                    for col in COLUMNS:
                        values = group[group.metric == f"{col}_{member}"]["value"].astype(float)
                        row[col] = float(values.mean()) if len(values) else math.nan
                    rows.append(row)
    return pd.DataFrame(rows, columns=["run", "dataset", "model", "attack", "member", *COLUMNS, "seeds"])


CHECK_NAMES = {"unbounded_success": "unbounded success", "more_steps": "more steps", "black_box": "black-box search",
               "pgd_to_zero": "PGD to zero", "square_after_gradient": "Square after the gradient members"}


def masking_lines(runs: list[RunData]) -> list[str]:
    """One line per cell (minnorm, autoattack, ...) whose gradient-masking checks did not all pass, or one saying
    all did; each names the cells and the checks that ran."""
    failed, seconds, attack_seconds = [], 0.0, 0.0
    cells: dict[str, int] = {}  # attack label -> cells checked
    names: dict[str, None] = {}  # the checks that ran, in order
    for run in runs:
        for cell in run.cells.itertuples():
            record = (cell.info or {}).get("masking")
            if not record:
                continue
            cells[cell.attack] = cells.get(cell.attack, 0) + 1
            names.update(dict.fromkeys(record["checks"]))
            seconds += float(record.get("seconds") or 0.0)
            attack_seconds += float(cell.info.get("attack_seconds") or 0.0)
            bad = [name for name, c in record["checks"].items() if not c["passed"]]
            if bad:
                failed.append(f"- {cell.model} / {cell.attack} / seed {cell.seed} ({run.label}): failed "
                              + ", ".join(bad))
    checked = sum(cells.values())
    if not checked:
        return ["No cell of these runs ran the gradient-masking checks (stored before they existed, or "
                "`masking: false`)."]
    which = (f"{checked} {next(iter(cells))} cells" if len(cells) == 1 else
             f"{checked} cells ({', '.join(f'{n} {a}' for a, n in cells.items())})")
    what = ", ".join(CHECK_NAMES.get(n, n.replace("_", " ")) for n in names)
    cost = (f" The checks took {seconds:.1f} s, {100 * seconds / attack_seconds:.0f}% of the {attack_seconds:.1f} s "
            "the attacks took in those cells." if attack_seconds > 0 and seconds > 0 else "")
    if not failed:
        return [f"Gradient-masking checks: all clear in the {which} that ran them ({what}; "
                f"docs/attack-strength.md).{cost}"]
    return [f"Gradient-masking checks failed in {len(failed)} of the {which} that ran them ({what}; see their "
            f"flags).{cost}", *failed]


def _f(x: float, fmt: str) -> str:
    return "–" if not math.isfinite(x) else format(x, fmt)


def _pct(x: float, fmt: str) -> str:
    return "–" if not math.isfinite(x) else f"{100 * x:{fmt}}%"


def strength_markdown(frame: pd.DataFrame) -> str:
    """The table (one block per dataset and ensemble label), or a sentence when no cell stored strength."""
    if frame.empty:
        return ("No minimum-norm ensemble cell of these runs stored per-member strength (cells stored before "
                "attack strength was measured: rerun their minnorm cells).")
    out = []
    for (run, dataset, attack), block in frame.groupby(["run", "dataset", "attack"], sort=False):
        out += [f"**{attack}** on {dataset} ({run}):", "", *HEAD]
        for r in block.itertuples():
            out.append(f"| {r.model} | {r.member} | {_pct(r.success, '.1f')} | {_f(r.rho_median, '.4f')} | "
                       f"{_f(r.optimality, '.3f')} | {_f(r.passes, '.0f')} | {_pct(r.minimum_share, '.0f')} | "
                       f"{r.seeds} |")
        out.append("")
    return "\n".join(out).rstrip()


LEGEND = ("success: share of the clean-correct images the attack alone fooled; median rho: over the clean-correct "
          "images, one it did not fool counting as infinite (in an L-inf ensemble ||delta||_inf / ||x||_inf); "
          "optimality: AttackBench's, against the per-image best of the ensemble's members (1: it found every "
          "minimum); passes / image: forward plus backward passes through the model; minimum found: share of the "
          "fooled images on which it found the smallest perturbation.")


def strength_report(paths: list[str | Path]) -> str:
    runs = load_runs(list(paths))
    frame = strength_frame(runs)
    ensembles = any(str(spec.get("kind", "")).startswith("minnorm") for run in runs for spec in run.specs.values())
    text = [strength_markdown(frame) if ensembles or not frame.empty else
            "No minimum-norm ensemble (minnorm, minnorm-linf) cells in these runs: no per-member strength to show."]
    if not frame.empty:
        text += ["", LEGEND]
    return "\n".join([*text, "", *masking_lines(runs)])
