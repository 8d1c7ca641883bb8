"""Window and kernel spectra: the windows side by side, and learned first-layer kernels with their DFT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..models.checkpoints import CheckpointError, read_checkpoint
from ..nn import WindowSpec, window_names
from .figures import Figure, grid, plt, save, sns
from .fmt import row_label
from .loader import RunData

FLOOR_DB = -80.0


def response_db(values: np.ndarray, size: int) -> np.ndarray:
    """|DFT| of ``values`` zero-padded to ``size`` (per axis), in dB relative to its maximum, centred."""
    axes = tuple(range(values.ndim))
    mag = np.abs(np.fft.fftshift(np.fft.fftn(values, s=(size,) * values.ndim, axes=axes)))
    return np.maximum(20 * np.log10(np.maximum(mag / mag.max(), 1e-12)), FLOOR_DB)


def window_specs() -> list[WindowSpec]:
    """Every registered window with its default parameters, plus the unofficial port's sqrt-Hamming."""
    specs = [WindowSpec(name=name) for name in window_names()]
    return specs + [WindowSpec(name="hamming", sqrt=True)]


_RENDERED: dict[int, dict[str, bytes]] = {}  # the windows figure depends on k only: render once per process


def windows_figure(out: Path, k: int = 7) -> Figure:
    """The figure of every window; rendered once per process and copied after that."""
    info = _windows_info(k)
    if k not in _RENDERED:
        _RENDERED[k] = {p.suffix: p.read_bytes() for p in _render_windows(out, k, info.name)}
    out.mkdir(parents=True, exist_ok=True)
    for suffix, data in _RENDERED[k].items():
        path = out / f"{info.name}{suffix}"
        path.write_bytes(data)
        info.files.append(path)
    return info


def _windows_info(k: int) -> Figure:
    return Figure("windows", f"Windows side by side (k = {k})",
                  "Top: the 1-D windows (the centre row of each 2-D window) and the magnitude of their frequency "
                  "responses (zero-padded DFT, dB relative to the peak). Bottom: each 2-D window as multiplied into "
                  "every kernel, and its 2-D response (centre = frequency 0, -80 to 0 dB). 'none' is the plain "
                  "(rectangular) kernel whose sidelobes are the spectral leakage; sqrt-hamming is the unofficial "
                  "port's window.")


