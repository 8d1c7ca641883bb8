"""Figure bookkeeping shared by the plot modules: Agg backend, PNG + SVG output, one colour per model."""

from __future__ import annotations

import textwrap
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .fmt import row_label  # noqa: E402

DPI = 110


def style() -> None:
    """seaborn's theme, then our sizes (set_theme resets rcParams, so this order)."""
    sns.set_theme(style="ticks", context="paper")
    # a fixed hash salt makes the SVG element ids, and so the files, the same when the same data is rendered again
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "robustbench-leak", "figure.dpi": DPI,
                         "savefig.dpi": DPI, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
                         "ytick.labelsize": 8, "legend.fontsize": 8,
                         # model names and descriptions are the user's text, drawn as written: "$x^$" in one
                         # would otherwise be parsed as mathtext and fail the figure
                         "text.parse_math": False})


@dataclass
class Figure:
    name: str  # file stem under plots/
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)  # PNG then SVG; empty when the figure could not be made
    notes: list[str] = field(default_factory=list)  # shown with the figure: what is missing and why

    @property
    def png(self) -> Path | None:
        return next((p for p in self.files if p.suffix == ".png"), None)


# the protocol line(s) of the runs being plotted, set by ``protocol_title``: every saved figure states it
_PROTOCOL: ContextVar[str] = ContextVar("protocol", default="")


@contextmanager
def protocol_title(text: str) -> Iterator[None]:
    """Within the block, ``save`` puts ``text`` (e.g. "protocol of run x: CPU-scale ...") over every figure."""
    token = _PROTOCOL.set(text)
    try:
        yield
    finally:
        _PROTOCOL.reset(token)


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if _PROTOCOL.get():
        # wrapped to the figure's width (about 14 characters per inch at 7 pt), so a narrow figure shows all of it
        width = max(30, int(fig.get_figwidth() * 14))
        fig.suptitle(textwrap.fill(_PROTOCOL.get(), width), fontsize=7, color="0.3", parse_math=False)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for path in paths:
        # no date in the SVG: rendering the same data twice gives the same file
        fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def palette(table: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Row label -> colour, in leaderboard order, so a model has the same colour in every figure."""
    labels = list(dict.fromkeys(row_label(r, table) for _, r in table.iterrows()))
    colours = sns.color_palette("colorblind", max(len(labels), 1)) if len(labels) <= 10 else \
        sns.color_palette("husl", len(labels))
    return dict(zip(labels, colours))


def grid(n_rows: int, n_cols: int, width: float, height: float, **kwargs: Any) -> tuple[plt.Figure, np.ndarray]:
    """A constrained-layout figure of ``n_rows x n_cols`` panels, each ``width x height`` inches (2-D array)."""
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False,
                             layout="constrained", **kwargs)
    return fig, axes


def shared_legend(fig: plt.Figure, axes: Any, loc: str = "outside right center", **kwargs: Any) -> None:
    """One legend for the whole figure, each label once (panels may show different models); centred on the
    right so that it never meets the protocol line above the panels."""
    entries: dict[str, object] = {}
    for ax in getattr(axes, "flat", axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc=loc, frameon=False, **kwargs)
