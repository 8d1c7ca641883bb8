"""DeepFool in batched PyTorch, with ART's semantics and without ART's costs.

Same update as ``art.attacks.evasion.DeepFool``: per step, the linearised distance to each candidate
class boundary is ``|f_k - f_0| / (||grad f_k - grad f_0|| + tol)``; the nearest one gives the step
``r = (|f_l - f_0| / (||w_l||^2 + tol)) * w_l``, scaled by the clip range and clipped; the example
returned is the total perturbation multiplied by ``1 + overshoot``, clipped.

Differences, all for speed:
- a sample stops as soon as the example that would be returned (the overshot point) is adversarial.
  ART tests the raw iterate instead, which each step puts exactly on the linearised boundary, so it
  creeps across in many tiny steps (27 iterations per image on average on the quickstart's 7x7 CNN).
  ``stop_on: iterate`` restores ART's loop exactly (same norms to 1e-9 in the tests);
- candidate classes are the top-``nb_grads`` logits of each sample (ART takes the union over the
  whole input);
- ``keep_candidates: m`` (the ``deepfool`` preset sets 2): after the first step only the ``m`` classes
  whose linearised boundary was nearest stay candidates. Later steps then cost ``m`` backward passes
  instead of ``nb_grads - 1``; the nearest boundary rarely changes rank after the first step, and the
  cross-check against ART (same samples fooled, norms within 5%) is what licenses it. ``None`` keeps
  every candidate at every step (the ``deepfool-exact`` preset);
- one backward pass per candidate gives ``grad (f_k - f_0)`` directly, not ``grad f_k`` and ``grad f_0``;
  on CUDA (``grad_strategy: auto``) the candidates' backward passes run as one vectorised pass;
- fooled samples leave the batch;
- all work stays on the model's device.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..metrics import LINF_MEDIAN, MIN_NORM_METRICS, PASSES, ROBUST_ACCURACY, SUCCESS_RATE
from .base import AttackResult, at_least, register_attack
from .norm_results import CountedEngineAttack, rechecked_result

TOL = 10e-8  # ART's guard against division by zero


GRAD_STRATEGIES = ("auto", "loop", "batched")


def _difference_gradients(model: nn.Module, x: torch.Tensor, cand: torch.Tensor,
                          strategy: str = "loop") -> tuple[torch.Tensor, torch.Tensor]:
    """Logit gaps ``f_k - f_0`` to the candidates (B, K-1) and their input gradients (B, K-1, D).

    Column 0 of ``cand`` is the original class. ``loop``: one backward pass per other column, batched over
    samples (fastest on the CPU). ``batched``: all columns in one vectorised backward pass
    (``is_grads_batched``), which keeps a GPU busy instead of launching K-1 small passes."""
    x = x.detach().requires_grad_(True)
    picked = model(x).gather(1, cand)
    gaps = picked[:, 1:] - picked[:, :1]
    k = gaps.shape[1]
    if strategy == "batched":
        # row j of the batched grad_outputs selects column j for every sample: d sum_b gaps[b, j] / dx
        selectors = torch.eye(k, dtype=gaps.dtype, device=gaps.device).unsqueeze(1).expand(k, len(x), k)
        (g,) = torch.autograd.grad(gaps, x, grad_outputs=selectors, is_grads_batched=True)
        return gaps.detach(), g.flatten(2).transpose(0, 1)
    grads = []
    for j in range(k):
        (g,) = torch.autograd.grad(gaps[:, j].sum(), x, retain_graph=j < k - 1)
        grads.append(g.flatten(1))
    return gaps.detach(), torch.stack(grads, dim=1)


def resolve_grad_strategy(strategy: str, device: torch.device) -> str:
    """``auto``: the loop on the CPU (where it measured fastest), the batched pass on CUDA."""
    if strategy == "auto":
        return "batched" if device.type == "cuda" else "loop"
    return strategy


def iterations_within(max_iter: int, budget: int | None, k: int, keep_candidates: int | None) -> int:
    """DeepFool's iterations under ``budget`` passes per image (None: ``max_iter``).

    The clean prediction is one forward pass; an iteration is one forward pass, a backward pass per
    other candidate class (``k - 1``, then ``keep_candidates`` after the first iteration) and one
    forward pass that checks the returned example."""
    if budget is None:
        return max_iter
    spent, done = 1, 0
    while done < max_iter:
        others = k - 1 if done == 0 or keep_candidates is None else min(keep_candidates, k - 1)
        if spent + others + 2 > budget:
            break
        spent, done = spent + others + 2, done + 1
    return done


def deepfool_batch(model: nn.Module, x: torch.Tensor, nb_grads: int, max_iter: int, overshoot: float,
                   clip: tuple[float, float] = (0.0, 1.0), stop_on: str = "returned",
                   keep_candidates: int | None = None, grad_strategy: str = "loop",
                   budget: int | None = None, norm: str = "l2") -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial examples for one batch on the model's device, and the iterations each sample used.

    ``budget``: at most that many forward plus backward passes per image (``iterations_within``).
    ``norm: linf``: DeepFool's L-inf step (Moosavi-Dezfooli et al. 2016, eq. 11 with q = 1): distances
    ``|f_k| / ||w_k||_1`` and the step ``|f_l| / ||w_l||_1 * sign(w_l)``."""
    lo, hi = clip
    with torch.no_grad():
        logits0 = model(x)
    k = min(nb_grads, logits0.shape[1])
    max_iter = iterations_within(max_iter, budget, k, keep_candidates)
    cand = logits0.topk(k, dim=1).indices  # column 0 is the original prediction
    label0 = cand[:, 0]
    adv = x.clone()
    result = x.clone()
    active = torch.arange(len(x), device=x.device)
    iters = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for step_no in range(max_iter):
        if len(active) == 0 or cand.shape[1] < 2:
            break
        f_diff, w = _difference_gradients(model, adv[active], cand[active], grad_strategy)  # (A, K-1), (A, K-1, D)
        rows = torch.arange(len(active), device=x.device)
        if norm == "linf":
            dist = f_diff.abs() / (w.abs().sum(dim=2) + TOL)
            nearest = dist.argmin(dim=1)
            step = dist[rows, nearest].unsqueeze(1) * w[rows, nearest].sign()
        else:
            dist = f_diff.abs() / (w.norm(dim=2) + TOL)
            nearest = dist.argmin(dim=1)
            w_l = w[rows, nearest]
            step = (f_diff[rows, nearest].abs() / (w_l.norm(dim=1) ** 2 + TOL)).unsqueeze(1) * w_l
        adv[active] = (adv[active] + step.view_as(adv[active]) * (hi - lo)).clamp(lo, hi)
        iters[active] += 1
        returned = (x[active] + (1 + overshoot) * (adv[active] - x[active])).clamp(lo, hi)
        with torch.no_grad():
            probe = returned if stop_on == "returned" else adv[active]
            still = model(probe).argmax(1) == label0[active]
        result[active] = returned
        if step_no == 0 and keep_candidates is not None and keep_candidates < cand.shape[1] - 1:
            # every sample is active at the first step, so its distances rank all of them
            nearest_first = dist.argsort(dim=1)[:, :keep_candidates]
            cand = torch.cat([cand[:, :1], cand[:, 1:].gather(1, nearest_first)], dim=1)
        active = active[still]
    return result, iters


