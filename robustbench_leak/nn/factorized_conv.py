"""Spatially factorised convolution: a k x 1 convolution followed by a 1 x k one.

As in the unofficial port's ``Conv2dFactorized`` (seed 002): the first convolution maps ``in -> out``
channels with a ``kh x 1`` kernel, the second ``out -> out`` with a ``1 x kw`` kernel, with no
nonlinearity or normalisation in between. Stride, padding and dilation are split by axis.

Windowing: each 1-D convolution is a ``WindowedConv2d`` whose 2-D window is built for its own
``kh x 1`` (or ``1 x kw``) shape, i.e. the 1-D window along its axis (a window of length 1 is 1):

- ``window="hamming"`` gives the plain 1-D Hamming window on each factor, so the composed
  separable kernel is windowed by ``outer(h, h)``, the official code's 2-D window;
- ``window={"name": "hamming", "sqrt": True}`` gives ``sqrt(hamming)`` on each factor, which is
  exactly the port's ``Conv2dHamingFactorized`` (its ``sqrt(outer(hamming(k), hamming(1)))``); the
  composed window is then ``sqrt(outer(h, h))``, the port's 2-D window.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from .windowed_conv import WindowedConv2d
from .windows import WindowSpec

__all__ = ["FactorizedConv2d"]


def _conv(cin: int, cout: int, k: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
          dilation: tuple[int, int], groups: int, bias: bool, spec: WindowSpec) -> nn.Conv2d:
    if spec.is_identity:
        return nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias)
    return WindowedConv2d(cin, cout, k, stride, padding, dilation, groups, bias, window=spec)


class FactorizedConv2d(nn.Module):
    """``vertical`` (kh x 1, in -> out) then ``horizontal`` (1 x kw, out -> out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = False,
                 window: Any = "none") -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding)
        dh, dw = _pair(dilation)
        spec = WindowSpec.parse(window)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride = (sh, sw)
        self.window_spec = spec
        self.vertical = _conv(in_channels, out_channels, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups, bias, spec)
        self.horizontal = _conv(out_channels, out_channels, (1, kw), (1, sw), (0, pw), (1, dw), groups, bias, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(x))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, window={self.window_spec.label()}"
