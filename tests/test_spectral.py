"""SpectralConv2d and SpectralPool2d (robustbench_leak/nn/spectral.py) against direct NumPy FFT references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_leak.models import count_params
from robustbench_leak.nn import SpectralConv2d, SpectralPool2d
from robustbench_leak.nn.spectral import half_spectrum_maps

SIZES = [(3, 3), (4, 4), (5, 5), (2, 5), (4, 3), (1, 1)]


def numpy_hermitian_half(re: np.ndarray, im: np.ndarray, kw: int) -> np.ndarray:
    """Reference: the half spectrum made conjugate-symmetric by hand. In the self-conjugate columns
    (0 and kw/2 for even kw) entry (r, c) must equal conj(entry (-r mod kh, c)): keep the lower row of
    each pair, copy it conjugated to the upper one, and drop the imaginary part of self-paired rows."""
    spec = re + 1j * im
    kh = spec.shape[-2]
    cols = [0] + ([kw // 2] if kw % 2 == 0 else [])
    for c in cols:
        for r in range(kh):
            p = (-r) % kh
            if p == r:
                spec[..., r, c] = spec[..., r, c].real
            elif p < r:
                spec[..., r, c] = np.conj(spec[..., p, c])
    return spec


@pytest.mark.parametrize("kh,kw", SIZES)
def test_free_entries_count_equals_kernel_size(kh, kw):
    # a real kh x kw kernel has kh*kw degrees of freedom; so must its half spectrum
    _, _, free = half_spectrum_maps(kh, kw)
    assert int(free.sum()) == kh * kw
    assert free.shape == (kh, kw // 2 + 1)


@pytest.mark.parametrize("kh,kw", SIZES)
def test_round_trip_spatial_kernel_through_numpy_rfft2(kh, kw):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 2, kh, kw))
    spec = np.fft.rfft2(kernel, norm="ortho")
    conv = SpectralConv2d(2, 3, (kh, kw)).double()
    with torch.no_grad():
        conv.real.copy_(torch.from_numpy(spec.real))
        conv.imag.copy_(torch.from_numpy(spec.imag))
    np.testing.assert_allclose(conv.spatial_kernel().detach().numpy(), kernel, rtol=0, atol=1e-12)
    # and through our own setter
    conv2 = SpectralConv2d(2, 3, (kh, kw)).double()
    conv2.set_spatial_kernel(torch.from_numpy(kernel))
    np.testing.assert_allclose(conv2.spatial_kernel().detach().numpy(), kernel, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kh,kw", SIZES)
@pytest.mark.parametrize("stride,padding,groups,bias", [(1, 1, 1, True), (2, 0, 1, False), (1, 2, 2, True)])
def test_forward_matches_conv2d_on_numpy_irfft2_kernel(kh, kw, stride, padding, groups, bias):
    torch.manual_seed(0)
    conv = SpectralConv2d(4, 6, (kh, kw), stride=stride, padding=padding, groups=groups, bias=bias).double()
    with torch.no_grad():  # arbitrary values everywhere, the entries fixed by symmetry included
        conv.real.normal_()
        conv.imag.normal_()
    spec = numpy_hermitian_half(conv.real.detach().numpy(), conv.imag.detach().numpy(), kw)
    kernel = np.fft.irfft2(spec, s=(kh, kw), norm="ortho")
    # the completed spectrum really is the spectrum of that real kernel
    np.testing.assert_allclose(np.fft.rfft2(kernel, norm="ortho"), spec, rtol=0, atol=1e-12)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    ref = F.conv2d(x, torch.from_numpy(kernel), None if conv.bias is None else conv.bias.detach(), stride, padding,
                   1, groups)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-10)


def test_entries_fixed_by_symmetry_get_no_gradient():
    torch.manual_seed(0)
    conv = SpectralConv2d(2, 3, 4, padding=1)
    conv(torch.randn(2, 2, 6, 6)).square().sum().backward()
    _, _, free = half_spectrum_maps(4, 4)
    # imaginary parts: zero gradient where the entry is real by symmetry (free == 1) or copied (free == 0)
    im_grad = conv.imag.grad.abs().amax(dim=(0, 1))
    re_grad = conv.real.grad.abs().amax(dim=(0, 1))
    assert (im_grad[free < 2] == 0).all() and (im_grad[free == 2] > 0).all()
    assert (re_grad[free == 0] == 0).all() and (re_grad[free > 0] > 0).all()


def test_parameter_count_excludes_inert_entries():
    # 4x4 filters: 2 * 4 * 3 = 24 stored reals per filter, 16 free; 3 x 2 filters + 3 biases
    conv = SpectralConv2d(2, 3, 4)
    assert conv.num_inert_parameters() == (24 - 16) * 6
    assert count_params(nn.Sequential(conv)) == 16 * 6 + 3
    assert sum(p.numel() for p in conv.parameters()) == 24 * 6 + 3


def test_init_energy_matches_spatial_conv_init():
    # orthonormal DFT: the reconstructed kernel is exactly the kaiming-uniform kernel drawn at init
    torch.manual_seed(3)
    conv = SpectralConv2d(8, 16, 3)
    bound = 1 / np.sqrt(8 * 9)  # kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    k = conv.spatial_kernel().detach()
    assert k.abs().max() <= bound + 1e-6
    assert k.std() > 0.4 * bound  # uniform(-b, b) has std b/sqrt(3) = 0.577 b


# ------------------------------------------------------------------------------------------ pooling


def band_limited(size: int, freqs: list[tuple[int, int]], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.arange(size)
    x = np.zeros((size, size))
    for fy, fx in freqs:
        phase = rng.uniform(0, 2 * np.pi)
        x += rng.uniform(0.5, 1.5) * np.cos(2 * np.pi * (fy * m[:, None] + fx * m[None, :]) / size + phase)
    return x + 0.3


@pytest.mark.parametrize("n_in,n_out,freqs", [
    (16, 8, [(1, 2), (3, -3), (0, 1), (2, 0)]),   # |f| < 8/2: below the output's Nyquist
    (15, 5, [(1, 2), (2, -1), (0, 1)]),           # |f| <= 2 < 5/2
    (12, 4, [(1, 1), (1, -1)]),
])
def test_band_limited_image_is_downsampled_exactly(n_in, n_out, freqs):
    x = band_limited(n_in, freqs)
    pool = SpectralPool2d(n_out).double()
    y = pool(torch.from_numpy(x).view(1, 1, n_in, n_in))[0, 0].numpy()
    step = n_in // n_out
    np.testing.assert_allclose(y, x[::step, ::step], rtol=0, atol=1e-10)
    # energy: a band-limited image keeps its mean square
    assert np.mean(y ** 2) == pytest.approx(np.mean(x ** 2), rel=1e-10)


def numpy_spectral_pool(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reference: fftshift, crop the central block, make it conjugate-symmetric, inverse DFT."""
    m, n = x.shape
    spec = np.fft.fftshift(np.fft.fft2(x, norm="forward"))
    top, left = m // 2 - h // 2, n // 2 - w // 2
    crop = np.fft.ifftshift(spec[top:top + h, left:left + w])
    sym = np.empty_like(crop)
    for a in range(h):
        for b in range(w):
            sym[a, b] = (crop[a, b] + np.conj(crop[(-a) % h, (-b) % w])) / 2
    y = np.fft.ifft2(sym, norm="forward")
    assert np.abs(y.imag).max() < 1e-12  # the symmetrised spectrum is that of a real image
    return y.real


