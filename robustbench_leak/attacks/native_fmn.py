"""FMN (Fast Minimum-Norm), untargeted L2, batched PyTorch.

Pintor et al., "Fast Minimum-norm Adversarial Attacks through Adaptive Norm Constraints", NeurIPS
2021, Algorithm 1, without a starting point (so no binary search). Per step, on the logit difference
``L = max_{j != c} z_j - z_c`` (c: the model's clean prediction):
- check the current iterate; keep it if adversarial and smaller than the best so far;
- update the norm budget ``epsilon``: when the iterate is adversarial, ``min(epsilon * (1 - gamma), best)``;
  otherwise ``epsilon * (1 + gamma)`` once some adversarial was found, and before that the linearised
  distance ``||delta|| + |L| / ||grad L||`` (the paper's binary-search-free initialisation);
- step ``alpha * grad L / ||grad L||``, project onto the L2 ball of radius ``epsilon``, clip to [0, 1].
``alpha`` and ``gamma`` are cosine-annealed from ``*_init`` to ``*_final``.

Foolbox 3.3.4's ``L2FMNAttack.project`` computes ``factor = min(1, norms / norms)``, which is always 1,
so its L2 FMN never projects; the CI cross-check runs Foolbox's loop with that one line corrected
(``epsilon / ||delta||``). An image never fooled returns its last iterate. No host synchronisation
inside the loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..train import predict
from .base import Attack, AttackResult, Range, above, at_least, register_attack
from .min_norm import batched, cosine, iterative_result, steps_within, tail_snapshot_step
from .optimality import PassCounter


def fmn_batch(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int, alpha_init: float,
              alpha_final: float, gamma_init: float, gamma_final: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returned examples, final best norms (inf: never fooled) and best norms before the convergence tail."""
    view = (-1,) + (1,) * (x.ndim - 1)
    inf = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    delta = torch.zeros_like(x)
    epsilon = inf.clone()
    worst = torch.maximum(x, 1 - x).flatten(1).norm(dim=1)
    best_norm, best_delta, before = inf.clone(), torch.zeros_like(x), inf.clone()
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    own = None
    snapshot_at = tail_snapshot_step(steps)
    for i in range(steps):
        alpha = cosine(i, steps, alpha_init, alpha_final)
        gamma = cosine(i, steps, gamma_init, gamma_final)
        d = delta.requires_grad_(True)
        logits = model(x + d)
        if own is None:  # +inf on the attacked class, so subtracting it leaves the best other class
            own = torch.zeros_like(logits).scatter_(1, labels[:, None], math.inf)
        loss = (logits - own).amax(1) - logits.gather(1, labels[:, None])[:, 0]
        (grad,) = torch.autograd.grad(loss.sum(), d)
        delta, loss = delta.detach(), loss.detach()
        is_adv = logits.detach().argmax(1) != labels
        norm = delta.flatten(1).norm(dim=1)
        better = is_adv & (norm < best_norm)
        best_norm = torch.where(better, norm, best_norm)
        best_delta = torch.where(better.view(view), delta, best_delta)
        found = found | is_adv
        if i == snapshot_at:
            before = best_norm.clone()
        g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        epsilon = torch.where(is_adv, torch.minimum(epsilon * (1 - gamma), best_norm),
                              torch.where(found, epsilon * (1 + gamma), norm + loss.abs() / g_norm))
        epsilon = torch.minimum(epsilon, worst)
        delta = delta + alpha * grad / g_norm.view(view)
        delta = delta * (epsilon / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(view)
        delta = (x + delta).clamp(0, 1) - x
    x_adv = torch.where(torch.isfinite(best_norm).view(view), x + best_delta, x + delta).clamp(0, 1)
    return x_adv, best_norm, before


UNIT_OPEN = Range(0, 1, lo_open=True, hi_open=True)


@register_attack
class NativeFMN(Attack):
    kind = "fmn"
    engine = "native"
    minimum_norm = True
    description = "FMN L2 (Pintor et al., NeurIPS 2021; white-box, minimum L2), batched PyTorch engine"
    defaults = {"steps": 100, "alpha_init": 1.0, "alpha_final": 0.01, "gamma_init": 0.05, "gamma_final": 0.001,
                "batch_size": 256, "budget": None}
    key_neutral = {"budget": None}
    ranges = {"steps": at_least(1), "alpha_init": above(0), "alpha_final": above(0),
              "gamma_init": UNIT_OPEN, "gamma_final": UNIT_OPEN, "batch_size": at_least(1)}
    metrics = ("success_rate", "rho_mean", "rho_median", "robust_accuracy", "converged_fmn", "passes")

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None) -> AttackResult:
        p = self.params
        clean = predict(model, x, device)
        steps = steps_within(p["steps"], p["budget"])
        params = {k: v for k, v in p.items() if k not in ("batch_size", "budget")} | {"steps": steps}
        counter = PassCounter(model)
        x_adv, final, before = batched(fmn_batch, counter, x, clean, p["batch_size"], device, "FMN (native)",
                                       progress, **params)
        result = iterative_result("fmn", model, x, y, x_adv, clean, final, before, steps, device)
        result.metrics["passes"] = counter.passes / max(1, len(x))
        return result
