"""SuperDeepFool, untargeted L2, batched PyTorch.

Abdollahzadeh et al., "Revisiting DeepFool: generalization and improvement" (SuperDeepFool), with the
loop of adv-lib 0.2.8's ``sdf`` (``adv_lib/attacks/superdeepfool.py`` in jeromerony/adversarial-library),
which the CI compares image by image. Per outer step, on the images not yet fooled:
- DeepFool from the current point (every other class a candidate, adv-lib's ``df``: distances
  ``|f_k - f_c| / max(||w_k||, 1e-6) + 1e-4``, each step overshot by ``1 + overshoot``, at most
  ``df_steps``) gives ``x_df`` and the class it aims at;
- ``w``: the unit gradient at ``x_df`` of ``z_t - z_c`` (t: the class predicted at ``x_df``, or DeepFool's
  target when it is still c); the point moves by ``((x_df - x_0) . w) w`` and is clipped to [0, 1], which
  removes the component of DeepFool's perturbation that is not orthogonal to the boundary.
The first adversarial iterate of each image is kept; ``search_iter`` bisections on the segment from the
clean image then move it to the boundary. An image never fooled returns the clean image. It attacks the
model's clean prediction, as the other native engines. Fooled images leave the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..metrics import MIN_NORM_METRICS, PASSES
from .base import AttackResult, at_least, register_attack
from .norm_results import CountedEngineAttack, boundary_fraction, rechecked_result


def deepfool_all_classes(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int, overshoot: float,
                         allowance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """adv-lib's ``df`` (L2, ``return_unsuccessful``, ``return_targets``): the first adversarial iterate (the
    last iterate where none), the class each image's last step aimed at, and the passes each image took.

    ``allowance``: passes each image may take; an image stops (unsuccessful) before a step it cannot pay for
    in full (one forward pass and a backward pass per other class)."""
    n, view = len(x), (-1,) + (1,) * (x.ndim - 1)
    adv, out, targets = x.clone(), x.clone(), labels.clone()
    spent = torch.zeros(n, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.arange(n, device=x.device)
    others = None
    for _ in range(steps):
        if allowance is not None and others is not None:
            active = active[allowance[active] - spent[active] >= others.shape[1] + 1]
            if len(active) == 0:
                break
        cur = adv[active].requires_grad_(True)
        logits = model(cur)
        spent[active] += 1
        if others is None:  # all classes but the label, ascending
            k = torch.arange(logits.shape[1] - 1, device=x.device)
            others = k + (k >= labels[:, None])
        is_adv = logits.argmax(1) != labels[active]
        out[active[is_adv]] = adv[active[is_adv]]
        found[active[is_adv]] = True
        keep = ~is_adv
        if not keep.any():
            break
        spent[active] += others.shape[1]  # each backward pass runs over the whole batch
        active, logits = active[keep], logits[keep]
        lab = labels[active]
        f = logits.gather(1, others[active]) - logits.gather(1, lab[:, None])
        w = torch.stack([torch.autograd.grad(f[:, j].sum(), cur, retain_graph=j + 1 < f.shape[1])[0][keep]
                         for j in range(f.shape[1])], dim=1)
        w_norms = w.flatten(2).norm(dim=2).clamp_min(1e-6)
        distance = f.detach().abs() / w_norms + 1e-4
        l_hat = distance.argmin(1)
        targets[active] = torch.where(l_hat >= lab, l_hat + 1, l_hat)
        rows = torch.arange(len(active), device=x.device)
        scale = distance[rows, l_hat] / w_norms[rows, l_hat]
        adv[active] = torch.addcmul(adv[active], scale.view(view), w[rows, l_hat], value=1 + overshoot).clamp(0, 1)
    out[~found] = adv[~found]
    return out, targets, spent


def superdeepfool_batch(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int, df_steps: int,
                        overshoot: float, search_iter: int, budget: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples for one batch on the model's device, and the outer steps each image used.

    ``budget``: at most that many forward plus backward passes per image. Each image pays for what it
    takes (a check, each DeepFool step, the orthogonal step, the bisection); an image leaves before a
    step it cannot pay for in full."""
    view = (-1,) + (1,) * (x.ndim - 1)
    adv, out = x.clone(), x.clone()
    active = torch.arange(len(x), device=x.device)
    iters = torch.zeros(len(x), dtype=torch.long, device=x.device)
    spent = torch.zeros(len(x), device=x.device)
    cap = None if budget is None else budget - search_iter  # what the steps may spend
    for _ in range(steps):
        if cap is not None:
            active = active[cap - spent[active] >= 1]
            if len(active) == 0:
                break
        with torch.no_grad():
            logits = model(adv[active])
        spent[active] += 1
        is_adv = logits.argmax(1) != labels[active]
        out[active[is_adv]] = adv[active[is_adv]]
        active = active[~is_adv]
        if cap is not None:  # one DeepFool step (a forward pass, a backward pass per other class) and w's two
            active = active[cap - spent[active] >= logits.shape[1] + 2]
        if len(active) == 0:
            break
        iters[active] += 1
        x0, lab = x[active], labels[active]
        allowance = None if cap is None else cap - spent[active] - 2
        x_df, targets, df_spent = deepfool_all_classes(model, adv[active], lab, df_steps, overshoot, allowance)
        spent[active] += df_spent + 2
        x_df.requires_grad_(True)
        logits = model(x_df)
        pred = logits.argmax(1)
        pred = torch.where(pred != lab, pred, targets)
        diff = logits.gather(1, pred[:, None]) - logits.gather(1, lab[:, None])
        (w,) = torch.autograd.grad(diff.sum(), x_df)
        w = w / w.flatten(1).norm(dim=1).clamp_min(1e-6).view(view)
        scale = ((x_df.detach() - x0).flatten(1) * w.flatten(1)).sum(1)
        adv[active] = torch.addcmul(adv[active], scale.view(view), w).clamp(0, 1)
    if search_iter:
        out = torch.lerp(x, out, boundary_fraction(model, x, out, labels, search_iter).view(view))
    return out, iters


@register_attack
class NativeSuperDeepFool(CountedEngineAttack):
    kind = "superdeepfool"
    engine = "native"
    minimum_norm = True
    description = ("SuperDeepFool (Abdollahzadeh et al.; white-box, minimum L2): DeepFool steps made orthogonal to "
                   "the boundary, batched PyTorch engine with adv-lib's loop")
    defaults = {"steps": 100, "df_steps": 100, "overshoot": 0.02, "search_iter": 10, "batch_size": 256,
                "budget": None}
    key_neutral = {"budget": None}
    ranges = {"steps": at_least(1), "df_steps": at_least(1), "overshoot": at_least(0.0), "search_iter": at_least(0),
              "batch_size": at_least(1)}
    metrics = (*MIN_NORM_METRICS, PASSES)

    progress_label = "SuperDeepFool (native)"

    def gradients_kept(self) -> int:
        return 2  # a DeepFool step backpropagates one class at a time, next to the orthogonal step's gradient

    def batch_engine(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        return superdeepfool_batch

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        x_adv, iters = out
        return rechecked_result(model, x, y, x_adv, clean, iters, passes, device)
