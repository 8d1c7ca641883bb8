"""Layers: windows and windowed convolutions."""

from .windowed_conv import WindowedConv2d, count_windowed, effective_kernel, windowize
from .windows import WindowSpec, window_1d, window_names, window_params

__all__ = ["WindowedConv2d", "WindowSpec", "count_windowed", "effective_kernel", "window_1d",
           "window_names", "window_params", "windowize"]
