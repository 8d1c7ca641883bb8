"""``WindowedConv2d`` and ``windowize``: convolutions whose kernel is multiplied by a smooth window.

The window is applied in ``forward`` (so gradients reach the raw weight through it), as in the
official code. In eval mode, with the weight frozen or gradients off, the windowed kernel is
computed once and reused until the weight tensor changes (an optimizer step, an in-place update
under ``no_grad`` or ``load_state_dict``). Writes through ``weight.data`` bypass PyTorch's version
counter and cannot be seen; call ``clear_window_cache()`` after them.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from .windows import WindowSpec

__all__ = ["WindowedConv2d", "windowize", "count_windowed"]


class WindowedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose effective kernel is ``weight * window2d``.

    Same arguments as ``nn.Conv2d`` plus ``window``: a name (``"hamming"``, ``"hann"``,
    ``"blackman"``, ``"kaiser"``, ``"tukey"``, ``"gaussian"``, ``"none"``), a mapping
    (``{"name": "kaiser", "beta": 14, "sqrt": True, "normalize": "mean"}``) or a ``WindowSpec``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", window: Any = "hamming", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device=device, dtype=dtype)
        self.window_spec = WindowSpec.parse(window)
        kh, kw = _pair(self.kernel_size)
        win = torch.as_tensor(self.window_spec.build_2d(kh, kw), dtype=self.weight.dtype,
                              device=self.weight.device)
        # part of the state dict, so a checkpoint records the exact window it was trained with
        self.register_buffer("window", win)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def windowed_weight(self) -> torch.Tensor:
        """The kernel actually convolved with the input."""
        reuse = not self.training and (not torch.is_grad_enabled() or not self.weight.requires_grad)
        if not reuse:
            self._cache = None
            return self.weight * self.window
        key = (self.weight._version, self.weight.data_ptr(), self.window._version,
               self.window.data_ptr(), self.weight.dtype, self.weight.device)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.weight * self.window)
        return self._cache[1]

    def clear_window_cache(self) -> None:
        """Forget the cached windowed kernel (needed only after writes through ``weight.data``)."""
        self._cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.windowed_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.window_spec.label()}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, window: Any, kernel_size: int | None = None) -> "WindowedConv2d":
        """A windowed copy of ``conv``; keeps its weights unless ``kernel_size`` changes the shape."""
        if kernel_size is None:
            k, padding = conv.kernel_size, conv.padding
        else:
            k = (kernel_size, kernel_size)
            d = _pair(conv.dilation)
            padding = (d[0] * (kernel_size // 2), d[1] * (kernel_size // 2))
        new = cls(conv.in_channels, conv.out_channels, k, conv.stride, padding, conv.dilation,
                  conv.groups, conv.bias is not None, conv.padding_mode, window=window,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        if tuple(new.weight.shape) == tuple(conv.weight.shape):
            with torch.no_grad():
                new.weight.copy_(conv.weight)
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
        return new


class _WindowParametrization(nn.Module):
    """Window for ``nn.Conv2d`` subclasses with their own forward (timm's StdConv2d, Conv2dSame)."""

    def __init__(self, window: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("window", window)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.window


def _standardized_classes() -> tuple[type, ...]:
    """timm's weight-standardised convolutions (none can exist unless timm's module is loaded)."""
    mod = sys.modules.get("timm.layers.std_conv")
    if mod is None:
        return ()
    return tuple(getattr(mod, n) for n in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")
                 if hasattr(mod, n))


def standardized_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel timm's StdConv2d / ScaledStdConv2d (and their Same variants) convolve with: each output
    filter standardised to zero mean and unit variance (times ``gain * scale`` for the scaled ones)."""
    gain = getattr(conv, "gain", None)
    affine = None if gain is None else (gain * conv.scale).view(-1)
    return F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, weight=affine, training=True,
                        momentum=0.0, eps=conv.eps).reshape_as(conv.weight)


def _standardized_then_windowed(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if getattr(self, "same_pad", False):
        from timm.layers.padding import pad_same  # noqa: PLC0415

        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
    return F.conv2d(x, standardized_weight(self) * self.window, self.bias, self.stride, self.padding,
                    self.dilation, self.groups)


_WINDOWED_STANDARDIZED: dict[type, type] = {}


def _window_after_standardization(conv: nn.Conv2d, win: torch.Tensor) -> None:
    """Window a weight-standardised conv on its effective (standardised) kernel, in place.

    A window multiplied in before the standardisation would not taper the kernel: subtracting the
    filter mean leaves a constant offset, a box, on the border. The class is swapped for a subclass
    whose forward standardises exactly as timm's and then multiplies the window in.
    """
    cls = type(conv)
    if cls not in _WINDOWED_STANDARDIZED:
        _WINDOWED_STANDARDIZED[cls] = type(f"Windowed{cls.__name__}", (cls,),
                                           {"forward": _standardized_then_windowed, "__module__": __name__})
    conv.__class__ = _WINDOWED_STANDARDIZED[cls]
    conv.register_buffer("window", win)


def _windowable(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and max(_pair(module.kernel_size)) > 1


def windowize(model: nn.Module, window: Any = "hamming", kernel_size: int | None = None) -> nn.Module:
    """Window every ``nn.Conv2d`` with a kernel larger than 1x1 in ``model``, in place.

    Plain ``nn.Conv2d`` become ``WindowedConv2d`` (grouped and depthwise ones included). timm's
    weight-standardised convs (StdConv2d, ScaledStdConv2d) are windowed after their standardisation;
    any other Conv2d subclass with its own forward (e.g. timm's Conv2dSame) gets the window as a
    parametrization of its weight.

    ``kernel_size`` optionally resizes those kernels to ``k x k`` (padding ``k // 2`` times the
    dilation; resized layers are freshly initialised). 1x1 convolutions (e.g. ResNet downsample
    projections), and everything that is not a convolution, are left as they are. Returns ``model``.
    """
    spec = WindowSpec.parse(window)
    if spec.is_identity and kernel_size is None:
        return model
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not _windowable(child):
                continue
            if type(child) in (nn.Conv2d, WindowedConv2d):
                setattr(parent, child_name, WindowedConv2d.from_conv(child, spec, kernel_size))
            elif kernel_size is not None:
                raise TypeError(
                    f"cannot resize {type(child).__name__} at {child_name!r}: only plain nn.Conv2d "
                    "kernels can be resized; use kernel_size=None to window it in place")
            else:
                kh, kw = _pair(child.kernel_size)
                win = torch.as_tensor(spec.build_2d(kh, kw), dtype=child.weight.dtype,
                                      device=child.weight.device)
                if type(child) in _WINDOWED_STANDARDIZED.values():
                    child.window = win  # windowize twice: replace the window
                elif isinstance(child, _standardized_classes()):
                    _window_after_standardization(child, win)
                else:
                    torch.nn.utils.parametrize.register_parametrization(child, "weight",
                                                                        _WindowParametrization(win))
    return model


def count_windowed(model: nn.Module) -> int:
    """Number of convolutions in ``model`` that apply a (non-identity) window."""
    n = 0
    for m in model.modules():
        if isinstance(m, WindowedConv2d) and not m.window_spec.is_identity:
            n += 1
        elif isinstance(m, _WindowParametrization) or type(m) in _WINDOWED_STANDARDIZED.values():
            n += 1
    return n


def effective_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel a convolution applies, window included (for plots and spectra)."""
    if isinstance(conv, WindowedConv2d):
        return conv.windowed_weight().detach()
    if type(conv) in _WINDOWED_STANDARDIZED.values():
        return (standardized_weight(conv) * conv.window).detach()
    if isinstance(conv, _standardized_classes()):
        return standardized_weight(conv).detach()
    return conv.weight.detach()

