"""FMN (Fast Minimum-Norm), untargeted L2, batched PyTorch.

Pintor et al., "Fast Minimum-norm Adversarial Attacks through Adaptive Norm Constraints", NeurIPS
2021, Algorithm 1. Per step, on the logit difference ``L = max_{j != c} z_j - z_c`` (c: the model's
clean prediction):
- check the current iterate; keep it if adversarial and smaller than the best so far;
- update the norm budget ``epsilon``: when the iterate is adversarial, ``min(epsilon * (1 - gamma), best)``;
  otherwise ``epsilon * (1 + gamma)`` once some adversarial was found, and before that the linearised
  distance ``||delta|| + |L| / ||grad L||`` (the paper's binary-search-free initialisation);
- step ``alpha * grad L / ||grad L||``, project onto the L2 ball (or sphere) of radius ``epsilon``, clip
  to [0, 1].
``alpha`` and ``gamma`` are cosine-annealed from ``*_init`` to ``*_final``.

Three options, each measured in docs/attack-strength.md:
- ``bound_mask``: gradient components that push a pixel already at 0 below 0 (or at 1 above 1) are left
  out of the normalised step and of the linearised distance. Most Fashion-MNIST pixels are 0, so without
  the mask most of each unit step is clipped away and FMN stalls (about half the images fooled);
- ``projection``: ``ball`` (the paper) shrinks the perturbation only when it is longer than epsilon;
  ``sphere`` rescales it to epsilon exactly, which is what adv-lib 0.2.8's L2 projection computes
  (``(delta * eps / ||delta||).clamp(max=1)`` clamps the values, not the factor);
- ``start: deepfool``: the reference's starting-point mode. DeepFool (the ``deepfool`` preset's
  parameters) gives an adversarial point; ``binary_search_steps`` halvings on the segment from the clean
  image find the boundary, and FMN starts from the adversarial end. Images DeepFool does not fool start
  from the clean image.

Foolbox 3.3.4's ``L2FMNAttack.project`` computes ``factor = min(1, norms / norms)``, which is always 1,
so its L2 FMN never projects; the CI cross-check runs Foolbox's loop with that one line corrected
(``epsilon / ||delta||``). An image never fooled returns its last iterate. No host synchronisation
inside the loop.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn

from ..metrics import LINF_MEDIAN, MIN_NORM_METRICS, PASSES, ROBUST_ACCURACY, SUCCESS_RATE, Metric
from .base import AttackResult, Range, above, at_least, register_attack
from .native_deepfool import deepfool_batch, resolve_grad_strategy
from .norm_results import (CountedEngineAttack, boundary_fraction, cosine, iterative_result, steps_within,
                           tail_snapshot_step)

PROJECTIONS = ("ball", "sphere")


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _linf(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).abs().amax(dim=1)


def _l1(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).abs().sum(dim=1)


# norm -> (the per-image norm minimised, the dual norm of the linearised distance; None: the step's L2 norm)
NORMS = {"l2": (_l2, None), "linf": (_linf, _l1)}
STARTS = ("clean", "deepfool")
DEEPFOOL_START = {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10, "keep_candidates": 2}  # attacks/deepfool.yaml


def boundary_start(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, x_adv: torch.Tensor,
                   search_steps: int) -> torch.Tensor:
    """Perturbations on the segment from ``x`` to ``x_adv`` just past the decision boundary (bisection);
    zero where ``x_adv`` is not adversarial."""
    view = (-1,) + (1,) * (x.ndim - 1)
    with torch.no_grad():
        found = model(x_adv).argmax(1) != labels
    hi = boundary_fraction(model, x, x_adv, labels, search_steps)
    return torch.where(found.view(view), torch.lerp(x, x_adv, hi.view(view)) - x, torch.zeros_like(x))


def fmn_plan(steps: int, budget: int | None, start: str, binary_search_steps: int) -> tuple[int, int | None]:
    """FMN's steps and its DeepFool start's budget under ``budget`` passes per image (None: no limit).

    The DeepFool start gets a quarter of the budget; the bisection costs ``binary_search_steps + 1``
    forward passes; each step one forward and one backward pass."""
    if budget is None:
        return steps, None
    if start == "clean":
        return steps_within(steps, budget), None
    start_budget = budget // 4
    return max(0, min(steps, (budget - start_budget - binary_search_steps - 1) // 2)), start_budget


def fmn_batch_params(params: dict[str, Any], budget: int | None) -> dict[str, Any]:
    """``fmn_batch``'s keyword arguments from the attack's parameters, under ``budget`` (``fmn_plan``)."""
    steps, start_budget = fmn_plan(params["steps"], budget, params["start"], params["binary_search_steps"])
    return {k: v for k, v in params.items() if k not in ("batch_size", "budget")} | {
        "steps": steps, "start_budget": start_budget}


def fmn_batch(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int, alpha_init: float,
              alpha_final: float, gamma_init: float, gamma_final: float, bound_mask: bool = False,
              projection: str = "ball", start: str = "clean", binary_search_steps: int = 10,
              start_budget: int | None = None, norm: str = "l2"
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returned examples, final best norms (inf: never fooled) and best norms before the convergence tail.

    ``norm: linf`` minimises the L-inf norm (``NORMS``): the step stays the L2-normalised gradient, the
    linearised distance divides by the gradient's dual (L1) norm, and the projection clamps every pixel
    of the perturbation to [-epsilon, epsilon] (``projection`` has no effect); the DeepFool start is
    DeepFool's L-inf variant."""
    view = (-1,) + (1,) * (x.ndim - 1)
    size, dual = NORMS[norm]
    inf = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    if start == "deepfool":  # deepfool_batch attacks the model's prediction, which ``labels`` holds
        strategy = resolve_grad_strategy("auto", x.device)
        x_df = deepfool_batch(model, x, **DEEPFOOL_START, grad_strategy=strategy, budget=start_budget, norm=norm)[0]
        delta = boundary_start(model, x, labels, x_df, binary_search_steps)
    else:
        delta = torch.zeros_like(x)
    epsilon = inf.clone()
    worst = size(torch.maximum(x, 1 - x))
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
        now = size(delta)
        better = is_adv & (now < best_norm)
        best_norm = torch.where(better, now, best_norm)
        best_delta = torch.where(better.view(view), delta, best_delta)
        found = found | is_adv
        if i == snapshot_at:
            before = best_norm.clone()
        if bound_mask:  # directions the [0, 1] clip would undo
            x_now = x + delta
            grad = grad.masked_fill(((x_now <= 0) & (grad < 0)) | ((x_now >= 1) & (grad > 0)), 0)
        g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        distance = loss.abs() / (g_norm if dual is None else dual(grad).clamp_min(1e-12))
        epsilon = torch.where(is_adv, torch.minimum(epsilon * (1 - gamma), best_norm),
                              torch.where(found, epsilon * (1 + gamma), now + distance))
        epsilon = torch.minimum(epsilon, worst)
        delta = delta + alpha * grad / g_norm.view(view)
        if norm == "linf":
            bound = epsilon.view(view)
            delta = torch.maximum(torch.minimum(delta, bound), -bound)
        else:
            factor = epsilon / delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (factor.clamp(max=1) if projection == "ball" else factor).view(view)
        delta = (x + delta).clamp(0, 1) - x
    x_adv = torch.where(torch.isfinite(best_norm).view(view), x + best_delta, x + delta).clamp(0, 1)
    return x_adv, best_norm, before