def _render_windows(out: Path, k: int, name: str) -> list[Path]:
    specs = window_specs()
    colours = sns.color_palette("colorblind", len(specs))
    fig = plt.figure(figsize=(1.25 * len(specs), 6.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1])
    taps_ax, resp_ax = top.subplots(1, 2)
    images = bottom.subplots(2, len(specs), squeeze=False)
    freqs = np.fft.fftshift(np.fft.fftfreq(512))
    for i, (spec, colour) in enumerate(zip(specs, colours)):
        win2d = spec.build_2d(k, k)
        taps = win2d[k // 2] / win2d[k // 2].max()
        style_ = "--" if spec.sqrt else "-"
        taps_ax.plot(np.arange(k), taps, style_, marker="o", ms=3, color=colour, label=spec.label())
        resp_ax.plot(freqs, response_db(taps, 512), style_, lw=1.1, color=colour)
        images[0][i].imshow(win2d, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        images[1][i].imshow(response_db(win2d, 64), cmap="viridis", vmin=FLOOR_DB, vmax=0, interpolation="nearest")
        images[0][i].set_title(spec.label(), fontsize=8)
        for ax in images[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    images[0][0].set_ylabel("2-D window", fontsize=8)
    images[1][0].set_ylabel("2-D |DFT| dB", fontsize=8)
    taps_ax.set(xlabel="tap", ylabel="weight", title=f"1-D windows, k = {k}", ylim=(-0.05, 1.08))
    resp_ax.set(xlabel="frequency (cycles/sample)", ylabel="dB", title="frequency response",
                ylim=(FLOOR_DB, 3), xlim=(0, 0.5))
    for ax in (taps_ax, resp_ax):
        ax.grid(alpha=0.3)
    top.legend(*taps_ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False)
    return save(fig, out, name)


def first_conv(state: dict[str, torch.Tensor]) -> tuple[str, np.ndarray] | None:
    """(name, effective kernel) of the first spatial convolution in a state dict, window included.

    A ``WindowedConv2d`` stores ``<name>.weight`` and ``<name>.window``; a windowized timm conv stores
    ``<name>.parametrizations.weight.original`` and ``<name>.parametrizations.weight.0.window``.
    """
    for key, value in state.items():
        if value.ndim != 4 or min(value.shape[-2:]) < 2:
            continue
        if key.endswith(".parametrizations.weight.original"):
            name = key[: -len(".parametrizations.weight.original")]
            window = state.get(f"{name}.parametrizations.weight.0.window")
        elif key.endswith(".weight") or key == "weight":
            name = key[: -len(".weight")] if key != "weight" else ""
            window = state.get(f"{name}.window" if name else "window")
        else:
            continue
        weight = value.double()
        if window is not None:
            weight = weight * window.double()
        return name, weight.numpy()
    return None


def first_layer_kernels(runs: list[RunData], table: pd.DataFrame, out: Path, n_show: int = 8) -> Figure:
    info = Figure("first_layer_kernels", "Learned first-layer kernels and their spectra",
                  f"Per model (lowest seed): the {n_show} first-layer filters with the largest norm, as applied "
                  "(weight × window; input channels averaged; red positive, blue negative, each filter on its "
                  "own scale), and the magnitude of their 2-D DFT (zero-padded "
                  "to 32 × 32, dB relative to each filter's peak). The last column is the mean magnitude over all "
                  "filters. Windowed kernels decay towards 0 at the border by construction; compare the rows to see "
                  "whether their spectra are smoother (fewer sidelobes) than the plain kernels'.")
    by_run = {r.label: r for r in runs}
    panels = []
    gone: list[str] = []
    for _, row in table.iterrows():
        run = by_run[row.run]
        models = run.models[(run.models.model == row.model) & (run.models.dataset == row.dataset)]
        if not len(models):
            continue
        m = models.sort_values("seed").iloc[0]
        label = row_label(row, table)
        path = Path(str(m.checkpoint)) if m.checkpoint else None
        if path is None or not path.is_file():
            info.notes.append(f"{label}: checkpoint {path} is gone; its kernels are not shown")
            gone.append(label)
            continue
        try:
            state, _ = read_checkpoint(path)
        except CheckpointError as exc:
            info.notes.append(f"{label}: {exc}")
            continue
        found = first_conv(state)
        if found is None:
            info.notes.append(f"{label}: no spatial convolution in its checkpoint")
            continue
        panels.append((f"{label}\n{row.kernel}, {row.window}", found[1]))
    if not panels:
        earlier = [out / f"{info.name}{suffix}" for suffix in (".png", ".svg")]
        if gone and len(gone) == len(info.notes) and all(p.is_file() for p in earlier):
            # the weights live in checkpoint files outside the store: where none of them is on this machine,
            # the figure an earlier render drew from those same checkpoints stays, and says so
            info.files = earlier
            info.notes = [f"drawn by an earlier render: the checkpoints ({len(gone)}) are not on this machine"]
        return info
    n_show = min(n_show, max(len(weight) for _, weight in panels))
    fig, axes = grid(2 * len(panels), n_show + 1, 0.95, 0.95)
    for p, (label, weight) in enumerate(panels):
        norms = np.sqrt((weight**2).sum(axis=(1, 2, 3)))
        order = np.argsort(-norms, kind="stable")[:n_show]
        spectra = np.array([[response_db(ch, 32) for ch in f] for f in weight])  # (out, in, 32, 32)
        mean_mag = 10 ** (spectra / 20).mean(axis=(0, 1))
        kern_row, spec_row = axes[2 * p], axes[2 * p + 1]
        for j in range(n_show + 1):
            for ax in (kern_row[j], spec_row[j]):
                ax.set_xticks([])
                ax.set_yticks([])
            if j < len(order):
                kernel = weight[order[j]].mean(axis=0)
                limit = np.abs(kernel).max() or 1.0
                kern_row[j].imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
                spec_row[j].imshow(spectra[order[j]].mean(axis=0), cmap="viridis", vmin=-40, vmax=0,
                                   interpolation="nearest")
            elif j == n_show:
                spec_row[j].imshow(np.maximum(20 * np.log10(mean_mag / mean_mag.max()), -40), cmap="viridis",
                                   vmin=-40, vmax=0, interpolation="nearest")
                spec_row[j].set_title("mean |DFT|", fontsize=7)
                kern_row[j].axis("off")
            else:
                kern_row[j].axis("off")
                spec_row[j].axis("off")
        kern_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        spec_row[0].set_ylabel("|DFT| dB", rotation=0, ha="right", va="center", fontsize=8)
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
    info.files = save(fig, out, info.name)
    return info
