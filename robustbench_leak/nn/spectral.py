"""Spectral representations (Rippel, Snoek & Adams, NeurIPS 2015; seed 003, REFERENCE.md section 5).

- ``SpectralConv2d``: each k x k filter is parametrised by its DFT coefficients (real and imaginary
  parts of the half spectrum, ``torch.fft.rfft2`` layout, orthonormal scaling); the spatial kernel
  is ``irfft2(complex(real, imag), s=(kh, kw), norm="ortho")`` and the forward is ``F.conv2d``.
- ``SpectralPool2d``: DFT, keep the central (low-frequency) block of the output size, keep the
  spectrum conjugate-symmetric so the output is real, inverse DFT. Optional frequency dropout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

__all__ = ["SpectralConv2d", "SpectralPool2d", "half_spectrum_maps", "pool_frequencies", "signed_frequencies"]


def half_spectrum_maps(kh: int, kw: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each entry of a real kernel's ``rfft2`` (shape ``kh x (kw//2+1)``) takes its value from.

    In the columns that are their own conjugate (frequency 0, and kw/2 for even kw), entry (r, c)
    equals ``conj`` of entry (-r mod kh, c): the lower of the pair is free, the upper is copied from
    it with a conjugated imaginary part, and entries paired with themselves (r = 0, r = kh/2) are
    real. Returns ``(src, imag_sign, free)``: flat source index per entry, the sign its imaginary part
    is copied with (0 where it must be real) and the number of real degrees of freedom per entry.
    """
    kc = kw // 2 + 1
    src = torch.arange(kh * kc).view(kh, kc).clone()
    sign = torch.ones(kh, kc)
    free = torch.full((kh, kc), 2)
    self_conj_cols = [0] + ([kw // 2] if kw % 2 == 0 else [])
    for c in self_conj_cols:
        for r in range(kh):
            partner = (-r) % kh
            if partner == r:
                sign[r, c], free[r, c] = 0.0, 1
            elif partner < r:
                src[r, c], sign[r, c], free[r, c] = partner * kc + c, -1.0, 0
    return src.flatten(), sign.flatten(), free


class SpectralConv2d(nn.Module):
    """A convolution whose filters are learned as DFT coefficients (spectral parametrisation).

    Parameters ``real`` and ``imag`` have shape ``(out, in // groups, kh, kw // 2 + 1)``. Entries
    fixed by conjugate symmetry (see ``half_spectrum_maps``) are stored but never used, so their
    gradient is zero; ``num_inert_parameters()`` counts them and ``models.count_params`` leaves them
    out, so a spectral filter counts ``kh * kw`` parameters like a spatial one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        kh, kw = self.kernel_size
        shape = (out_channels, in_channels // groups, kh, kw // 2 + 1)
        self.real = nn.Parameter(torch.empty(shape))
        self.imag = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        src, sign, free = half_spectrum_maps(kh, kw)
        self.register_buffer("_src", src, persistent=False)
        self.register_buffer("_imag_sign", sign, persistent=False)
        self._free = int(free.sum())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Spectrum of a kernel initialised like ``nn.Conv2d``'s (orthonormal DFT keeps its energy)."""
        weight = torch.empty(self.out_channels, self.in_channels // self.groups, *self.kernel_size,
                             device=self.real.device)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.set_spatial_kernel(weight)
        if self.bias is not None:
            bound = 1 / math.sqrt(weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def set_spatial_kernel(self, weight: torch.Tensor) -> None:
        """Set the parameters to the half spectrum of a real spatial ``weight``."""
        spec = torch.fft.rfft2(weight.to(self.real.dtype), norm="ortho")
        self.real.copy_(spec.real)
        self.imag.copy_(spec.imag)

    def half_spectrum(self) -> torch.Tensor:
        """The conjugate-symmetric half spectrum actually used (complex, rfft2 layout)."""
        lead = self.real.shape[:-2]
        re = self.real.flatten(-2)[..., self._src]
        im = self.imag.flatten(-2)[..., self._src] * self._imag_sign.to(self.imag.dtype)
        return torch.complex(re, im).view(*lead, self.kernel_size[0], -1)

    def spatial_kernel(self) -> torch.Tensor:
        return torch.fft.irfft2(self.half_spectrum(), s=self.kernel_size, norm="ortho")

    def num_inert_parameters(self) -> int:
        """Stored entries that conjugate symmetry fixes (they never reach the kernel)."""
        per_filter = 2 * self.real.shape[-2] * self.real.shape[-1] - self._free
        return per_filter * self.real.shape[0] * self.real.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.spatial_kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}")


def pool_frequencies(n_out: int, n_in: int) -> torch.Tensor:
    """Input DFT indices kept for an output of ``n_out`` samples, in the output's DFT order.

    Output index j stands for frequency j when j < n_out - n_out // 2, else j - n_out: the central
    block of the fftshift-ed spectrum (for even n_out it holds -n_out/2, the Nyquist frequency).
    """
    return signed_frequencies(n_out) % n_in


def signed_frequencies(n: int) -> torch.Tensor:
    """The frequency each index of an n-point DFT stands for: 0, 1, ..., then negatives."""
    return torch.tensor([j if j < n - n // 2 else j - n for j in range(n)])


class SpectralPool2d(nn.Module):
    """Spectral pooling to ``out_size`` (an int or (h, w)) or by ``scale``, with optional frequency dropout.

    The DFT uses ``norm="forward"`` both ways, so a band-limited image is resampled exactly (values
    are kept, not scaled). The kept block is made conjugate-symmetric so the output is real: every
    bin except the Nyquist row/column of an even output size already is, and a Nyquist bin becomes
    the mean of its two aliases (+N/2 and -N/2 of the input); on the self-conjugate corner bins this
    is Rippel et al.'s TreatCornerCases (imaginary part set to zero). Taking the real part of the
    inverse DFT is exactly this projection, which is how it is computed.

    ``freq_dropout=(min_frac, max_frac)``: in training mode, each forward draws r ~ U(min, max) and
    keeps only frequencies with |k_h| <= r * h / 2 and |k_w| <= r * w / 2 (one draw per batch).
    Eval mode is deterministic.
    """

    def __init__(self, out_size: Any = None, freq_dropout: tuple[float, float] | None = None,
                 scale: float | None = None) -> None:
        super().__init__()
        if (out_size is None) == (scale is None):
            raise ValueError("SpectralPool2d needs exactly one of out_size (pixels) and scale (fraction)")
        self.out_size = None if out_size is None else _pair(out_size)
        if self.out_size is not None and min(self.out_size) < 1:
            raise ValueError(f"SpectralPool2d out_size must be >= 1, got {out_size}")
        if scale is not None and not 0 < scale <= 1:
            raise ValueError(f"SpectralPool2d scale must be in (0, 1], got {scale}")
        self.scale = scale
        if freq_dropout is not None:
            lo, hi = (float(v) for v in freq_dropout)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"freq_dropout must be (min_frac, max_frac) with 0 <= min <= max <= 1, "
                                 f"got {freq_dropout}")
            freq_dropout = (lo, hi)
        self.freq_dropout = freq_dropout

    def output_size(self, h_in: int, w_in: int) -> tuple[int, int]:
        """``out_size``, or ``ceil(scale * input)`` (like a 3x3 stride-2 max-pool with padding 1 at 0.5)."""
        if self.out_size is not None:
            return self.out_size
        return max(1, math.ceil(h_in * self.scale - 1e-9)), max(1, math.ceil(w_in * self.scale - 1e-9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[-2:]
        h, w = self.output_size(h_in, w_in)
        if h > h_in or w > w_in:
            raise ValueError(f"SpectralPool2d cannot pool {h_in}x{w_in} up to {h}x{w}")
        spec = torch.fft.fft2(x, norm="forward")
        spec = spec.index_select(-2, pool_frequencies(h, h_in).to(x.device))
        spec = spec.index_select(-1, pool_frequencies(w, w_in).to(x.device))
        if self.training and self.freq_dropout is not None:
            lo, hi = self.freq_dropout
            r = lo + (hi - lo) * float(torch.rand(()))
            fh = signed_frequencies(h).abs().to(x.device)
            fw = signed_frequencies(w).abs().to(x.device)
            keep = (fh[:, None] <= r * h / 2) & (fw[None, :] <= r * w / 2)
            spec = spec * keep
        return torch.fft.ifft2(spec, norm="forward").real

    def extra_repr(self) -> str:
        size = f"out_size={self.out_size}" if self.out_size is not None else f"scale={self.scale}"
        return f"{size}, freq_dropout={self.freq_dropout}"
