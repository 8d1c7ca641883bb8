"""Layers: windows, windowed and factorised convolutions, spectral convolution and pooling."""

from .factorized_conv import FactorizedConv2d
from .spectral import SpectralConv2d, SpectralPool2d
from .windowed_conv import WindowedConv2d, count_windowed, effective_kernel, windowize
from .windows import WindowSpec, window_1d, window_names, window_params

__all__ = ["FactorizedConv2d", "SpectralConv2d", "SpectralPool2d", "WindowedConv2d", "WindowSpec",
           "count_windowed", "effective_kernel", "window_1d", "window_names", "window_params", "windowize"]
