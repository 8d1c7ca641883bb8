"""FactorizedConv2d (robustbench_leak/nn/factorized_conv.py) against F.conv2d and NumPy windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_leak.models import count_params
from robustbench_leak.nn import FactorizedConv2d, WindowedConv2d, count_windowed


def composed_kernel(v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The single (out, in, kh, kw) kernel equal to a (kh x 1) conv followed by a (1 x kw) conv:
    K[o, i, a, b] = sum_m h[o, m, 0, b] * v[m, i, a, 0]."""
    return torch.einsum("omb,mia->oiab", h[:, :, 0, :], v[:, :, :, 0])


@pytest.mark.parametrize("window,v_win,h_win", [
    ("none", lambda k: np.ones(k), lambda k: np.ones(k)),
    ("hamming", np.hamming, np.hamming),
    ({"name": "hamming", "sqrt": True}, lambda k: np.sqrt(np.hamming(k)), lambda k: np.sqrt(np.hamming(k))),
])
@pytest.mark.parametrize("k", [3, 7])
def test_forward_equals_single_conv_with_composed_windowed_kernel(window, v_win, h_win, k):
    torch.manual_seed(0)
    conv = FactorizedConv2d(3, 4, k, padding=k // 2, window=window)
    x = torch.randn(2, 3, 9, 10)
    vw = torch.tensor(v_win(k), dtype=torch.float32).view(1, 1, k, 1)
    hw = torch.tensor(h_win(k), dtype=torch.float32).view(1, 1, 1, k)
    v = conv.vertical.weight.detach() * vw
    h = conv.horizontal.weight.detach() * hw
    # without bias, zero padding by axis composes exactly into one 'same' k x k convolution
    ref = F.conv2d(x, composed_kernel(v, h), padding=k // 2)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5)
    # and the two-step reference
    two_step = F.conv2d(F.conv2d(x, v, padding=(k // 2, 0)), h, padding=(0, k // 2))
    torch.testing.assert_close(conv(x), two_step, rtol=0, atol=1e-5)


def test_sqrt_window_composes_to_the_ports_2d_window():
    # sqrt(h) on each axis: the composed window of a rank-one kernel is sqrt(outer(h, h)) (seed 002)
    conv = FactorizedConv2d(1, 1, 7, padding=3, window={"name": "hamming", "sqrt": True})
    assert isinstance(conv.vertical, WindowedConv2d) and isinstance(conv.horizontal, WindowedConv2d)
    np.testing.assert_allclose(conv.vertical.window.numpy()[:, 0], np.sqrt(np.hamming(7)), rtol=0, atol=1e-7)
    np.testing.assert_allclose(conv.horizontal.window.numpy()[0, :], np.sqrt(np.hamming(7)), rtol=0, atol=1e-7)
    with torch.no_grad():
        conv.vertical.weight.fill_(1.0)
        conv.horizontal.weight.fill_(1.0)
    k = composed_kernel(conv.vertical.windowed_weight(), conv.horizontal.windowed_weight())[0, 0]
    np.testing.assert_allclose(k.detach().numpy(), np.sqrt(np.outer(np.hamming(7), np.hamming(7))), rtol=0, atol=1e-6)
    assert count_windowed(conv) == 2


@pytest.mark.parametrize("stride,hw,expected", [(1, 9, 9), (2, 9, 5), (2, 8, 4)])
def test_stride_split_by_axis(stride, hw, expected):
    conv = FactorizedConv2d(2, 3, 5, stride=stride, padding=2)
    assert conv.vertical.stride == (stride, 1) and conv.horizontal.stride == (1, stride)
    assert conv.vertical.padding == (2, 0) and conv.horizontal.padding == (0, 2)
    assert conv(torch.randn(1, 2, hw, hw)).shape == (1, 3, expected, expected)


@pytest.mark.parametrize("cin,cout,k,bias", [(3, 8, 3, False), (4, 4, 7, True), (16, 5, 5, False)])
def test_parameter_count_by_hand(cin, cout, k, bias):
    # vertical: cin * cout * k (+ cout bias); horizontal: cout * cout * k (+ cout bias)
    conv = FactorizedConv2d(cin, cout, k, padding=k // 2, bias=bias, window="hamming")
    assert count_params(conv) == cin * cout * k + cout * cout * k + (2 * cout if bias else 0)


def test_gradients_reach_both_factors():
    torch.manual_seed(1)
    conv = FactorizedConv2d(2, 3, 5, padding=2, window="hann")
    conv(torch.randn(2, 2, 8, 8)).square().sum().backward()
    for p in conv.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the window's end taps are 0 for hann: those weights get no gradient
    assert conv.vertical.weight.grad[:, :, 0, 0].abs().max() == 0
    assert conv.horizontal.weight.grad[:, :, 0, -1].abs().max() == 0
    assert isinstance(conv.vertical, nn.Conv2d)