UNIT_OPEN = Range(0, 1, lo_open=True, hi_open=True)


CONVERGED_FMN = Metric("converged_fmn", ("FMN's convergence signal: median relative fall of the best adversarial norm "
                                     "over the last 10% of its steps (above 1% flags the cell)"), unit="ratio",
                      higher_is_better=False)


@register_attack
class NativeFMN(CountedEngineAttack):
    kind = "fmn"
    engine = "native"
    minimum_norm = True
    version = 2  # version 1: no bound mask, clean start, 100 steps by default
    description = ("FMN L2 (Pintor et al., NeurIPS 2021; white-box, minimum L2), batched PyTorch engine; starts "
                   "from DeepFool's point moved to the boundary, steps only along directions the [0, 1] box allows")
    defaults = {"steps": 50, "alpha_init": 1.0, "alpha_final": 0.01, "gamma_init": 0.05, "gamma_final": 0.001,
                "bound_mask": True, "projection": "ball", "start": "deepfool", "binary_search_steps": 10,
                "batch_size": 256, "budget": None}
    key_neutral = {"budget": None}
    ranges = {"steps": at_least(1), "alpha_init": above(0), "alpha_final": above(0),
              "gamma_init": UNIT_OPEN, "gamma_final": UNIT_OPEN, "binary_search_steps": at_least(0),
              "batch_size": at_least(1)}
    choices = {"projection": PROJECTIONS, "start": STARTS}
    metrics = (*MIN_NORM_METRICS, CONVERGED_FMN, PASSES)

    progress_label = "FMN (native)"

    def gradients_kept(self) -> int:
        return DEEPFOOL_START["nb_grads"] if self.params["start"] == "deepfool" else 1

    def batch_engine(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        return fmn_batch

    def engine_params(self, device: torch.device, gen: torch.Generator | None) -> dict[str, Any]:
        return fmn_batch_params(self.params, self.params["budget"])

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        x_adv, final, before = out
        return iterative_result("fmn", model, x, y, x_adv, clean, final, before, params["steps"], device, passes)


@register_attack
class NativeFMNLinf(NativeFMN):
    kind = "fmn-linf"
    norm = "linf"
    version = 1
    description = ("FMN L-inf (Pintor et al., NeurIPS 2021; white-box, minimum L-inf), batched PyTorch engine; "
                   "starts from DeepFool-Linf's point moved to the boundary, steps only along directions the [0, 1] "
                   "box allows")
    defaults = {k: v for k, v in NativeFMN.defaults.items() if k != "projection"}
    key_neutral = {"budget": None}
    choices = {"start": STARTS}
    metrics = (SUCCESS_RATE, LINF_MEDIAN, ROBUST_ACCURACY, CONVERGED_FMN, PASSES)

    progress_label = "FMN L-inf (native)"

    def engine_params(self, device: torch.device, gen: torch.Generator | None) -> dict[str, Any]:
        return fmn_batch_params(self.params, self.params["budget"]) | {"norm": "linf"}

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        x_adv, final, before = out
        return iterative_result("fmn", model, x, y, x_adv, clean, final, before, params["steps"], device, passes,
                                norm="linf")
