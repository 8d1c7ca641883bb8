"""The whole ``rbleak claims`` report as text: provenance, coverage, the claims, attack strength, and ART's
defect table.
The CLI and the test that re-renders every published REPORT.md both call :func:`render`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .attack_strength import strength_report
from .claim_set import ClaimSet
from .claims import (art_defect_table, claim_folders, coverage_lines, evaluate_claims, margin_lines, protocol_line,
                     provenance_lines)
from .claims_md import to_markdown, write_figures
from .sequential_looks import looks_lines, stored_looks


def render(run_dir: str | Path, claim_set: ClaimSet, base: Path | None = None, art: str | Path | None = None,
           preamble: str = "", seeds: Sequence[int] | None = None, draw: bool = True,
           others: Sequence[str | Path] = ()) -> str:
    """The report; figures go to ``base``/plots (drawn unless ``draw`` is False, then only linked); ``others``:
    folders holding the cells of claims that name another config (``rbleak claims --with``)."""
    claims, _ = evaluate_claims(run_dir, claim_set, seeds, others)
    protocol = protocol_line(run_dir)
    if base is not None:
        write_figures(claims, base / "plots", protocol, draw=draw)
    text = [preamble.rstrip(), ""] if preamble else []
    restricted, split = [], ""
    if seeds:
        shown = ", ".join(map(str, seeds))
        restricted = [f"- **exploratory: only seeds {shown}** of the run are used (`--seeds`)"]
        split = (f"**Exploratory.** This report reads only seeds {shown} of the run (`--seeds`), a split chosen "
                 "after the data were seen: every verdict below is exploratory, whatever its claim's role.")
    looks = looks_lines(stored_looks(run_dir))
    elsewhere = []
    for config, folder in claim_folders(claim_set, others).items():
        elsewhere += [f"- the claims naming `configs/{config}` read `{folder}`:",
                      *(f"  {line}" for line in provenance_lines(folder) + coverage_lines(folder))]
    text += ["## Claims", "", *provenance_lines(run_dir), *coverage_lines(run_dir), *elsewhere, *restricted, "",
             *(["### Sequential looks", "", *looks] if looks else []),
             to_markdown(claims, protocol, base, claim_set.margins, margin_lines(run_dir, claim_set, seeds), split),
             "", "## Attack strength", "", strength_report([run_dir]), ""]
    if art:
        art_protocol = protocol_line(art)
        text += ["## ART's spatial defect: as-is vs fixed", "", *provenance_lines(art), "",
                 art_defect_table(art), "", *([art_protocol, ""] if art_protocol else [])]
    return "\n".join(text)
