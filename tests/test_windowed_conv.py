"""WindowedConv2d and windowize (robustbench_leak/nn/windowed_conv.py) against F.conv2d references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_leak.nn import WindowedConv2d, WindowSpec, count_windowed, effective_kernel, windowize

ATOL = 1e-5


def hamming2d(kh: int, kw: int, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.outer(np.hamming(kh), np.hamming(kw)), dtype=dtype)


def reference(conv: nn.Conv2d, x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, conv.weight.detach() * win, None if conv.bias is None else conv.bias.detach(),
                    conv.stride, conv.padding, conv.dilation, conv.groups)


SETTINGS = [
    # in, out, kernel, stride, padding, dilation, groups, bias
    dict(cin=3, cout=4, k=3, stride=1, padding=0, dilation=1, groups=1, bias=True),
    dict(cin=3, cout=4, k=3, stride=2, padding=1, dilation=1, groups=1, bias=False),
    dict(cin=2, cout=3, k=5, stride=1, padding=2, dilation=1, groups=1, bias=True),
    dict(cin=2, cout=3, k=3, stride=1, padding=2, dilation=2, groups=1, bias=False),
    dict(cin=4, cout=6, k=3, stride=1, padding=1, dilation=1, groups=2, bias=True),
    dict(cin=4, cout=4, k=7, stride=2, padding=3, dilation=1, groups=4, bias=False),  # depthwise
    dict(cin=3, cout=2, k=(3, 5), stride=1, padding=(1, 2), dilation=1, groups=1, bias=True),  # rectangular
    dict(cin=2, cout=2, k=(3, 5), stride=(2, 1), padding=0, dilation=(2, 1), groups=2, bias=False),
]


def make(s: dict, **kw) -> WindowedConv2d:
    return WindowedConv2d(s["cin"], s["cout"], s["k"], s["stride"], s["padding"], s["dilation"], s["groups"],
                          s["bias"], **kw)


def kernel_hw(k) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else k


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: f"k{s['k']}-s{s['stride']}-d{s['dilation']}-g{s['groups']}-b{s['bias']}")
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_reference(s, training):
    torch.manual_seed(0)
    conv = make(s).train(training)
    x = torch.randn(2, s["cin"], 11, 12)
    win = hamming2d(*kernel_hw(s["k"]))
    torch.testing.assert_close(conv.window, win, rtol=0, atol=0)
    out = conv(x)
    ref = reference(conv, x, win)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL)
    # and really differs from the unwindowed convolution
    plain = F.conv2d(x, conv.weight.detach(), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_default_window_is_hamming_and_window_buffer_in_state_dict():
    conv = WindowedConv2d(1, 1, 7)
    assert conv.window_spec == WindowSpec(name="hamming")
    sd = conv.state_dict()
    assert set(sd) == {"weight", "bias", "window"}
    torch.testing.assert_close(sd["window"], hamming2d(7, 7), rtol=0, atol=0)
    assert "window=hamming" in repr(conv)


@pytest.mark.parametrize("window,ref_2d", [
    ({"name": "kaiser", "beta": 8}, lambda k: np.outer(np.kaiser(k, 8), np.kaiser(k, 8))),
    ({"name": "hamming", "sqrt": True}, lambda k: np.sqrt(np.outer(np.hamming(k), np.hamming(k)))),
    ("none", lambda k: np.ones((k, k))),
])
def test_forward_other_windows(window, ref_2d):
    torch.manual_seed(1)
    conv = WindowedConv2d(2, 3, 5, padding=2, window=window)
    x = torch.randn(1, 2, 9, 9)
    win = torch.tensor(ref_2d(5), dtype=torch.float32)
    torch.testing.assert_close(conv(x), reference(conv, x, win), rtol=0, atol=ATOL)


def test_float64():
    torch.manual_seed(2)
    conv = WindowedConv2d(2, 3, 3, padding=1, dtype=torch.float64)
    assert conv.window.dtype == torch.float64
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(conv(x), reference(conv, x, hamming2d(3, 3, torch.float64)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("s", [SETTINGS[1], SETTINGS[4], SETTINGS[6]], ids=["stride2", "groups2", "rect"])
def test_gradients_match_autograd_reference(s):
    torch.manual_seed(3)
    conv = make(s).train()
    x = torch.randn(2, s["cin"], 9, 10, requires_grad=True)
    win = hamming2d(*kernel_hw(s["k"]))
    out = conv(x)
    g = torch.randn_like(out)
    (out * g).sum().backward()

    w_ref = conv.weight.detach().clone().requires_grad_(True)
    b_ref = None if conv.bias is None else conv.bias.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    out_ref = F.conv2d(x_ref, w_ref * win, b_ref, conv.stride, conv.padding, conv.dilation, conv.groups)
    (out_ref * g).sum().backward()

    assert conv.weight.grad is not None
    torch.testing.assert_close(conv.weight.grad, w_ref.grad, rtol=0, atol=ATOL)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=ATOL)
    if b_ref is not None:
        torch.testing.assert_close(conv.bias.grad, b_ref.grad, rtol=0, atol=ATOL)
    # chain rule by hand: d/dW of (W*win) = grad_wrt_windowed_weight * win -> zero where win is ~0
    corner = conv.weight.grad[..., 0, 0].abs().max()
    centre = conv.weight.grad[..., kernel_hw(s["k"])[0] // 2, kernel_hw(s["k"])[1] // 2].abs().max()
    assert corner < centre


# ---------------------------------------------------------------- eval-mode cache


def test_eval_no_grad_reuses_cached_windowed_weight():
    torch.manual_seed(4)
    conv = WindowedConv2d(2, 3, 5, padding=2).eval()
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        y1 = conv(x)
        w1 = conv.windowed_weight()
        y2 = conv(x)
        w2 = conv.windowed_weight()
    assert w1 is w2
    assert torch.equal(y1, y2)
    torch.testing.assert_close(w1, conv.weight.detach() * hamming2d(5, 5), rtol=0, atol=0)
    torch.testing.assert_close(y1, reference(conv, x, hamming2d(5, 5)), rtol=0, atol=ATOL)


def test_eval_frozen_weight_reuses_cache_and_input_grad_flows():
    # the attack setting: eval mode, weights frozen, gradient wrt the input
    torch.manual_seed(5)
    conv = WindowedConv2d(2, 3, 3, padding=1).eval()
    conv.requires_grad_(False)
    w1 = conv.windowed_weight()
    assert conv.windowed_weight() is w1
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    conv(x).square().sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    F.conv2d(x_ref, conv.weight * hamming2d(3, 3), conv.bias, 1, 1).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=ATOL)


def test_train_mode_and_grad_enabled_do_not_cache():
    conv = WindowedConv2d(2, 3, 3).train()
    w1, w2 = conv.windowed_weight(), conv.windowed_weight()
    assert w1 is not w2
    assert w1.requires_grad and w1.grad_fn is not None
    conv.eval()
    w3, w4 = conv.windowed_weight(), conv.windowed_weight()  # eval, grad enabled, weight requires grad
    assert w3 is not w4
    assert w3.grad_fn is not None
    with torch.no_grad():  # train mode never caches, even without grad
        conv.train()
        assert conv.windowed_weight() is not conv.windowed_weight()


def _check_cache_refreshed(conv: WindowedConv2d, x: torch.Tensor, update) -> None:
    conv.eval()
    with torch.no_grad():
        y_before = conv(x)
        w_before = conv.windowed_weight()
    update(conv)
    conv.eval()
    with torch.no_grad():
        y_after = conv(x)
        w_after = conv.windowed_weight()
    assert w_after is not w_before
    assert not torch.allclose(y_before, y_after, atol=1e-3)
    torch.testing.assert_close(y_after, reference(conv, x, hamming2d(3, 3)), rtol=0, atol=ATOL)
    conv.train()
    torch.testing.assert_close(conv(x).detach(), reference(conv, x, hamming2d(3, 3)), rtol=0, atol=ATOL)


def test_cache_refreshed_after_inplace_update_under_no_grad():
    torch.manual_seed(6)
    conv = WindowedConv2d(2, 3, 3, padding=1)

    def update(c):
        with torch.no_grad():
            c.weight.add_(1.0)

    _check_cache_refreshed(conv, torch.randn(1, 2, 6, 6), update)


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_cache_refreshed_after_optimizer_step(opt_cls):
    torch.manual_seed(7)
    conv = WindowedConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 6, 6)
    opt = opt_cls(conv.parameters(), lr=0.5)

    def update(c):
        c.train()
        opt.zero_grad()
        c(x).sum().backward()
        opt.step()

    _check_cache_refreshed(conv, x, update)


def test_cache_refreshed_after_load_state_dict():
    torch.manual_seed(8)
    conv = WindowedConv2d(2, 3, 3, padding=1)
    other = WindowedConv2d(2, 3, 3, padding=1)

    def update(c):
        c.load_state_dict(other.state_dict())

    _check_cache_refreshed(conv, torch.randn(1, 2, 6, 6), update)
    torch.testing.assert_close(conv.weight, other.weight, rtol=0, atol=0)


def test_cache_refreshed_after_inplace_update_via_data_and_explicit_clear():
    # writes through .data bypass the version counter (by PyTorch's design); clear_window_cache() is the remedy
    torch.manual_seed(9)
    conv = WindowedConv2d(2, 3, 3, padding=1)

    def update(c):
        c.weight.data.add_(1.0)
        c.clear_window_cache()

    _check_cache_refreshed(conv, torch.randn(1, 2, 6, 6), update)


def test_effective_kernel():
    conv = WindowedConv2d(1, 2, 3)
    torch.testing.assert_close(effective_kernel(conv), conv.weight.detach() * hamming2d(3, 3), rtol=0, atol=0)
    assert not effective_kernel(conv).requires_grad
    plain = nn.Conv2d(1, 2, 3)
    torch.testing.assert_close(effective_kernel(plain), plain.weight.detach(), rtol=0, atol=0)


# ---------------------------------------------------------------- from_conv / windowize


def test_from_conv_copies_weights_and_geometry():
    torch.manual_seed(10)
    conv = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, bias=True)
    new = WindowedConv2d.from_conv(conv, "hamming")
    assert (new.kernel_size, new.stride, new.padding, new.dilation, new.groups) == \
        (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups)
    torch.testing.assert_close(new.weight, conv.weight, rtol=0, atol=0)
    torch.testing.assert_close(new.bias, conv.bias, rtol=0, atol=0)
    assert new.weight.data_ptr() != conv.weight.data_ptr()  # a copy, not shared
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(new(x), reference(conv, x, hamming2d(3, 5)), rtol=0, atol=ATOL)


def toy_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),          # windowed
        nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 5, stride=2, padding=2),            # windowed
        nn.Conv2d(8, 16, 1, stride=2),                      # 1x1: left alone
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU()),  # nested depthwise: windowed
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


def test_windowize_toy_sequential():
    torch.manual_seed(11)
    model = toy_model()
    originals = {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    types_before = {name: type(m) for name, m in model.named_modules()}
    x = torch.randn(2, 3, 16, 16)
    out = windowize(model, "hamming")
    assert out is model
    assert isinstance(model[0], WindowedConv2d)
    assert isinstance(model[3], WindowedConv2d)
    assert type(model[4]) is nn.Conv2d
    assert isinstance(model[5][0], WindowedConv2d)
    assert count_windowed(model) == 3
    assert sum(isinstance(m, WindowedConv2d) for m in model.modules()) == 3
    # non-conv modules keep their type
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d):
            assert type(m) is types_before[name], name
    # raw weights unchanged
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            torch.testing.assert_close(m.weight, originals[name], rtol=0, atol=0)
    # the output equals a manual reference forward with hamming-windowed kernels
    model.eval()
    h = F.conv2d(x, originals["0"] * hamming2d(3, 3), None, 1, 1)
    h = F.relu(model[1](h))
    h = F.conv2d(h, originals["3"] * hamming2d(5, 5), model[3].bias, 2, 2)
    h = F.conv2d(h, originals["4"], model[4].bias, 2)
    h = F.relu(F.conv2d(h, originals["5.0"] * hamming2d(3, 3), model[5][0].bias, 1, 1, 1, 16))
    h = model[8](h.mean(dim=(2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), h.detach(), rtol=0, atol=ATOL)


def test_windowize_none_window_is_noop():
    model = toy_model()
    before = [(name, m) for name, m in model.named_modules()]
    assert windowize(model, "none") is model
    assert windowize(model, None) is model
    after = [(name, m) for name, m in model.named_modules()]
    assert len(before) == len(after)
    assert all(n1 == n2 and m1 is m2 for (n1, m1), (n2, m2) in zip(before, after))
    assert count_windowed(model) == 0
    assert not any(isinstance(m, WindowedConv2d) for m in model.modules())


def test_windowize_kernel_size_with_none_window():
    model = windowize(toy_model(), "none", kernel_size=7)
    convs = [m for m in model.modules() if isinstance(m, WindowedConv2d)]
    assert len(convs) == 3
    assert all(c.kernel_size == (7, 7) and c.padding == (3, 3) for c in convs)
    assert count_windowed(model) == 0  # 'none' windows are not counted
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_windowize_twice_replaces_window_and_keeps_weights():
    torch.manual_seed(12)
    model = windowize(toy_model(), "hamming")
    w0 = model[0].weight.detach().clone()
    windowize(model, {"name": "kaiser", "beta": 5})
    assert count_windowed(model) == 3
    assert model[0].window_spec == WindowSpec(name="kaiser", params={"beta": 5.0})
    torch.testing.assert_close(model[0].weight, w0, rtol=0, atol=0)
    torch.testing.assert_close(model[0].window, torch.tensor(np.outer(np.kaiser(3, 5), np.kaiser(3, 5)),
                                                             dtype=torch.float32), rtol=0, atol=0)


def numpy_standardized(w: np.ndarray, eps: float, gain: np.ndarray | None = None) -> np.ndarray:
    """Weight standardisation by hand: per output filter, zero mean and unit (biased) variance."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    out = (flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + eps)
    if gain is not None:
        out = out * gain.reshape(-1, 1)
    return out.reshape(w.shape)


