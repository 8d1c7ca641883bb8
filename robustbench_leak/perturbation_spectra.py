"""Perturbation spectra: where in frequency the energy of ``x_adv - x`` lies.

Definitions (frequencies in cycles per pixel, as ``numpy.fft.fftfreq``):
- power: ``|FFT2(delta)|^2`` of each channel, averaged over channels;
- radius of a 2-D frequency ``(fy, fx)``: ``sqrt(fy^2 + fx^2)``, from 0 up to ``sqrt(0.5)`` in the corners;
- radial bins: width ``1 / max(H, W)``; bin ``k`` (``k = 0 .. max(H, W) // 2``) holds the frequencies with
  radius in ``[(k - 0.5) / max(H, W), (k + 0.5) / max(H, W))``, so its centre ``k / max(H, W)`` runs from
  0 to 0.5 (Nyquist). The radial profile is the MEAN power over the frequencies of each bin; the corners
  beyond the last bin (radius above Nyquist) are not in the profile;
- ``hf_share``: energy at radius > 0.25 (above half-Nyquist) over total energy, corners included;
- ``centroid``: energy-weighted mean radius over all frequencies, corners included.

The summaries use the exact 2-D spectrum, never the bins.
"""

from __future__ import annotations

import numpy as np

HALF_NYQUIST = 0.25  # cycles per pixel


def _power(delta: np.ndarray) -> np.ndarray:
    """(N, H, W) power spectrum of (N, C, H, W) or (N, H, W) perturbations, averaged over channels."""
    d = np.asarray(delta, dtype=np.float64)
    if d.ndim == 3:
        d = d[:, None]
    if d.ndim != 4:
        raise ValueError(f"spectra: delta: expected (N, C, H, W) or (N, H, W), got shape {d.shape}")
    return (np.abs(np.fft.fft2(d, axes=(-2, -1))) ** 2).mean(axis=1)


def frequency_radius(height: int, width: int) -> np.ndarray:
    """(H, W) radius in cycles per pixel of each 2-D FFT frequency, in ``numpy.fft.fft2`` order."""
    fy, fx = np.fft.fftfreq(height), np.fft.fftfreq(width)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def radial_bins(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres (cycles per pixel, 0 .. 0.5) and the (H, W) bin index of each frequency (-1: corner)."""
    size = max(height, width)
    n_bins = size // 2 + 1
    index = np.floor(frequency_radius(height, width) * size + 0.5).astype(int)
    index[index >= n_bins] = -1
    return np.arange(n_bins) / size, index


def radial_profile(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres (B,) and each image's radially averaged power (N, B)."""
    return _profile(_power(delta))


def _profile(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    freq, index = radial_bins(*power.shape[1:])
    flat, idx = power.reshape(len(power), index.size), index.ravel()
    profile = np.zeros((len(power), len(freq)))
    for k in range(len(freq)):
        members = idx == k
        profile[:, k] = flat[:, members].mean(axis=1) if members.any() else np.nan
    return freq, profile


def spectral_summaries(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``hf_share`` and ``centroid`` (see the module docstring); NaN where delta is all zero."""
    power = _power(delta)
    radius = frequency_radius(*power.shape[1:])
    total = power.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        hf = power[:, radius > HALF_NYQUIST].sum(axis=1) / total
        centroid = (power * radius).sum(axis=(1, 2)) / total
    zero = ~(total > 0)
    hf[zero], centroid[zero] = np.nan, np.nan
    return hf, centroid


def normalised_profiles(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial profiles (N, B), each divided by its image's total energy (so images weigh the same)."""
    power = _power(delta)
    freq, profile = _profile(power)
    total = power.sum(axis=(1, 2))
    return freq, profile / np.where(total > 0, total, np.nan)[:, None]


def mean_spectrum(freq: np.ndarray, profiles: np.ndarray, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, list[float]]:
    """Mean profile over images with a percentile-bootstrap CI per bin (images resampled with replacement)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    profiles = profiles[np.isfinite(profiles).all(axis=1)] if len(profiles) else profiles.reshape(0, len(freq))
    if len(profiles) == 0:
        nan = [float("nan")] * len(freq)
        return {"freq": [float(f) for f in freq], "mean": nan, "lo": nan, "hi": list(nan), "n": 0}
    rng = np.random.default_rng(seed)
    means = np.stack([profiles[rng.integers(0, len(profiles), len(profiles))].mean(axis=0) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    return {"freq": [float(f) for f in freq], "mean": profiles.mean(axis=0).tolist(),
            "lo": np.quantile(means, alpha, axis=0).tolist(), "hi": np.quantile(means, 1 - alpha, axis=0).tolist(),
            "n": int(len(profiles))}
