"""Loading trained weights (robustbench_leak/models/checkpoints.py): state dicts in each naming, built here
by small reference networks written after the official code's and the port's structure, must give the
reference network's outputs; mismatches list their keys; ``checkpoint:`` flows through ``rbleak run``."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from robustbench_leak.cli import main
from robustbench_leak.config import ConfigError, load_config
from robustbench_leak.data import load_dataset
from robustbench_leak.models import Normalized, create_model
from robustbench_leak.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

SQRT_HAMMING = {"name": "hamming", "sqrt": True}


class OfficialWindowConv(nn.Module):
    """After the official ``Conv2d_window``: a weight (and optional bias), no buffer; the window
    outer(hamming, hamming) is multiplied in inside forward."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) * 0.1)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1) if bias else None
        self.stride, self.padding, self.k = stride, padding, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        win = torch.tensor(np.outer(np.hamming(self.k), np.hamming(self.k)), dtype=x.dtype)
        return F.conv2d(x, self.weight * win, self.bias, self.stride, self.padding)


class PortHammingConv(nn.Module):
    """After the port's ``Conv2dHamming``: weight, no bias, buffer ``hamming2d`` = sqrt(outer(h, h))."""

    def __init__(self, cin: int, cout: int, k: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, *k) * 0.1)
        self.bias = None
        self.register_buffer("hamming2d", torch.tensor(np.sqrt(np.outer(np.hamming(k[0]), np.hamming(k[1]))),
                                                       dtype=torch.float32))
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.hamming2d, None, self.stride, self.padding)


class PortFactorized(nn.Module):
    """After the port's ``Conv2dFactorized`` with Hamming convs: ``conv1`` (k x 1) then ``conv2`` (1 x k)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv1 = PortHammingConv(cin, cout, (k, 1), (stride, 1), (padding, 0))
        self.conv2 = PortHammingConv(cout, cout, (1, k), (1, stride), (0, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def randomize_norms(net: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(5)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return net.eval()


def torchvision_resnet18(make_conv, wm: float, classes: int, cifar_stem: bool) -> nn.Module:
    """torchvision's ResNet-18 with every conv rebuilt by ``make_conv(old, cin, cout)`` and widths
    floored by ``wm`` (input channels kept), as the port's decrease_channel_width does."""
    net = torchvision.models.resnet18(num_classes=classes)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    scale = lambda c: c if c == 3 else int(c * wm)  # noqa: E731

    def rebuild(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, name, make_conv(child, scale(child.in_channels), scale(child.out_channels)))
            elif isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.BatchNorm2d(scale(child.num_features)))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, nn.Linear(scale(child.in_features), child.out_features))
            else:
                rebuild(child)

    rebuild(net)
    return randomize_norms(net)


def bare(arch: str, classes: int, chans: int, **options) -> Normalized:
    torch.manual_seed(123)  # different weights from the reference, so a load that does nothing fails
    return Normalized(create_model(arch, classes, chans, **options), (0.0,) * chans, (1.0,) * chans).eval()


# ------------------------------------------------------------------------------ official CIFAR script


def official_cifar_sequential(conv, n_layers: int, cin: int, w1: int, w2: int, classes: int) -> nn.Sequential:
    """cifar100_example.py's network: one nn.Sequential, conv-BN-ReLU per layer, then pool, flatten, linear."""
    block = [conv(cin, w1, 7, 2, 3), nn.BatchNorm2d(w1), nn.ReLU(), conv(w1, w2, 7, 1, 3), nn.BatchNorm2d(w2), nn.ReLU()]
    for _ in range(n_layers - 2):
        block += [conv(w2, w2, 7, 1, 3), nn.BatchNorm2d(w2), nn.ReLU()]
    return randomize_norms(nn.Sequential(*block, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(w2, classes)))


@pytest.mark.parametrize("window", ["none", "hamming"])
def test_official_cifar_checkpoint_loads_into_tomen_cnn(tmp_path, window):
    torch.manual_seed(0)
    plain = official_cifar_sequential(lambda a, b, k, s, p: nn.Conv2d(a, b, k, s, p, bias=False), 4, 3, 4, 8, 100)
    win = official_cifar_sequential(OfficialWindowConv, 4, 3, 4, 8, 100)
    assert "0.weight" in win.state_dict() and "14.weight" in win.state_dict()  # Linear at 3 * 4 + 2
    path = tmp_path / "model_cifar100_all_win_wd_4_layers_0.pth"
    torch.save({"state_dict": plain.state_dict(), "state_dict_win": win.state_dict(),
                "args": argparse.Namespace(seed=0, n_layers=4, save="/save_dir"),
                "training_loss": np.zeros(5), "accuracy": np.arange(100.0), "class_counter": np.ones(100)}, path)
    model = bare("tomen_cnn", 100, 3, n_layers=4, width=4, kernel_size=7, window=window)
    info = load_checkpoint(model, path)
    assert info.naming == "official-cifar"
    assert info.entry == ("state_dict_win" if window == "hamming" else "state_dict")
    ref = win if window == "hamming" else plain
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- official ImageNet scripts


