"""Parameter and FLOP counts (PyTorch's own FLOP counter), and cheap builds for counting."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Trainable degrees of freedom: every parameter element, less the stored entries that a layer
    declares inert (``num_inert_parameters()``, e.g. the conjugate-symmetric duplicates of
    ``SpectralConv2d``); for every other model this is ``sum(p.numel())``."""
    total = sum(p.numel() for p in model.parameters())
    inert = sum(m.num_inert_parameters() for m in model.modules() if hasattr(m, "num_inert_parameters"))
    return total - inert


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on a single input of ``input_shape`` (C, H, W)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def build_for_counting(arch: str, num_classes: int, in_chans: int, options: dict[str, Any]) -> nn.Module:
    """The model on PyTorch's meta device (shapes only, no memory, no init cost); on the CPU for the
    few constructors that need real values (e.g. a ``.tolist()`` of drop-path rates)."""
    from .registry import create_model

    try:
        with torch.device("meta"):
            return create_model(arch, num_classes, in_chans, **options)
    except (NotImplementedError, RuntimeError):
        return create_model(arch, num_classes, in_chans, **options)
