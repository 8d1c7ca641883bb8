"""VGG11-BN with large (optionally windowed) kernels, as in the official code (``vgg7x7.py``,
``windowed_vgg.py``): configuration "A" of torchvision's VGG with every convolution 7x7, padding 3,
bias kept, BatchNorm and ReLU after each; the windowed variant windows every convolution.

``small_input`` adapts it to 28-32 px images (the ImageNet head needs at least 32 px after five
max-pools): the last max-pool is dropped and the head is global average pooling plus one linear
layer. ``width_multiplier`` scales every width, the classifier's hidden 4096 included
(``models.width.scaled``). Parameter names follow torchvision (``features.N``, ``classifier.N``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..nn import WindowedConv2d, WindowSpec
from .registry import register_model
from .width import scaled

CFG_A: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG11BN(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, kernel_size: int = 7, window: Any = "none",
                 width_multiplier: float = 1.0, small_input: bool = False) -> None:
        super().__init__()
        spec = WindowSpec.parse(window)
        cfg = CFG_A[:-1] if small_input else CFG_A
        layers: list[nn.Module] = []
        cin = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = scaled(int(v), width_multiplier)
            if spec.is_identity:
                conv: nn.Module = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)
            else:
                conv = WindowedConv2d(cin, cout, kernel_size, padding=kernel_size // 2, window=spec)
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(cin, num_classes))
        else:
            hidden = scaled(4096, width_multiplier)
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(cin * 49, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, num_classes))
        for m in self.modules():  # torchvision's VGG initialisation, kept by the official code
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("vgg11_bn_7x7", family="vgg")
def vgg11_bn_7x7(num_classes: int, in_chans: int, kernel_size: int = 7, window: Any = "none",
                 width_multiplier: float = 1.0, small_input: bool = False) -> nn.Module:
    """VGG11-BN, every conv k x k with bias (official vgg11_bn_7x7); small_input for 28-32 px."""
    return VGG11BN(num_classes, in_chans, kernel_size, window, width_multiplier, small_input)


@register_model("vgg11_bn_window", family="vgg")
def vgg11_bn_window(num_classes: int, in_chans: int, kernel_size: int = 7, window: Any = "hamming",
                    width_multiplier: float = 1.0, small_input: bool = False) -> nn.Module:
    """vgg11_bn_7x7 with every conv Hamming-windowed (official windowed_vgg)."""
    return VGG11BN(num_classes, in_chans, kernel_size, window, width_multiplier, small_input)
