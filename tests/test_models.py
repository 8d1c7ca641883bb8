"""Model zoo (robustbench_leak/models): tomen_cnn, timm adapter, registry, wrappers, stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_leak.models import (
    Normalized,
    check_options,
    count_flops,
    count_params,
    create_model,
    get_entry,
    list_models,
)
from robustbench_leak.nn import WindowedConv2d, WindowSpec, count_windowed


def hand_param_count(c: int, w: int, n: int, k: int, k1: int, classes: int) -> int:
    """Parameters of tomen_cnn, counted by hand from its definition (no conv bias)."""
    convs = c * w * k1 * k1 + w * 2 * w * k * k + (n - 2) * (2 * w) ** 2 * k * k
    bn = 2 * w + 2 * (2 * w) * (n - 1)  # weight + bias per channel
    linear = 2 * w * classes + classes
    return convs + bn + linear


def test_hand_count_of_official_cifar100_network():
    # 3*128*49 = 18816; 128*256*49 = 1605632; 4*256^2*49 = 12845056 -> convs 14469504
    # BN 2*128 + 2*256*5 = 2816; linear 256*100 + 100 = 25700 -> 14498020
    assert hand_param_count(3, 128, 6, 7, 7, 100) == 14469504 + 2816 + 25700 == 14498020


@pytest.mark.parametrize("window", ["none", "hamming"])
def test_official_cifar100_param_count(window):
    model = create_model("tomen_cnn", num_classes=100, in_chans=3, n_layers=6, width=128, kernel_size=7,
                         window=window)
    assert count_params(model) == hand_param_count(3, 128, 6, 7, 7, 100)
    assert count_params(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("c,w,n,k,k1,classes", [
    (1, 4, 3, 5, 3, 10),
    (3, 8, 2, 3, 7, 7),
    (1, 6, 4, 9, 9, 10),
])
def test_small_param_count(c, w, n, k, k1, classes):
    model = create_model("tomen_cnn", num_classes=classes, in_chans=c, n_layers=n, width=w, kernel_size=k,
                         first_kernel_size=k1, window="hamming")
    assert count_params(model) == hand_param_count(c, w, n, k, k1, classes)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n
    assert convs[0].kernel_size == (k1, k1) and convs[0].padding == (k1 // 2, k1 // 2)
    assert all(cv.kernel_size == (k, k) and cv.padding == (k // 2, k // 2) for cv in convs[1:])
    assert all(cv.bias is None for cv in convs)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_tomen_cnn_output_shape(in_chans):
    torch.manual_seed(0)
    model = create_model("tomen_cnn", num_classes=10, in_chans=in_chans, n_layers=3, width=4, kernel_size=5)
    out = model(torch.rand(2, in_chans, 28, 28))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    with pytest.raises(RuntimeError):
        model(torch.rand(2, 3 if in_chans == 1 else 1, 28, 28))  # wrong channel count


def test_tomen_cnn_defaults_are_the_paper_network():
    entry = get_entry("tomen_cnn")
    assert entry.options() == {"n_layers": 6, "width": 128, "kernel_size": 7, "first_kernel_size": None,
                               "window": "none", "first_stride": 2, "width_multiplier": 1.0}


@pytest.mark.parametrize("window,windowed", [
    ("none", False), ("hamming", True), ({"name": "kaiser", "beta": 8}, True),
    ({"name": "none", "normalize": "none"}, False),
])
def test_convs_are_windowed_exactly_when_window_not_none(window, windowed):
    model = create_model("tomen_cnn", num_classes=10, in_chans=1, n_layers=3, width=4, kernel_size=5,
                         window=window)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    if windowed:
        assert all(isinstance(cv, WindowedConv2d) for cv in convs)
        assert all(cv.window_spec == WindowSpec.parse(window) for cv in convs)
        assert count_windowed(model) == 3
    else:
        assert all(type(cv) is nn.Conv2d for cv in convs)
        assert count_windowed(model) == 0


def test_tomen_cnn_windowed_forward_equals_manual_reference():
    torch.manual_seed(1)
    model = create_model("tomen_cnn", num_classes=5, in_chans=1, n_layers=2, width=3, kernel_size=3,
                         first_kernel_size=5, window="hamming").eval()
    x = torch.rand(2, 1, 12, 12)
    f = model.features
    win5 = torch.tensor(np.outer(np.hamming(5), np.hamming(5)), dtype=torch.float32)
    win3 = torch.tensor(np.outer(np.hamming(3), np.hamming(3)), dtype=torch.float32)
    h = F.relu(f[1](F.conv2d(x, f[0].weight * win5, None, 2, 2)))
    h = F.relu(f[4](F.conv2d(h, f[3].weight * win3, None, 1, 1)))
    ref = model.fc(h.mean(dim=(2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.detach(), rtol=0, atol=1e-5)


def test_first_layer_stride_2_rest_stride_1():
    model = create_model("tomen_cnn", num_classes=10, in_chans=3, n_layers=4, width=4, kernel_size=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].stride == (2, 2)
    assert all(cv.stride == (1, 1) for cv in convs[1:])
    assert [cv.out_channels for cv in convs] == [4, 8, 8, 8]
    # spatial size: 32 -> 16 after the first layer, then 'same' convolutions
    assert model.features(torch.rand(1, 3, 32, 32)).shape == (1, 8, 16, 16)
    m1 = create_model("tomen_cnn", num_classes=10, in_chans=3, n_layers=2, width=4, kernel_size=3, first_stride=1)
    assert m1.features(torch.rand(1, 3, 32, 32)).shape == (1, 8, 32, 32)


def test_tomen_cnn_rejects_one_layer():
    with pytest.raises(ValueError, match="n_layers: Input should be greater than or equal to 2"):
        create_model("tomen_cnn", num_classes=10, in_chans=1, n_layers=1)


# ---------------------------------------------------------------- registry


def test_unknown_model_name_lists_known_models():
    with pytest.raises(KeyError) as info:
        create_model("tomen_cn", num_classes=10, in_chans=1)
    msg = str(info.value)
    assert "unknown model 'tomen_cn'" in msg
    assert "tomen_cnn" in msg and "timm:<any timm model name>" in msg
    with pytest.raises(KeyError, match="unknown model 'timm'"):
        get_entry("timm")


def test_list_models_contains_registered():
    names = [e.name for e in list_models()]
    assert names == sorted(names)
    assert {"tomen_cnn", "timm"} <= set(names)


def test_unknown_option_raises_value_error_listing_allowed():
    with pytest.raises(ValueError) as info:
        create_model("tomen_cnn", num_classes=10, in_chans=1, kernel=7)
    msg = str(info.value)
    assert "no option 'kernel'" in msg
    for opt in ("n_layers", "width", "kernel_size", "first_kernel_size", "window", "first_stride"):
        assert opt in msg
    with pytest.raises(ValueError, match="no option 'a', 'b'"):
        check_options("tomen_cnn", {"b": 1, "a": 2, "width": 3})
    check_options("tomen_cnn", {"width": 3, "window": "hamming"})  # valid: no error
    with pytest.raises(ValueError, match="no option 'timm_name'"):
        check_options("timm:resnet18", {"timm_name": "resnet50"})
    with pytest.raises(ValueError, match="allowed: window, kernel_size, small_stem, timm_kwargs"):
        check_options("timm:resnet18", {"depth": 3})


def test_timm_resnet18_windowed_small_stem():
    torch.manual_seed(2)
    model = create_model("timm:resnet18", num_classes=10, in_chans=3, window="hamming", small_stem=True)
    assert isinstance(model.conv1, WindowedConv2d)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 64
    assert isinstance(model.maxpool, nn.Identity)
    assert count_windowed(model) == 17  # stem + 16 block convs; 3 downsample 1x1 stay plain
    assert sum(type(m) is nn.Conv2d for m in model.modules()) == 3
    out = model(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 10)


def test_timm_resnet18_plain_and_kernel_size():
    plain = create_model("timm:resnet18", num_classes=7, in_chans=1)
    assert count_windowed(plain) == 0
    assert type(plain.conv1) is nn.Conv2d and plain.conv1.kernel_size == (7, 7) and plain.conv1.in_channels == 1
    assert isinstance(plain.maxpool, nn.MaxPool2d)
    big = create_model("timm:resnet18", num_classes=7, in_chans=1, window="hamming", kernel_size=5, small_stem=True)
    assert big.conv1.kernel_size == (5, 5) and big.conv1.padding == (2, 2) and big.conv1.stride == (1, 1)
    assert big.layer1[0].conv1.kernel_size == (5, 5)


def test_unknown_timm_name_raises_key_error():
    with pytest.raises(KeyError, match="unknown timm model 'resnet_does_not_exist'"):
        create_model("timm:resnet_does_not_exist", num_classes=10, in_chans=3)
    with pytest.raises(KeyError, match="unknown timm model ''"):
        get_entry("timm:")


# ---------------------------------------------------------------- wrappers and stats


def test_normalized_wrapper():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    model = Normalized(net, mean, std)
    x = torch.rand(2, 3, 6, 6)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), net((x - m) / s), rtol=0, atol=1e-6)
    # per-channel: pixel (c, 0, 0) maps to (x - mean[c]) / std[c]
    ident = Normalized(nn.Identity(), mean, std)
    y = ident(x)
    for c in range(3):
        torch.testing.assert_close(y[:, c], (x[:, c] - mean[c]) / std[c], rtol=0, atol=1e-6)
    assert set(dict(model.named_buffers())) == {"mean", "std"}
    assert count_params(model) == count_params(net)


def test_normalized_single_channel():
    y = Normalized(nn.Identity(), (0.5,), (0.25,))(torch.full((1, 1, 2, 2), 1.0))
    # (1 - 0.5) / 0.25 = 2
    torch.testing.assert_close(y, torch.full((1, 1, 2, 2), 2.0))


@pytest.mark.parametrize("cin,cout,k,stride,pad,hw", [
    (3, 8, 5, 2, 1, 16),
    (1, 4, 7, 1, 3, 12),
    (2, 6, 3, 1, 0, 9),
])
@pytest.mark.parametrize("windowed", [False, True])
def test_count_flops_single_conv(cin, cout, k, stride, pad, hw, windowed):
    cls = WindowedConv2d if windowed else nn.Conv2d
    model = nn.Sequential(cls(cin, cout, k, stride, pad, bias=False))
    h_out = (hw + 2 * pad - k) // stride + 1
    expected = 2 * cin * cout * k * k * h_out * h_out  # one multiply + one add per MAC
    model.train()
    assert count_flops(model, (cin, hw, hw)) == expected
    assert model.training  # restored


def test_count_flops_tomen_cnn_hand_formula():
    # n=2, w=2, k=3, first stride 2, input (1, 8, 8): conv1 8->4 spatial: 2*1*2*9*16 = 576;
    # conv2 4x4: 2*2*4*9*16 = 2304; linear 4->3: 2*4*3 = 24 (BN, pool, ReLU not counted)
    model = create_model("tomen_cnn", num_classes=3, in_chans=1, n_layers=2, width=2, kernel_size=3)
    assert count_flops(model, (1, 8, 8)) == 576 + 2304 + 24