def test_official_imagenet_dataparallel_checkpoint_loads_into_resnet18_window(tmp_path):
    torch.manual_seed(0)

    def official(old: nn.Conv2d, cin: int, cout: int) -> nn.Module:
        if old.kernel_size == (1, 1):
            return nn.Conv2d(cin, cout, 1, old.stride, bias=False)
        if old.in_channels == 3:  # windowed_resnet.py's stem: 9x9 stride 2 padding 4
            return OfficialWindowConv(cin, cout, 9, 2, 4)
        return OfficialWindowConv(cin, cout, 7, old.stride[0], 3)

    ref = torchvision_resnet18(official, 0.125, 10, cifar_stem=False)
    state = nn.DataParallel(ref).state_dict()
    assert next(iter(state)).startswith("module.")
    path = tmp_path / "model_best_window.pth.tar"
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state, "best_prec1": 11.5,
                "optimizer": opt.state_dict()}, path)
    model = bare("resnet18_window", 10, 3, width_multiplier=0.125)
    info = load_checkpoint(model, path)
    assert info.naming == "official" and info.entry == "state_dict"
    assert "17 window buffers taken from the model" in info.describe()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------- the port


@pytest.fixture
def lightning_attribute_dict(monkeypatch):
    """A class pickled under Lightning's name, as the port's checkpoints hold (hyper_parameters);
    the fake module is gone again when the file is read."""
    mod = types.ModuleType("pytorch_lightning.utilities.parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = mod.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    mod.AttributeDict = AttributeDict
    for name in ("pytorch_lightning", "pytorch_lightning.utilities"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return AttributeDict


class LitResnet(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


@pytest.mark.parametrize("factorized", [False, True])
def test_port_lightning_checkpoint_loads_into_resnet18_7x7(tmp_path, monkeypatch, lightning_attribute_dict,
                                                           factorized):
    torch.manual_seed(0)

    def port(old: nn.Conv2d, cin: int, cout: int) -> nn.Module:
        if old.kernel_size != (3, 3):
            return nn.Conv2d(cin, cout, old.kernel_size, old.stride, bias=False)
        if factorized:
            return PortFactorized(cin, cout, 7, old.stride[0], 3)
        return PortHammingConv(cin, cout, (7, 7), old.stride, (3, 3))

    ref = torchvision_resnet18(port, 0.125, 10, cifar_stem=True)
    state = LitResnet(ref).state_dict()
    assert "model.conv1.hamming2d" in state or "model.conv1.conv1.hamming2d" in state
    hparams = lightning_attribute_dict(kernel=7, padding=3, factorized=factorized, hamming=True, wm=0.125)
    path = tmp_path / "epoch=39.ckpt"
    torch.save({"epoch": 39, "global_step": 15640, "pytorch-lightning_version": "1.1.8", "state_dict": state,
                "hyper_parameters": hparams, "optimizer_states": [], "lr_schedulers": []}, path)
    for name in ("pytorch_lightning.utilities.parsing", "pytorch_lightning.utilities", "pytorch_lightning"):
        monkeypatch.delitem(sys.modules, name)  # reading must not need Lightning
    model = bare("resnet18_7x7", 10, 3, stem="cifar", kernel_size=7, width_multiplier=0.125, window=SQRT_HAMMING,
                 factorized=factorized)
    info = load_checkpoint(model, path)
    assert info.naming == "port"
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)

    # the same file into a model with the official (non-sqrt) window: refused, naming the fix
    wrong = bare("resnet18_7x7", 10, 3, stem="cifar", kernel_size=7, width_multiplier=0.125, window="hamming",
                 factorized=factorized)
    with pytest.raises(CheckpointError, match=r"window.*differs.*sqrt: true"):
        load_checkpoint(wrong, path)


# ------------------------------------------------------------------------------ our own formats


def test_our_checkpoint_format_and_plain_state_dicts(tmp_path):
    torch.manual_seed(0)
    src = Normalized(create_model("tomen_cnn", 10, 1, n_layers=3, width=4, kernel_size=5, window="hamming"),
                     (0.3,), (0.2,)).eval()
    randomize_norms(src.net)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        expected = src(x)
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, src, {"key": "abc"})
    wrapped = tmp_path / "wrapped.pt"
    torch.save(src.state_dict(), wrapped)
    for path in (ours, wrapped):
        model = bare("tomen_cnn", 10, 1, n_layers=3, width=4, kernel_size=5, window="hamming")
        assert load_checkpoint(model, path).naming == "robustbench-leak"
        assert model.mean.item() == pytest.approx(0.3) and model.std.item() == pytest.approx(0.2)
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
    # the bare network: the model keeps its own (dataset) normalisation
    net_only = tmp_path / "net.pt"
    torch.save(src.net.state_dict(), net_only)
    model = bare("tomen_cnn", 10, 1, n_layers=3, width=4, kernel_size=5, window="hamming")
    load_checkpoint(model, net_only)
    assert model.mean.item() == 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.net(x), rtol=0, atol=1e-6)


