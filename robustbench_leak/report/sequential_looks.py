"""The looks of a sequential run (``rbleak run --until-decided``) as the claims report prints them: per look
the seeds, each primary comparison's statistic against its boundary and its local level, its state, and why
the run stopped."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..store import StoreReader
from .fmt import md_text


def stored_looks(run_dir: str | Path) -> list[dict]:
    """The looks recorded by the store's latest sequential run ([] when it has none)."""
    return looks_and_run(run_dir)[0]


def looks_and_run(run_dir: str | Path) -> tuple[list[dict], str | None]:
    """The looks recorded by the store's latest sequential run and that run's id (([], None) when none)."""
    with StoreReader(run_dir) as store:
        runs = store.runs()
    if "looks" not in runs:
        return [], None
    recorded = [(x, rid) for x, rid in zip(runs.looks, runs.run_id) if isinstance(x, str) and x]
    return (json.loads(recorded[-1][0]), recorded[-1][1]) if recorded else ([], None)


def _z(z: list[float]) -> str:
    return "/".join("–" if not math.isfinite(x) else f"{x:+.2f}" for x in z)


def looks_lines(looks: list[dict]) -> list[str]:
    if not looks:
        return []
    first = looks[0]
    lines = [f"Sequential seeds (`rbleak run --until-decided {first['claim_set']}`: batches of {first['batch']}, cap "
             f"{first['cap']}; O'Brien-Fleming alpha spending on the information fraction I(k) / I(cap), I(k) = "
             f"1 / (s^2 / k + V_sh); Holm's graph across the {len(first['comparisons'])} primary comparisons, "
             f"family-wise alpha {first['alpha']:g}; non-binding futility below {first['futility']:.0%} conditional "
             "power). Each cell: statistic for the supporting / contradicting side, the boundary (per side), the "
             "comparison's local level, its state.", "",
             "| look | seeds | " + " | ".join(first["comparisons"]) + " |",
             "|---|---|" + "---|" * len(first["comparisons"])]
    for i, look in enumerate(looks, 1):
        cells = [f"{_z(z)} vs {b:.2f} (t = {t:.2f}, level {lv:.3g}): {st}" if math.isfinite(b) else
                 f"{_z(z)} (level {lv:.3g}): {st}"
                 for z, b, t, lv, st in zip(look["z"], look["bounds"], look["fractions"], look["levels"],
                                            look["decided"])]
        lines.append(f"| {i} | {look['seeds']} | " + " | ".join(cells) + " |")
    last = looks[-1]
    why = md_text(last.get("reason") or "not stopped: the run was interrupted before its next look")
    lines += ["", f"Stopped after look {len(looks)} at {last['seeds']} seeds: {why}.", ""]
    return lines
