"""Clean accuracy, as an 'attack' that changes nothing, so it lives in the same grid."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..metrics import ACCURACY, accuracy
from ..runtime import predict
from .base import Attack, AttackResult, at_least, register_attack


@register_attack
class CleanAccuracy(Attack):
    kind = "clean"
    engine = "torch"
    description = "top-1 accuracy on unmodified test images"
    defaults = {"batch_size": 512}
    ranges = {"batch_size": at_least(1)}
    metrics = (ACCURACY,)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        pred = predict(model, x, device, self.params["batch_size"]).numpy()
        labels = y.numpy()
        return AttackResult({"accuracy": accuracy(pred, labels), "n": float(len(labels))},
                            {"label": labels, "clean_pred": pred, "adv_pred": pred})
