"""DDN (Decoupled Direction and Norm), untargeted L2, batched PyTorch.

Rony et al., "Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks and
Defenses", CVPR 2019, with the loop of Foolbox 3's ``DDNAttack`` (foolbox/attacks/ddn.py in
bethgelab/foolbox): per step, check the current iterate (keep it if adversarial and smaller than the
best so far), take a step of size ``alpha`` (cosine-annealed from ``alpha_init`` to ``alpha_final``)
along the normalised cross-entropy gradient, shrink the norm budget ``epsilon`` by ``1 - gamma`` when
the iterate was adversarial and grow it by ``1 + gamma`` otherwise (capped at the largest possible
perturbation), rescale the perturbation to norm ``epsilon``, clip to [0, 1]. No quantisation.

Like DeepFool it attacks the model's own clean prediction. An image never fooled returns its last
iterate (not adversarial; the re-check counts it). All work stays on the model's device, with no host
synchronisation inside the loop.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..metrics import MIN_NORM_METRICS, PASSES, Metric
from .base import AttackResult, Range, above, at_least, register_attack
from .norm_results import CountedEngineAttack, cosine, iterative_result, steps_within, tail_snapshot_step


def ddn_batch(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int, init_epsilon: float,
              gamma: float, alpha_init: float, alpha_final: float, gen: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returned examples, final best norms (inf: never fooled) and best norms before the convergence tail.

    ``gen``: the CPU generator of the random directions (one draw per step; None: torch's global one)."""
    view = (-1,) + (1,) * (x.ndim - 1)
    inf = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    delta = torch.zeros_like(x)
    epsilon = torch.full_like(inf, init_epsilon)
    worst = torch.maximum(x, 1 - x).flatten(1).norm(dim=1)
    best_norm, best_delta, before = inf.clone(), torch.zeros_like(x), inf.clone()
    snapshot_at = tail_snapshot_step(steps)
    for i in range(steps):
        alpha = cosine(i, steps, alpha_init, alpha_final)
        d = delta.requires_grad_(True)
        logits = model(x + d)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), d)
        delta = delta.detach()
        is_adv = logits.detach().argmax(1) != labels
        norm = delta.flatten(1).norm(dim=1)
        better = is_adv & (norm < best_norm)
        best_norm = torch.where(better, norm, best_norm)
        best_delta = torch.where(better.view(view), delta, best_delta)
        if i == snapshot_at:
            before = best_norm.clone()
        # a vanishing gradient gets a random direction (as Foolbox), so the norm update still moves
        g_norm = grad.flatten(1).norm(dim=1)
        noise = (torch.randn(grad.shape, generator=gen, dtype=grad.dtype).to(grad.device) if gen is not None
                 else torch.randn_like(grad))
        grad = torch.where((g_norm == 0).view(view), noise, grad)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        delta = delta + alpha * grad
        epsilon = torch.minimum(epsilon * torch.where(is_adv, 1.0 - gamma, 1.0 + gamma), worst)
        delta = delta * (epsilon / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(view)
        delta = (x + delta).clamp(0, 1) - x
    found = torch.isfinite(best_norm)
    x_adv = torch.where(found.view(view), x + best_delta, x + delta).clamp(0, 1)
    return x_adv, best_norm, before


CONVERGED_DDN = Metric("converged_ddn", ("DDN's convergence signal: median relative fall of the best adversarial norm "
                                     "over the last 10% of its steps (above 1% flags the cell)"), unit="ratio",
                      higher_is_better=False)


@register_attack
class NativeDDN(CountedEngineAttack):
    kind = "ddn"
    engine = "native"
    minimum_norm = True
    description = "DDN (Rony et al., CVPR 2019; white-box, minimum L2), batched PyTorch engine with Foolbox 3's loop"
    defaults = {"steps": 100, "init_epsilon": 1.0, "gamma": 0.05, "alpha_init": 1.0, "alpha_final": 0.01,
                "batch_size": 256, "budget": None}
    key_neutral = {"budget": None}
    ranges = {"steps": at_least(1), "init_epsilon": above(0), "gamma": Range(0, 1, lo_open=True, hi_open=True),
              "alpha_init": above(0), "alpha_final": above(0), "batch_size": at_least(1)}
    metrics = (*MIN_NORM_METRICS, CONVERGED_DDN, PASSES)

    progress_label = "DDN (native)"

    def batch_engine(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        return ddn_batch

    def engine_params(self, device: torch.device, gen: torch.Generator | None) -> dict[str, Any]:
        p = self.params
        return ({k: v for k, v in p.items() if k not in ("batch_size", "budget")}
                | {"steps": steps_within(p["steps"], p["budget"]), "gen": gen})

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        x_adv, final, before = out
        return iterative_result("ddn", model, x, y, x_adv, clean, final, before, params["steps"], device, passes)

