"""Perturbation spectra in reports: the mean spectrum per model, and the paired high-frequency question.

The spectra come from a minimum-norm cell's ``info["spectrum"]`` and per-image ``hf_share`` samples
(definitions in ``robustbench_leak.perturbation_spectra``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import seaborn as sns

from ..perturbation_spectra import HALF_NYQUIST
from .figures import Figure, grid, save, shared_legend, style

HF_QUESTION = ("Are the minimal perturbations of windowed models lower-frequency than those of plain 7x7? "
               "Effect: mean hf_share (share of perturbation energy above half-Nyquist) of A minus B on the same "
               "images; negative means A's perturbations are lower-frequency.")


def plot_spectra(spectra: Sequence[tuple[str, dict[str, Any]] | tuple[str, str, dict[str, Any]]], out: Path,
                 name: str = "perturbation_spectra", title: str = "Perturbation spectra") -> Figure:
    """Mean radial power spectrum of ``x_adv - x`` per model with its 95% bootstrap band (over images).

    ``spectra``: (model label, ``info["spectrum"]``) pairs, or (panel, model label, spectrum) triples for one
    panel per attack; several entries with one label (seeds) share a colour, in every panel.
    """
    fig_info = Figure(name, title,
                      "Radially averaged power of the minimal perturbation x_adv - x, each image normalised to unit "
                      "total energy, averaged over the clean-correct images the attack fooled. Shaded: 95% "
                      f"percentile bootstrap interval over images; one line per seed. Dashed: half-Nyquist "
                      f"({HALF_NYQUIST} cycles per pixel), the boundary of hf_share.")
    entries = [e if len(e) == 3 else ("", *e) for e in spectra]
    usable = [(panel, label, s) for panel, label, s in entries if s and s.get("n", 0) > 0]
    skipped = [label for _, label, s in entries if not (s and s.get("n", 0) > 0)]
    if skipped:
        fig_info.notes.append(f"no fooled clean-correct image, so no spectrum: {', '.join(dict.fromkeys(skipped))}")
    if not usable:
        return fig_info
    style()
    labels = list(dict.fromkeys(label for _, label, _ in usable))
    panels = list(dict.fromkeys(panel for panel, _, _ in usable))
    colours = dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1)) if len(labels) <= 10
                       else sns.color_palette("husl", len(labels))))
    fig, axes = grid(1, len(panels), 4.6, 3.6, sharey=True)
    for ax, panel in zip(axes[0], panels):
        for _, label, s in (u for u in usable if u[0] == panel):
            freq = np.asarray(s["freq"], float)
            ax.plot(freq, s["mean"], color=colours[label], lw=1.5, label=label)
            ax.fill_between(freq, s["lo"], s["hi"], color=colours[label], alpha=0.15, lw=0)
        ax.axvline(HALF_NYQUIST, color="0.5", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlim(0, 0.5)
        ax.set_xlabel("radial frequency (cycles per pixel)")
        ax.set_title(panel or title)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean power per frequency\n(share of the image's energy)")
    shared_legend(fig, axes, loc="outside lower center", ncols=min(len(labels), 3))
    fig_info.files = save(fig, out, fig_info.name)
    return fig_info


@dataclass(frozen=True)
class SeedEffects:
    """A paired effect A - B: its value, and per seed the effect and the number of images it used."""

    effect: float  # mean of the per-seed effects (each seed weighs the same)
    per_seed: tuple[float, ...]
    n_images: tuple[int, ...]


def paired_seed_effects(a_by_seed: Sequence[np.ndarray], b_by_seed: Sequence[np.ndarray]) -> SeedEffects:
    """Per seed, the mean of ``a - b`` over the images where both are finite (e.g. per-image ``hf_share``
    of two models on the same images, NaN where an attack failed); the effect is their mean."""
    if len(a_by_seed) != len(b_by_seed) or not len(a_by_seed):
        raise ValueError(f"paired_seed_effects: expected the same number (>= 1) of seeds for A and B, got "
                         f"{len(a_by_seed)} and {len(b_by_seed)}")
    per_seed, counts = [], []
    for seed, (a, b) in enumerate(zip(a_by_seed, b_by_seed)):
        a, b = np.asarray(a, float), np.asarray(b, float)
        if a.shape != b.shape:
            raise ValueError(f"paired_seed_effects: seed {seed}: A and B must hold the same images, got shapes "
                             f"{a.shape} and {b.shape}")
        both = np.isfinite(a) & np.isfinite(b)
        per_seed.append(float(np.mean(a[both] - b[both])) if both.any() else float("nan"))
        counts.append(int(both.sum()))
    return SeedEffects(float(np.mean(per_seed)), tuple(per_seed), tuple(counts))
