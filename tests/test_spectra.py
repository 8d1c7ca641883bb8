"""Perturbation spectra against known signals and a direct (loop) DFT reference; the report helpers."""

import numpy as np
import pytest

from robustbench_leak.attacks.norm_results import spectra as attack_spectra
from robustbench_leak.perturbation_spectra import (
    frequency_radius,
    mean_spectrum,
    normalised_profiles,
    radial_bins,
    radial_profile,
    spectral_summaries,
)
from robustbench_leak.report.spectra_plots import paired_seed_effects, plot_spectra


def cosine(h: int, w: int, ky: int, kx: int) -> np.ndarray:
    """cos(2 pi (ky y / h + kx x / w)): all its energy at radius sqrt((ky/h)^2 + (kx/w)^2) cycles per pixel."""
    yy, xx = np.mgrid[:h, :w]
    return np.cos(2 * np.pi * (ky * yy / h + kx * xx / w))


def reference_profile(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Direct DFT by explicit sums, then bins, hf share and centroid by looping over frequencies."""
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    size = max(h, w)
    sums, counts = np.zeros(size // 2 + 1), np.zeros(size // 2 + 1)
    total = high = weighted = 0.0
    for u in range(h):
        for v in range(w):
            coef = np.sum(img * np.exp(-2j * np.pi * (u * yy / h + v * xx / w)))
            power = abs(coef) ** 2
            fy, fx = (u if u < h / 2 else u - h) / h, (v if v < w / 2 else v - w) / w
            if u == h // 2 and h % 2 == 0:
                fy = -0.5
            if v == w // 2 and w % 2 == 0:
                fx = -0.5
            r = np.hypot(fy, fx)
            total += power
            weighted += power * r
            high += power if r > 0.25 else 0.0
            k = int(np.floor(r * size + 0.5))
            if k <= size // 2:
                sums[k] += power
                counts[k] += 1
    return np.arange(size // 2 + 1) / size, sums / counts, high / total, weighted / total


@pytest.mark.parametrize("kx, centroid, hf", [(4, 4 / 32, 0.0), (12, 12 / 32, 1.0), (8, 0.25, 0.0), (16, 0.5, 1.0)])
def test_pure_cosine_has_its_frequency(kx, centroid, hf):
    """Centroid at the cosine's frequency; all energy above half-Nyquist or none (0.25 itself is not above)."""
    hf_share, c = spectral_summaries(cosine(32, 32, 0, kx)[None])
    assert c[0] == pytest.approx(centroid, abs=1e-12)
    assert hf_share[0] == pytest.approx(hf, abs=1e-12)
    freq, profile = radial_profile(cosine(32, 32, 0, kx)[None])
    assert freq[np.argmax(profile[0])] == pytest.approx(kx / 32)  # the peak sits in the cosine's bin


def test_diagonal_cosine_and_non_square_images():
    """Radius combines both axes, with each axis in its own cycles per pixel (16 rows, 32 columns)."""
    hf_share, c = spectral_summaries(cosine(16, 32, 3, 6)[None])
    assert c[0] == pytest.approx(np.hypot(3 / 16, 6 / 32), abs=1e-12)
    assert hf_share[0] == pytest.approx(1.0)  # radius 0.265 > 0.25
    hf_share, c = spectral_summaries(cosine(16, 32, 2, 4)[None])
    assert c[0] == pytest.approx(np.hypot(2 / 16, 4 / 32)) and hf_share[0] == pytest.approx(0.0, abs=1e-12)


def test_channels_average_their_power():
    low, high = cosine(32, 32, 0, 2), cosine(32, 32, 0, 14)
    hf_share, c = spectral_summaries(np.stack([low, high])[None])
    assert hf_share[0] == pytest.approx(0.5)
    assert c[0] == pytest.approx((2 / 32 + 14 / 32) / 2)


def test_matches_a_direct_dft_on_random_images():
    rng = np.random.default_rng(0)
    for h, w in [(12, 12), (9, 14), (28, 28)]:
        img = rng.normal(size=(h, w))
        freq, profile = radial_profile(img[None])
        hf_share, centroid = spectral_summaries(img[None])
        ref_freq, ref_profile, ref_hf, ref_centroid = reference_profile(img)
        np.testing.assert_allclose(freq, ref_freq)
        np.testing.assert_allclose(profile[0], ref_profile, rtol=1e-9)
        assert hf_share[0] == pytest.approx(ref_hf, rel=1e-9)
        assert centroid[0] == pytest.approx(ref_centroid, rel=1e-9)


def test_bins_cover_zero_to_nyquist_and_leave_only_corners_out():
    freq, index = radial_bins(28, 28)
    assert freq[0] == 0 and freq[-1] == 0.5 and len(freq) == 15
    radius = frequency_radius(28, 28)
    assert np.all(radius[index == -1] >= 0.5 + 0.5 / 28)  # only frequencies beyond the last bin are left out
    assert np.all(np.abs(radius[index >= 0] - freq[index[index >= 0]]) <= 0.5 / 28 + 1e-12)
    # normalised profiles: bin means times bin sizes add up to the energy inside the Nyquist circle
    img = np.random.default_rng(1).normal(size=(2, 1, 28, 28))
    _, norm = normalised_profiles(img)
    sizes = np.bincount(index[index >= 0].ravel(), minlength=len(freq))
    power = np.abs(np.fft.fft2(img[:, 0])) ** 2
    inside = power[:, index >= 0].sum(axis=1) / power.sum(axis=(1, 2))
    np.testing.assert_allclose((norm * sizes).sum(axis=1), inside)


def test_zero_perturbation_and_failed_attacks_are_nan():
    hf_share, centroid = spectral_summaries(np.zeros((2, 1, 8, 8)))
    assert np.isnan(hf_share).all() and np.isnan(centroid).all()
    x = np.zeros((3, 1, 16, 16), np.float32)
    x_adv = x + np.stack([cosine(16, 16, 0, 2), cosine(16, 16, 0, 6), cosine(16, 16, 0, 6)])[:, None] * 0.1
    samples, info = attack_spectra(x, x_adv.astype(np.float32), clean_pred=np.array([1, 1, 2]),
                                   adv_pred=np.array([3, 1, 4]), label=np.array([1, 1, 0]))
    assert samples["hf_share"][0] == pytest.approx(0.0) and np.isnan(samples["hf_share"][1])
    assert samples["centroid"][2] == pytest.approx(6 / 16)  # fooled, though clean-wrong: per-image value kept
    assert info["spectrum"]["n"] == 1  # the mean spectrum: clean-correct fooled images only


def test_mean_spectrum_bootstrap():
    rng = np.random.default_rng(2)
    freq = np.linspace(0, 0.5, 6)
    profiles = rng.random((40, 6))
    s = mean_spectrum(freq, profiles, n_boot=500, seed=3)
    assert s == mean_spectrum(freq, profiles, n_boot=500, seed=3)  # seeded: reproducible
    np.testing.assert_allclose(s["mean"], profiles.mean(axis=0))
    assert all(lo < m < hi for lo, m, hi in zip(s["lo"], s["mean"], s["hi"]))
    # the interval's width is about that of the normal approximation (+-1.96 standard errors)
    se = profiles.std(axis=0, ddof=1) / np.sqrt(40)
    np.testing.assert_allclose(np.subtract(s["hi"], s["lo"]), 2 * 1.96 * se, rtol=0.25)
    empty = mean_spectrum(freq, np.empty((0, 6)))
    assert empty["n"] == 0 and np.isnan(empty["mean"]).all()


def test_plot_spectra_is_reproducible(tmp_path):
    freq = np.arange(15) / 28
    spec = {"freq": freq.tolist(), "mean": (1 / (1 + freq)).tolist(), "lo": (0.9 / (1 + freq)).tolist(),
            "hi": (1.1 / (1 + freq)).tolist(), "n": 10}
    empty = {"freq": freq.tolist(), "mean": [np.nan] * 15, "lo": [np.nan] * 15, "hi": [np.nan] * 15, "n": 0}
    runs = [("cnn-7x7", spec), ("cnn-7x7-hamming", {**spec, "mean": (0.5 / (1 + freq)).tolist()}), ("none", empty)]
    first = plot_spectra(runs, tmp_path / "a")
    second = plot_spectra(runs, tmp_path / "b")
    assert [p.suffix for p in first.files] == [".png", ".svg"]
    assert first.files[1].read_bytes() == second.files[1].read_bytes()
    assert "none" in first.notes[0]
    assert plot_spectra([("none", empty)], tmp_path / "c").files == []


def test_paired_seed_effects():
    a = [np.array([0.2, 0.4, np.nan]), np.array([0.1, 0.3, 0.5])]
    b = [np.array([0.3, 0.6, 0.1]), np.array([0.2, np.nan, 0.5])]
    eff = paired_seed_effects(a, b)
    assert eff.per_seed == pytest.approx((-0.15, -0.05))
    assert eff.n_images == (2, 2)
    assert eff.effect == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="same images"):
        paired_seed_effects([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError, match="number"):
        paired_seed_effects([np.zeros(3)], [])


def test_leaderboard_plots_the_stored_spectra(tmp_path):
    """make_plots draws every minimum-norm cell's stored spectrum, per model; without spectra it says so."""
    from types import SimpleNamespace

    import pandas as pd

    from robustbench_leak.report.plots import perturbation_spectra

    freq = np.linspace(0, 0.5, 8)
    spectrum = {"freq": freq.tolist(), "mean": (1 / (1 + 10 * freq)).tolist(), "lo": (0.9 / (1 + 10 * freq)).tolist(),
                "hi": (1.1 / (1 + 10 * freq)).tolist(), "n": 5}
    cells = pd.DataFrame({"model": ["a", "b", "a"], "attack": ["minnorm", "minnorm", "clean"], "dataset": ["d"] * 3,
                          "info": [{"spectrum": spectrum}, {"spectrum": spectrum}, {}]})
    table = pd.DataFrame({"model": ["b", "a"]})
    fig = perturbation_spectra([SimpleNamespace(cells=cells)], table, tmp_path)
    assert [p.name for p in fig.files] == ["perturbation_spectra.png", "perturbation_spectra.svg"]
    assert all(p.is_file() for p in fig.files)
    empty = perturbation_spectra([SimpleNamespace(cells=cells.iloc[2:])], table, tmp_path / "none")
    assert not empty.files and "no minimum-norm cell" in empty.notes[-1]
