"""Adapters for IBM's Adversarial Robustness Toolbox (ART), the reference implementations.

Models take images in [0, 1] (normalisation lives inside the model), so every ART estimator is built
with ``clip_values=(0, 1)`` and no preprocessing; DeepFool scales its step by that clip range.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn

from ..metrics import MIN_NORM_METRICS, ROBUST_ACCURACY, perturbation_metrics, prediction_metrics
from ..runtime import predict
from .base import Attack, AttackResult, Range, at_least, check_grid, register_attack
from .native_spatial import CHOSEN_TRANSFORM


class ChannelsLast(nn.Module):
    """Feeds NHWC input to an NCHW model, so ART can be handed channels-last arrays."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def art_classifier(model: nn.Module, input_shape: tuple[int, ...], nb_classes: int, device: torch.device,
                   channels_first: bool = True):
    """An ART ``PyTorchClassifier`` over ``model`` on ``device`` (inputs in [0, 1])."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=input_shape,
                             nb_classes=nb_classes, clip_values=(0.0, 1.0), channels_first=channels_first,
                             device_type="gpu" if device.type == "cuda" else "cpu")


def _quiet_art() -> None:
    logging.getLogger("art").setLevel(logging.WARNING)


def num_classes_of(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    with torch.no_grad():
        return int(model(x[:1].to(device)).shape[1])


@register_attack
class ArtDeepFool(Attack):
    kind = "deepfool"
    engine = "art"
    minimum_norm = True
    description = "DeepFool (white-box, minimum L2), ART's implementation"
    defaults = {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10, "batch_size": 100}
    ranges = {"max_iter": at_least(1), "overshoot": at_least(0.0), "nb_grads": at_least(1), "batch_size": at_least(1)}
    metrics = MIN_NORM_METRICS

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        from art.attacks.evasion import DeepFool

        _quiet_art()
        p = self.params
        clf = art_classifier(model, tuple(x.shape[1:]), num_classes_of(model, x, device), device)
        attack = DeepFool(clf, max_iter=p["max_iter"], epsilon=p["overshoot"], nb_grads=p["nb_grads"],
                          batch_size=p["batch_size"], verbose=progress)
        x_np = x.numpy().astype(np.float32)
        x_adv = attack.generate(x_np)
        clean_pred = predict(model, x, device).numpy()
        # every returned example is re-checked by our own forward pass, not taken on ART's word
        adv_pred = predict(model, torch.from_numpy(x_adv), device).numpy()
        metrics, samples = perturbation_metrics(x_np, x_adv, y.numpy(), clean_pred, adv_pred)
        return AttackResult(metrics, samples)


@register_attack
class ArtSpatial(Attack):
    kind = "spatial"
    engine = "art"
    description = ("spatial transformation (black-box), ART's grid search for one global "
                   "translation + rotation on the attacked set")
    defaults = {"max_translation": 10.0, "num_translations": 5, "max_rotation": 30.0, "num_rotations": 7,
                "fix_channels_first": True}
    ranges = {"max_translation": Range(0.0, 100.0), "num_translations": at_least(1), "max_rotation": Range(0.0, 180.0),
              "num_rotations": at_least(1)}
    metrics = (ROBUST_ACCURACY, *CHOSEN_TRANSFORM)

    @classmethod
    def per_example(cls, params: dict) -> bool:
        return False  # one global transform for every image

    @classmethod
    def check_params(cls, params: dict) -> dict:
        merged = super().check_params(params)
        check_grid(cls.kind, merged)
        return merged

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        from art.attacks.evasion import SpatialTransformation

        _quiet_art()
        p = self.params
        nb_classes = num_classes_of(model, x, device)
        x_np = x.numpy().astype(np.float32)
        if p["fix_channels_first"]:
            # ART sizes its translation grid from x.shape[1] and x.shape[2]; for NCHW those are C and H,
            # so the vertical shift is round(C * p / 100) = 0. Channels-last input makes them H and W.
            clf = art_classifier(ChannelsLast(model), tuple(x.shape[2:]) + (x.shape[1],), nb_classes, device,
                                 channels_first=False)
            attack_input = np.ascontiguousarray(x_np.transpose(0, 2, 3, 1))
        else:
            clf = art_classifier(model, tuple(x.shape[1:]), nb_classes, device)
            attack_input = x_np
        attack = SpatialTransformation(clf, max_translation=p["max_translation"],
                                       num_translations=p["num_translations"], max_rotation=p["max_rotation"],
                                       num_rotations=p["num_rotations"], verbose=progress)
        x_adv = attack.generate(attack_input)
        if p["fix_channels_first"]:
            x_adv = x_adv.transpose(0, 3, 1, 2)
        clean_pred = predict(model, x, device).numpy()
        adv_pred = predict(model, torch.from_numpy(np.ascontiguousarray(x_adv)), device).numpy()
        labels = y.numpy()
        metrics = prediction_metrics(labels, clean_pred, adv_pred, per_example=False)
        # both layouts shift array axis 'trans_x' = image rows and 'trans_y' = image columns
        metrics.update(fooling_rate=float(attack.fooling_rate or 0.0), shift_rows=float(attack.attack_trans_x),
                       shift_cols=float(attack.attack_trans_y), rotation_deg=float(attack.attack_rot))
        samples = {"label": labels, "clean_pred": clean_pred, "adv_pred": adv_pred}
        return AttackResult(metrics, samples, info={"layout": "NHWC (fixed)" if p["fix_channels_first"]
                                                    else "NCHW (ART as-is)"})