def deepfool_engine(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, **params: Any
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``deepfool_batch`` as a batch engine of ``counted_batches``; ``labels`` go unused, since DeepFool attacks
    the model's own prediction of each image."""
    return deepfool_batch(model, x, **params)


@register_attack
class NativeDeepFool(CountedEngineAttack):
    kind = "deepfool"
    engine = "native"
    preferred_engine = True
    minimum_norm = True
    description = "DeepFool (white-box, minimum L2), batched PyTorch engine with ART's semantics"
    defaults = {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10, "batch_size": 256, "stop_on": "returned",
                "keep_candidates": None, "grad_strategy": "auto", "budget": None}
    # auto is the loop on the CPU, as before this parameter existed; on CUDA the batched pass computes the
    # same gradients (equal to float rounding), so stored cells keep their keys
    key_neutral = {"keep_candidates": None, "grad_strategy": "auto", "budget": None}
    choices = {"grad_strategy": GRAD_STRATEGIES, "stop_on": ("returned", "iterate")}
    ranges = {"max_iter": at_least(1), "overshoot": at_least(0.0), "nb_grads": at_least(2), "batch_size": at_least(1)}
    metrics = (*MIN_NORM_METRICS, PASSES)

    @classmethod
    def check_params(cls, params: dict) -> dict:
        merged = super().check_params(params)
        if merged["stop_on"] not in ("returned", "iterate"):
            raise ValueError(f"attack {cls.kind!r} parameter 'stop_on' must be 'returned' (stop once the overshot "
                             f"example is adversarial) or 'iterate' (ART's loop), got {merged['stop_on']!r}")
        keep = merged["keep_candidates"]
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"attack {cls.kind!r} parameter 'keep_candidates' must be a positive integer (classes "
                             f"kept after the first step) or null (keep all), got {keep!r}")
        return merged

    progress_label = "DeepFool (native)"

    def gradients_kept(self) -> int:
        return self.params["nb_grads"]

    def batch_engine(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        return deepfool_engine

    def engine_params(self, device: torch.device, gen: torch.Generator | None) -> dict[str, Any]:
        params = super().engine_params(device, gen)
        return params | {"grad_strategy": resolve_grad_strategy(params["grad_strategy"], device)}

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        x_adv, iters = out
        return rechecked_result(model, x, y, x_adv, clean, iters, passes, device)


@register_attack
class NativeDeepFoolLinf(NativeDeepFool):
    kind = "deepfool-linf"
    preferred_engine = False
    norm = "linf"
    description = "DeepFool L-inf (white-box, minimum L-inf; the dual q = 1 step), batched PyTorch engine"
    metrics = (SUCCESS_RATE, LINF_MEDIAN, ROBUST_ACCURACY, PASSES)

    progress_label = "DeepFool L-inf (native)"

    def engine_params(self, device: torch.device, gen: torch.Generator | None) -> dict[str, Any]:
        return super().engine_params(device, gen) | {"norm": "linf"}

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        x_adv, iters = out
        return rechecked_result(model, x, y, x_adv, clean, iters, passes, device, norm="linf")