@pytest.mark.parametrize("shape,out", [((16, 16), (8, 8)), ((15, 14), (7, 6)), ((9, 12), (4, 5)), ((8, 8), (8, 8))])
def test_random_image_matches_numpy_reference(shape, out):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, *shape))
    y = SpectralPool2d(out)(torch.from_numpy(x)).numpy()
    assert y.dtype == np.float64 and y.shape == (2, 3, *out)
    for i in range(2):
        for c in range(3):
            np.testing.assert_allclose(y[i, c], numpy_spectral_pool(x[i, c], *out), rtol=0, atol=1e-12)
    # truncation never adds energy (Parseval with norm="forward": mean square = sum |X|^2)
    assert (np.mean(y ** 2, axis=(-2, -1)) <= np.mean(x ** 2, axis=(-2, -1)) + 1e-12).all()


def test_even_output_nyquist_bin_is_mean_of_its_two_aliases():
    # x = cos(pi m / 2) on 16 samples has frequency +-4; pooled to 8 samples, +-4 is the Nyquist bin.
    # Its two aliases (X[4] = X[-4] = 1/2) average to 1/2, so the output is 0.5 * (-1)^h (TreatCornerCases:
    # the corner bin keeps its real part).
    m = np.arange(16)
    x = np.cos(np.pi * m[:, None] / 2) * np.ones((1, 16))
    y = SpectralPool2d((8, 16)).double()(torch.from_numpy(x).view(1, 1, 16, 16))[0, 0].numpy()
    np.testing.assert_allclose(y, 0.5 * (-1.0) ** np.arange(8)[:, None] * np.ones((1, 16)), rtol=0, atol=1e-12)