def test_mismatch_lists_keys(tmp_path):
    path = tmp_path / "w8.pt"
    torch.save(create_model("tomen_cnn", 10, 1, n_layers=3, width=8, kernel_size=3).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bare("tomen_cnn", 10, 1, n_layers=2, width=4, kernel_size=3), path)
    msg = str(info.value)
    assert str(path) in msg
    assert "shape mismatches: fc.weight: checkpoint (10, 16) vs model (10, 8)" in msg
    assert "features.0.weight: checkpoint (8, 1, 3, 3) vs model (4, 1, 3, 3)" in msg
    assert "unexpected keys: features.6.weight, features.7.bias" in msg


def test_refused_python_objects_name_the_global_and_the_fix(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "scheduler": torch.optim.lr_scheduler.StepLR}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bare("tomen_cnn", 10, 1, n_layers=2, width=2, kernel_size=3), path)
    msg = str(info.value)
    assert "torch.optim.lr_scheduler.StepLR" in msg and "weights_only=False" in msg
    with pytest.raises(CheckpointError, match="no state dict found"):
        torch.save({"epoch": 3}, tmp_path / "empty.pt")
        load_checkpoint(bare("tomen_cnn", 10, 1, n_layers=2, width=2, kernel_size=3), tmp_path / "empty.pt")


# ------------------------------------------------------------------------------ config and rbleak run

CHECKPOINT_CONFIG = """
name: loaded
device: cpu
datasets:
  - name: synthetic
    n_train: 64
    n_test: 48
    normalize: false
models:
  - name: from-file
    arch: tomen_cnn
    options: {{n_layers: 3, width: 4, kernel_size: 5, window: hamming}}
    checkpoint: {path}
attacks: [clean]
"""


def test_checkpoint_in_yaml_flows_through_rbleak_run_without_training(tmp_path, capsys):
    torch.manual_seed(0)
    net = create_model("tomen_cnn", 10, 1, n_layers=3, width=4, kernel_size=5, window="hamming")
    randomize_norms(net)
    (tmp_path / "weights").mkdir()
    torch.save(net.state_dict(), tmp_path / "weights" / "net.pt")
    config = tmp_path / "loaded.yaml"
    config.write_text(CHECKPOINT_CONFIG.format(path="weights/net.pt"))  # relative to the config's folder
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    log = capsys.readouterr().out
    assert "[train]" not in log
    assert "[load] from-file / synthetic / seed 0: loaded " + str(tmp_path / "weights" / "net.pt") in log
    # the leaderboard's clean accuracy is the saved network's own
    data = load_dataset("synthetic", n_train=64, n_test=48)
    with torch.no_grad():
        acc = int((net.eval()(data.test_x).argmax(1) == data.test_y).sum()) / len(data.test_y)
    board = pd.read_csv(out / "leaderboard.csv")
    assert board.loc[0, "model"] == "from-file"
    assert board.loc[0, "clean.accuracy"] == pytest.approx(acc, abs=1e-9)
    row = sqlite3.connect(out / "results.sqlite").execute("SELECT history, extra, checkpoint FROM models").fetchone()
    assert json.loads(row[0]) == []
    extra = json.loads(row[1])
    assert extra["checkpoint"] == str(tmp_path / "weights" / "net.pt") == row[2]
    assert extra["naming"] == "robustbench-leak" and len(extra["sha256"]) == 64


def test_config_checkpoint_errors(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CHECKPOINT_CONFIG.format(path="missing.pt"))
    with pytest.raises(ConfigError, match=r"models\[0\]\.checkpoint: file not found: .*missing\.pt"):
        load_config(config)
    torch.save(create_model("tomen_cnn", 10, 1, n_layers=3, width=8, kernel_size=5).state_dict(), tmp_path / "w8.pt")
    config.write_text(CHECKPOINT_CONFIG.format(path="w8.pt"))
    with pytest.raises(ConfigError, match=r"models\[0\]\.checkpoint: .*shape mismatches: .*features\.0\.weight"):
        load_config(config)