@pytest.mark.parametrize("cls_name", ["StdConv2d", "ScaledStdConv2d"])
def test_windowize_weight_standardized_conv_windows_the_standardized_kernel(cls_name):
    from timm import layers

    torch.manual_seed(13)
    conv = getattr(layers, cls_name)(3, 4, 5, padding=2)
    if cls_name == "ScaledStdConv2d":
        with torch.no_grad():
            conv.gain.copy_(torch.rand(4, 1, 1, 1) + 0.5)
    model = nn.Sequential(conv, nn.Conv2d(4, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    raw = conv.weight.detach().numpy().copy()
    gain = None if cls_name == "StdConv2d" else (conv.gain.detach().numpy().ravel() * conv.scale)
    windowize(model, "hamming")
    assert isinstance(model[0], getattr(layers, cls_name)) and count_windowed(model) == 1
    expected = numpy_standardized(raw, conv.eps, gain) * np.outer(np.hamming(5), np.hamming(5))
    np.testing.assert_allclose(effective_kernel(model[0]).numpy(), expected, rtol=0, atol=1e-5)
    # windowing before the standardisation would leave the filter mean's offset on the border instead
    before = numpy_standardized(raw * np.outer(np.hamming(5), np.hamming(5)), conv.eps, gain)
    corners = (..., [0, 0, -1, -1], [0, -1, 0, -1])
    assert np.abs(before[corners]).mean() > 5 * np.abs(expected[corners]).mean()
    ref = F.conv2d(x, torch.tensor(expected, dtype=torch.float32), conv.bias, 1, 2)
    torch.testing.assert_close(model[0](x), ref, rtol=0, atol=1e-5)
    model(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert "0.window" in model.state_dict()
    with pytest.raises(TypeError, match=f"cannot resize {cls_name}"):
        windowize(nn.Sequential(getattr(layers, cls_name)(3, 4, 3, padding=1)), "hamming", kernel_size=5)


def test_windowize_other_conv_subclass_uses_parametrization():
    from timm.layers import Conv2dSame

    torch.manual_seed(13)
    model = nn.Sequential(Conv2dSame(3, 4, 3), nn.Conv2d(4, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    raw = model[0].weight.detach().clone()
    windowize(model, "hamming")
    assert type(model[0]) is not WindowedConv2d  # kept, parametrized
    assert count_windowed(model) == 1
    torch.testing.assert_close(model[0].weight, raw * hamming2d(3, 3), rtol=0, atol=1e-7)
    # Conv2dSame pads 1 on each side for a 3x3 stride-1 kernel: same as F.conv2d with padding 1
    torch.testing.assert_close(model[0](x), F.conv2d(x, raw * hamming2d(3, 3), model[0].bias, 1, 1), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- windowize on timm resnet18


@pytest.fixture(scope="module")
def timm():
    import timm as timm_module
    return timm_module


def _conv_census(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_windowize_timm_resnet18(timm):
    torch.manual_seed(14)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    before = _conv_census(model)
    big = {n for n, m in before.items() if max(m.kernel_size) > 1}
    ones = {n for n, m in before.items() if max(m.kernel_size) == 1}
    # resnet18: stem 7x7 + 4 stages x 2 blocks x 2 3x3 convs = 17; 3 downsample 1x1 projections
    assert len(big) == 17 and len(ones) == 3
    raw = {n: m.weight.detach().clone() for n, m in before.items()}
    windowize(model, "hamming")
    after = _conv_census(model)
    assert set(after) == set(before)
    for n in big:
        assert isinstance(after[n], WindowedConv2d), n
        assert after[n].kernel_size == before[n].kernel_size
        assert after[n].stride == before[n].stride and after[n].padding == before[n].padding
        torch.testing.assert_close(after[n].weight, raw[n], rtol=0, atol=0)
    for n in ones:
        assert type(after[n]) is nn.Conv2d, n
        assert after[n] is before[n]
    assert count_windowed(model) == 17
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_windowize_timm_resnet18_kernel_size_7(timm):
    torch.manual_seed(15)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    before = {n: (m.kernel_size, m.stride) for n, m in _conv_census(model).items()}
    windowize(model, "hamming", kernel_size=7)
    after = _conv_census(model)
    n_big = 0
    for n, (k, stride) in before.items():
        m = after[n]
        assert m.stride == stride, n
        if max(k) > 1:
            n_big += 1
            assert isinstance(m, WindowedConv2d)
            assert m.kernel_size == (7, 7) and m.padding == (3, 3)
            assert m.weight.shape[-2:] == (7, 7)
        else:
            assert type(m) is nn.Conv2d and m.kernel_size == (1, 1)
    assert n_big == 17
    assert count_windowed(model) == 17
    assert [m.stride for n, m in after.items() if max(before[n][0]) > 1].count((2, 2)) == 4  # stem + 3 stages
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    grads = [m.weight.grad for m in model.modules() if isinstance(m, WindowedConv2d)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_windowize_timm_none_is_unchanged(timm):
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    before = _conv_census(model)
    assert windowize(model, "none", kernel_size=None) is model
    after = _conv_census(model)
    assert all(after[n] is before[n] and type(after[n]) is nn.Conv2d for n in before)
    assert count_windowed(model) == 0


def test_count_windowed():
    assert count_windowed(nn.Sequential(nn.Conv2d(1, 1, 3))) == 0
    model = nn.Sequential(WindowedConv2d(1, 1, 3), WindowedConv2d(1, 1, 3, window="none"),
                          nn.Sequential(WindowedConv2d(1, 1, 5, window="kaiser")), nn.Conv2d(1, 1, 3))
    assert count_windowed(model) == 2
    # 'none' with a normalisation is not the identity and counts
    assert count_windowed(nn.Sequential(WindowedConv2d(1, 1, 3, window={"name": "none", "normalize": "mean"}))) == 1