def test_scale_gives_ceil_of_half_like_maxpool():
    pool = SpectralPool2d(scale=0.5)
    mp = nn.MaxPool2d(3, 2, padding=1)
    for n in (28, 14, 7, 32, 5):
        x = torch.randn(1, 1, n, n)
        assert pool(x).shape == mp(x).shape


def test_frequency_dropout_train_vs_eval():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pool = SpectralPool2d(8, freq_dropout=(0.0, 0.0)).double()
    # eval: deterministic, no dropout
    pool.eval()
    torch.testing.assert_close(pool(x), SpectralPool2d(8).double()(x), rtol=0, atol=0)
    # train with cutoff 0: only the DC bin is kept, i.e. each channel's mean everywhere
    pool.train()
    np.testing.assert_allclose(pool(x).numpy(), x.mean(dim=(-2, -1), keepdim=True).expand(2, 3, 8, 8).numpy(),
                               rtol=0, atol=1e-12)


def test_frequency_dropout_cutoff_matches_numpy_mask():
    # r = 0.5 on an 8x8 output keeps |k| <= 2 on both axes
    x = np.random.default_rng(2).standard_normal((16, 16))
    pool = SpectralPool2d(8, freq_dropout=(0.5, 0.5)).double().train()
    y = pool(torch.from_numpy(x).view(1, 1, 16, 16))[0, 0].numpy()
    spec = np.fft.fft2(numpy_spectral_pool(x, 8, 8), norm="forward")
    k = np.fft.fftfreq(8, d=1 / 8)  # 0, 1, 2, 3, -4, -3, -2, -1
    spec[(np.abs(k)[:, None] > 2) | (np.abs(k)[None, :] > 2)] = 0
    np.testing.assert_allclose(y, np.fft.ifft2(spec, norm="forward").real, rtol=0, atol=1e-12)


def test_frequency_dropout_draws_differ_between_batches():
    x = torch.randn(1, 1, 16, 16)
    pool = SpectralPool2d(8, freq_dropout=(0.1, 1.0)).train()
    torch.manual_seed(0)
    outs = [pool(x) for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("bad", [dict(out_size=0), dict(out_size=None), dict(out_size=4, scale=0.5),
                                 dict(scale=1.5), dict(out_size=4, freq_dropout=(0.8, 0.2))])
def test_invalid_arguments(bad):
    with pytest.raises(ValueError):
        SpectralPool2d(**bad)


def test_cannot_pool_up():
    with pytest.raises(ValueError, match="cannot pool 8x8 up to 9x9"):
        SpectralPool2d(9)(torch.randn(1, 1, 8, 8))
