"""The model zoo: every registered name from YAML, the official architectures, the port's parameter
counts (seed 002, REFERENCE.md section 2), windowized timm families, spectral nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from robustbench_leak.config import load_config
from robustbench_leak.data import dataset_shape
from robustbench_leak.models import count_flops, count_params, create_model, list_models
from robustbench_leak.nn import FactorizedConv2d, SpectralConv2d, SpectralPool2d, WindowedConv2d, count_windowed

# tiny options for every registered name: a new registration must add itself here
TINY = {
    "tomen_cnn": {"n_layers": 3, "width": 4, "kernel_size": 5, "window": "hamming"},
    "resnet18_7x7": {"width_multiplier": 0.0625, "stem": "cifar", "factorized": True, "window": "hann"},
    "resnet18_window": {"width_multiplier": 0.0625, "kernel_size": 5},
    "vgg11_bn_7x7": {"width_multiplier": 0.0625, "small_input": True, "window": {"name": "kaiser", "beta": 8}},
    "vgg11_bn_window": {"width_multiplier": 0.0625, "small_input": True},
    "spectral_generic": {"width_multiplier": 0.0625, "image_size": 16, "freq_dropout": [0.5, 1.0]},
    "spectral_deep": {"width_multiplier": 0.0625, "kernel_size": 5},
    "timm": {"window": "hamming", "small_stem": True, "timm_kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}},
}


def yaml_options(options: dict) -> str:
    import json

    return json.dumps(options)  # JSON is YAML


def test_every_registered_name_builds_from_yaml_and_trains_one_step(tmp_path):
    names = [e.name for e in list_models()]
    assert sorted(names) == sorted(TINY), "add new registrations to TINY"
    entries = "\n".join(
        f"  - name: m-{n}\n    arch: {'timm:resnet18' if n == 'timm' else n}\n    options: {yaml_options(o)}"
        for n, o in TINY.items())
    path = tmp_path / "zoo.yaml"
    path.write_text(f"name: zoo\ndevice: cpu\ndatasets:\n  - name: synthetic\n    image_size: 16\n"
                    f"    channels: 3\nmodels:\n{entries}\n")
    config = load_config(path)
    in_chans, num_classes, size = dataset_shape("synthetic", {"image_size": 16, "channels": 3})
    assert (in_chans, num_classes, size) == (3, 10, 16)
    for m in config.run.models:
        torch.manual_seed(0)
        net = create_model(m.arch, num_classes, in_chans, **m.options).train()
        x = torch.rand(2, in_chans, size, size)
        out = net(x)
        assert out.shape == (2, num_classes), m.name
        loss = nn.functional.cross_entropy(out, torch.tensor([1, 2]))
        loss.backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads), m.name
        assert sum(float(g.abs().sum()) for g in grads) > 0, m.name


# ----------------------------------------------------------------------- ResNet-18 (official and port)


def hand_count_resnet18(widths: list[int], k: int, k_stem: int, in_chans: int, classes: int,
                        factorized: bool = False) -> int:
    """Parameters of a BasicBlock ResNet-18 counted from its definition (convs without bias)."""
    def conv(cin: int, cout: int, kk: int) -> int:
        return (cin * cout * kk + cout * cout * kk) if factorized and kk > 1 else cin * cout * kk * kk

    total = conv(in_chans, widths[0], k_stem) + 2 * widths[0]  # stem + BN
    cin = widths[0]
    for i, w in enumerate(widths):
        total += conv(cin, w, k) + 2 * w + conv(w, w, k) + 2 * w  # block 1
        if i > 0:
            total += cin * w + 2 * w  # 1x1 downsample + BN
        total += 2 * (conv(w, w, k) + 2 * w)  # block 2
        cin = w
    return total + cin * classes + classes


# The port's CIFAR-10 ResNet-18 (seed 002 tables, "weights(K)"): 3x3 stem stride 1, no max-pool, every
# 3x3 conv (the stem included) replaced; width multiplier floors the channel counts.
PORT = [
    # options, seed-002 count in thousands, channels after int(c * wm)
    ({"kernel_size": 3}, 11_173, [64, 128, 256, 512]),
    ({"kernel_size": 3, "factorized": True}, 8_039, [64, 128, 256, 512]),
    ({"kernel_size": 7}, 60_005, [64, 128, 256, 512]),
    ({"kernel_size": 7, "window": {"name": "hamming", "sqrt": True}}, 60_005, [64, 128, 256, 512]),
    ({"kernel_size": 7, "width_multiplier": 0.4375}, 11_491, [28, 56, 112, 224]),
    ({"kernel_size": 7, "width_multiplier": 0.4375, "window": {"name": "hamming", "sqrt": True}}, 11_491,
     [28, 56, 112, 224]),
    ({"kernel_size": 7, "width_multiplier": 0.78125, "factorized": True}, 11_300, [50, 100, 200, 400]),
]


@pytest.mark.parametrize("options,port_k,widths", PORT, ids=lambda v: str(v))
def test_port_parameter_counts(options, port_k, widths):
    with torch.device("meta"):
        net = create_model("resnet18_7x7", num_classes=10, in_chans=3, stem="cifar", **options)
    k = options["kernel_size"]
    hand = hand_count_resnet18(widths, k, k, 3, 10, options.get("factorized", False))
    assert count_params(net) == hand
    assert hand // 1000 == port_k  # the seed's table, in thousands


def test_port_matched_pair_within_two_percent_of_its_counts():
    # issue 3: 7x7 Hamming at width 0.4375 vs 3x3 ResNet-18: 11.49M vs 11.17M (seed 002)
    with torch.device("meta"):
        wide = create_model("resnet18_7x7", 10, 3, stem="cifar", kernel_size=7, width_multiplier=0.4375,
                            window={"name": "hamming", "sqrt": True})
        base = create_model("resnet18_7x7", 10, 3, stem="cifar", kernel_size=3)
    assert abs(count_params(wide) / 11.49e6 - 1) < 0.02 and abs(count_params(base) / 11.17e6 - 1) < 0.02
    assert count_params(wide) == 11_491_462 and count_params(base) == 11_173_962  # the hand counts above


def test_resnet18_3x3_is_torchvision_resnet18():
    torch.manual_seed(0)
    ours = create_model("resnet18_7x7", num_classes=10, in_chans=3, kernel_size=3)
    ref = torchvision.models.resnet18(num_classes=10)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert count_params(ours) == sum(p.numel() for p in ref.parameters())
    ours.load_state_dict(ref.state_dict())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,windowed", [("resnet18_7x7", False), ("resnet18_window", True)])
def test_official_imagenet_resnet18_7x7(name, windowed):
    with torch.device("meta"):
        net = create_model(name, num_classes=1000, in_chans=3)
    assert net.conv1.kernel_size == (9, 9) and net.conv1.stride == (2, 2) and net.conv1.padding == (4, 4)
    assert isinstance(net.maxpool, nn.MaxPool2d)
    block_convs = [m for n, m in net.named_modules() if n.startswith("layer") and n.endswith(("conv1", "conv2"))]
    assert len(block_convs) == 16
    assert all(c.kernel_size == (7, 7) and c.padding == (3, 3) for c in block_convs)
    downs = [m for n, m in net.named_modules() if n.endswith("downsample.0")]
    assert len(downs) == 3 and all(type(d) is nn.Conv2d and d.kernel_size == (1, 1) for d in downs)
    assert count_windowed(net) == (17 if windowed else 0)  # stem + 16 block convs; 1x1 stay plain
    assert count_params(net) == hand_count_resnet18([64, 128, 256, 512], 7, 9, 3, 1000)


def test_resnet_cifar_stem_and_factorized_layout():
    net = create_model("resnet18_7x7", 10, 3, stem="cifar", kernel_size=7, factorized=True, width_multiplier=0.125,
                       window={"name": "hamming", "sqrt": True})
    assert isinstance(net.maxpool, nn.Identity)
    assert isinstance(net.conv1, FactorizedConv2d) and net.conv1.stride == (1, 1)
    assert net.conv1.vertical.kernel_size == (7, 1) and net.conv1.horizontal.kernel_size == (1, 7)
    assert [net.layer1[0].conv1.out_channels, net.layer4[1].conv2.out_channels] == [8, 64]
    assert count_windowed(net) == 2 * 17
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 10)


# ----------------------------------------------------------------------------------------- VGG


def test_vgg11_bn_3x3_is_torchvision_vgg11_bn():
    with torch.device("meta"):
        ours = create_model("vgg11_bn_7x7", num_classes=1000, in_chans=3, kernel_size=3)
        ref = torchvision.models.vgg11_bn()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("name,windowed", [("vgg11_bn_7x7", False), ("vgg11_bn_window", True)])
def test_official_vgg11_bn_7x7(name, windowed):
    with torch.device("meta"):
        net = create_model(name, num_classes=1000, in_chans=3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    assert all(c.kernel_size == (7, 7) and c.padding == (3, 3) and c.bias is not None for c in convs)
    assert all(isinstance(c, WindowedConv2d) == windowed for c in convs)
    # convs: sum (cin * cout * 49 + cout) over A's 8 layers; BN 2 * cout; classifier 25088-4096-4096-1000
    chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    conv_p = sum(a * b * 49 + b + 2 * b for a, b in zip(chans[:-1], chans[1:]))
    fc_p = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    assert count_params(net) == conv_p + fc_p


def test_vgg_small_input_builds_on_fashion_mnist_size():
    net = create_model("vgg11_bn_7x7", 10, 1, small_input=True, width_multiplier=0.125)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4


# ------------------------------------------------------------------------------------ tomen_cnn


@pytest.mark.parametrize("width,wm,c1,c2", [(128, 0.5, 64, 128), (16, 0.75, 12, 24), (10, 0.29, 2, 5), (4, 0.1, 1, 1)])
def test_tomen_cnn_width_multiplier_floors_both_widths(width, wm, c1, c2):
    # floor(width * wm) and floor(2 * width * wm), at least 1: e.g. 10 * 0.29 = 2.9 -> 2, 20 * 0.29 = 5.8 -> 5
    net = create_model("tomen_cnn", 10, 1, n_layers=3, width=width, kernel_size=3, width_multiplier=wm)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == [c1, c2, c2]


# ------------------------------------------------------------------------------------------- timm

TIMM_FAMILIES = ["resnet18", "resnetv2_50", "regnetx_002", "convnext_atto", "mobilenetv3_small_050", "nf_resnet26"]


@pytest.mark.parametrize("name", TIMM_FAMILIES)
def test_timm_families_windowized_forward_backward(name):
    torch.manual_seed(0)
    plain = create_model(f"timm:{name}", num_classes=10, in_chans=3)
    spatial = [m for m in plain.modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1]
    grouped = [m for m in spatial if m.groups > 1]
    net = create_model(f"timm:{name}", num_classes=10, in_chans=3, window="hamming").train()
    assert count_windowed(net) == len(spatial) > 0
    if name in ("regnetx_002", "convnext_atto", "mobilenetv3_small_050"):
        assert grouped  # grouped (regnet) or depthwise convs are part of the family ...
        windowed_grouped = [m for m in net.modules() if isinstance(m, WindowedConv2d) and m.groups > 1]
        assert len(windowed_grouped) == len(grouped)  # ... and every one of them is windowed
        for m in windowed_grouped:
            kh, kw = m.kernel_size
            np.testing.assert_allclose(m.window.numpy(), np.outer(np.hamming(kh), np.hamming(kw)), rtol=0, atol=1e-7)
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------- spectral nets


@pytest.mark.parametrize("k", [3, 5])
def test_spectral_deep_layers_and_hand_count(k):
    net = create_model("spectral_deep", num_classes=10, in_chans=3, kernel_size=k)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, SpectralConv2d))]
    assert [type(c).__name__ for c in convs] == ["SpectralConv2d"] * 5 + ["Conv2d"] * 2
    assert [c.out_channels for c in convs] == [96, 96, 192, 192, 192, 192, 10]
    assert sum(isinstance(m, SpectralPool2d) for m in net.modules()) == 2
    kk = k * k  # free spectral coefficients per filter = k*k
    hand = (3 * 96 * kk + 96) + (96 * 96 * kk + 96) + (96 * 192 * kk + 192) + 2 * (192 * 192 * kk + 192) \
        + (192 * 192 + 192) + (192 * 10 + 10)
    assert count_params(net) == hand
    assert net(torch.rand(2, 3, 28, 28)).shape == (2, 10)


def test_spectral_generic_hand_count_and_max_pool_variant():
    net = create_model("spectral_generic", 10, 3, image_size=32)
    # 32 -> 16 -> 8: FC 192*8*8 -> 1024 -> 10
    hand = (3 * 96 * 9 + 96) + (96 * 192 * 9 + 192) + (192 * 64 * 1024 + 1024) + (1024 * 10 + 10)
    assert count_params(net) == hand
    spatial = create_model("spectral_generic", 10, 1, image_size=28, spectral_params=False, pool="max")
    assert not any(isinstance(m, (SpectralConv2d, SpectralPool2d)) for m in spatial.modules())
    assert sum(isinstance(m, nn.MaxPool2d) for m in spatial.modules()) == 2
    assert spatial(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # 28 -> 14 -> 7
    with pytest.raises(ValueError, match="image_size"):
        spatial(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="freq_dropout needs pool: spectral"):
        create_model("spectral_generic", 10, 1, pool="max", freq_dropout=[0.2, 1.0])


def test_flops_of_resnet_stem_by_hand():
    # CIFAR stem only matters here: compare the 3x3 and 7x7 ResNets' FLOP difference on 1x8x8 input.
    # Only the stem differs between stem_kernel_size 3 and 7 (blocks 3x3): 2 * 1 * 8 * (49 - 9) * 8 * 8
    a = create_model("resnet18_7x7", 10, 1, stem="cifar", kernel_size=3, width_multiplier=0.125)
    b = create_model("resnet18_7x7", 10, 1, stem="cifar", kernel_size=3, stem_kernel_size=7, width_multiplier=0.125)
    assert count_flops(b, (1, 8, 8)) - count_flops(a, (1, 8, 8)) == 2 * 1 * 8 * (49 - 9) * 8 * 8


def test_rbleak_list_models_prints_params_and_flops(capsys):
    from robustbench_leak.cli import main

    assert main(["list", "models", "--input-size", "1,28,28"]) == 0
    out = capsys.readouterr().out
    for e in list_models():
        assert ("timm:<name>" if e.name == "timm" else e.name) in out
    line = next(ln for ln in out.splitlines() if ln.startswith("tomen_cnn "))
    # defaults (n_layers 6, width 128, 7x7), 1 channel, 10 classes:
    # params: convs 1*128*49 + 128*256*49 + 4*256*256*49 = 14,456,960; BN 2*128 + 2*256*5 = 2,816;
    #   linear 256*10 + 10 = 2,570 -> 14,462,346
    # FLOPs (2 per MAC), 28 -> 14 after the stride-2 first conv: 2*1*128*49*196 + 2*128*256*49*196
    #   + 4 * 2*256*256*49*196 + 2*256*10 = 5,667,133,440
    assert "14,462,346" in line and "5,667,133,440" in line


def test_list_models_rejects_bad_input_size():
    from robustbench_leak.cli import main

    with pytest.raises(SystemExit):
        main(["list", "models", "--input-size", "3,x"])
