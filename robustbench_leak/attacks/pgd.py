"""Projected gradient descent (Madry et al.) in PyTorch, L-inf or L2, untargeted on the true label.

Also the sanity check of "On Evaluating Adversarial Robustness" (Carlini et al., 2019): with an
unbounded budget it must reach ~100% success; if it does not, gradients are masked or broken.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..metrics import ROBUST_ACCURACY, SUCCESS_RATE, flat_l2, prediction_metrics
from ..runtime import predict
from .base import Attack, AttackResult, Range, above, at_least, register_attack


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int, norm: str,
        random_start: bool = True, gen: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial examples within ``eps`` of ``x`` (``norm`` 'linf' or 'l2'), inside [0, 1]."""
    adv = x.clone()
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1
        if norm == "l2":
            noise = noise / flat_l2_t(noise).view(-1, *[1] * (x.dim() - 1)).clamp_min(1e-12) * eps * 0.5
        else:
            noise = noise * eps
        adv = (x + noise).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            if norm == "linf":
                adv = adv + step * grad.sign()
                adv = torch.min(torch.max(adv, x - eps), x + eps)
            else:
                g = grad / flat_l2_t(grad).view(-1, *[1] * (x.dim() - 1)).clamp_min(1e-12)
                adv = adv + step * g
                delta = adv - x
                scale = (eps / flat_l2_t(delta).clamp_min(1e-12)).clamp(max=1.0)
                adv = x + delta * scale.view(-1, *[1] * (x.dim() - 1))
            adv = adv.clamp(0, 1).detach()
    return adv


def flat_l2_t(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


@register_attack
class NativePGD(Attack):
    kind = "pgd"
    engine = "native"
    description = "projected gradient descent, untargeted (white-box), batched PyTorch"
    defaults = {"norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": 20, "random_start": True,
                "batch_size": 256, "seed": 0}
    ranges = {"eps": at_least(0.0), "step_size": above(0.0), "steps": at_least(1), "batch_size": at_least(1),
              "seed": Range(0, 2**63 - 1)}
    choices = {"norm": ("linf", "l2")}
    metrics = (ROBUST_ACCURACY, SUCCESS_RATE)

    @classmethod
    def check_params(cls, params: dict) -> dict:
        merged = super().check_params(params)
        if merged["norm"] not in ("linf", "l2"):
            raise ValueError(f"attack 'pgd' parameter 'norm' must be linf or l2, got {merged['norm']!r}")
        return merged

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        p = self.params
        gen = torch.Generator().manual_seed(p["seed"])
        advs = [pgd(model, x[i:i + p["batch_size"]].to(device), y[i:i + p["batch_size"]].to(device), p["eps"],
                    p["step_size"], p["steps"], p["norm"], p["random_start"], gen).cpu()
                for i in range(0, len(x), p["batch_size"])]
        x_adv = torch.cat(advs)
        clean_pred = predict(model, x, device).numpy()
        adv_pred = predict(model, x_adv, device).numpy()
        labels = y.numpy()
        metrics = prediction_metrics(labels, clean_pred, adv_pred)
        return AttackResult(metrics, {"label": labels, "clean_pred": clean_pred, "adv_pred": adv_pred,
                                      "l2": flat_l2(x_adv.numpy() - x.numpy())})
