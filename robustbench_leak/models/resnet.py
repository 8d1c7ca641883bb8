"""ResNet-18 with large (optionally windowed, optionally factorised) kernels.

Official ImageNet variant (REFERENCE.md section 2, ``resnet7x7.py`` / ``windowed_resnet.py`` of the
official code): torchvision's ResNet-18 with a 9x9 stride-2 stem (padding 4), every 3x3 convolution in
the BasicBlocks turned into 7x7 (padding 3), the 1x1 downsample projections unchanged; the windowed
variant windows the stem and every block convolution.

The unofficial port's CIFAR variant (seed 002): ``stem="cifar"`` is a stride-1 stem without max-pool,
whose kernel is replaced like every other 3x3 one (the port "replaced all the 3x3 conv2d"), plus
``width_multiplier`` and ``factorized`` (k x 1 then 1 x k, ``nn.FactorizedConv2d``).

Parameter names follow torchvision (``conv1``, ``layer1.0.conv2``, ``layer2.0.downsample.0``, ``fc``),
so torchvision and official-code state dicts load by name.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn

from ..nn import FactorizedConv2d, WindowedConv2d, WindowSpec
from .registry import register_model
from .width import scaled


def spatial_conv(cin: int, cout: int, k: int, stride: int, window: WindowSpec, factorized: bool) -> nn.Module:
    """A k x k 'same' convolution without bias: plain, windowed or factorised."""
    if factorized and k > 1:
        return FactorizedConv2d(cin, cout, k, stride, k // 2, bias=False, window=window)
    if window.is_identity:
        return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
    return WindowedConv2d(cin, cout, k, stride, k // 2, bias=False, window=window)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, k: int, window: WindowSpec, factorized: bool) -> None:
        super().__init__()
        self.conv1 = spatial_conv(cin, cout, k, stride, window, factorized)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = spatial_conv(cout, cout, k, 1, window, factorized)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, kernel_size: int = 7, window: Any = "none",
                 stem: str = "imagenet", stem_kernel_size: int | None = None, width_multiplier: float = 1.0,
                 factorized: bool = False) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        spec = WindowSpec.parse(window)
        if stem_kernel_size is None:
            stem_kernel_size = max(7, kernel_size + 2) if stem == "imagenet" else kernel_size
        widths = [scaled(c, width_multiplier) for c in (64, 128, 256, 512)]
        stride = 2 if stem == "imagenet" else 1
        self.conv1 = spatial_conv(in_chans, widths[0], stem_kernel_size, stride, spec, factorized)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        cin = widths[0]
        for i, cout in enumerate(widths):
            first_stride = 1 if i == 0 else 2
            blocks = [BasicBlock(cin, cout, first_stride, kernel_size, spec, factorized),
                      BasicBlock(cout, cout, 1, kernel_size, spec, factorized)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # torchvision's initialisation (the official code and the port keep it)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("resnet18_7x7", family="resnet")
def resnet18_7x7(num_classes: int, in_chans: int, kernel_size: int = 7, window: Any = "none",
                 stem: Literal["imagenet", "cifar"] = "imagenet", stem_kernel_size: int | None = None,
                 width_multiplier: float = 1.0, factorized: bool = False) -> nn.Module:
    """ResNet-18 with k x k blocks (official 7x7: 9x9 stem; stem: cifar = the port's CIFAR ResNet)."""
    return ResNet18(num_classes, in_chans, kernel_size, window, stem, stem_kernel_size, width_multiplier, factorized)


@register_model("resnet18_window", family="resnet")
def resnet18_window(num_classes: int, in_chans: int, kernel_size: int = 7, window: Any = "hamming",
                    stem: Literal["imagenet", "cifar"] = "imagenet", stem_kernel_size: int | None = None,
                    width_multiplier: float = 1.0, factorized: bool = False) -> nn.Module:
    """resnet18_7x7 with the Hamming window on the stem and every block conv (official windowed_resnet)."""
    return ResNet18(num_classes, in_chans, kernel_size, window, stem, stem_kernel_size, width_multiplier, factorized)
