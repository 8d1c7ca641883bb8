"""Any timm model by name (``timm:<name>``), built untrained and optionally windowized."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..nn import windowize
from .registry import register_model


def apply_small_stem(model: nn.Module, in_chans: int) -> None:
    """CIFAR-style stem: 3x3 stride-1 first conv and no max-pool (timm ResNet-like models)."""
    conv1 = getattr(model, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(f"small_stem is supported for models with a single 'conv1' and a 'maxpool' "
                         f"(timm ResNets); {type(model).__name__} has none")
    model.conv1 = nn.Conv2d(in_chans, conv1.out_channels, 3, 1, 1, bias=conv1.bias is not None)
    model.maxpool = nn.Identity()


@register_model("timm", family="timm")
def timm_model(num_classes: int, in_chans: int, timm_name: str = "resnet18", window: Any = "none",
               kernel_size: int | None = None, small_stem: bool = False,
               timm_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Any timm model (pretrained=False), its convs windowed and optionally resized."""
    import timm

    model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              **(timm_kwargs or {}))
    if small_stem:
        apply_small_stem(model, in_chans)
    return windowize(model, window, kernel_size)
