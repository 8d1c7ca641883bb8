"""How strong each member of a minimum-norm ensemble is: AttackBench's optimality, and the passes it cost.

Optimality (Cinà et al., "AttackBench", 2024): per model, the area under an attack's robust-accuracy
curve (accuracy over ALL attacked images against the L2 budget eps, from 0 to ``max_dist``) compared
with the curve of the per-image best perturbation found by any attack:
``1 - (area - best_area) / (clean_acc * max_dist - best_area)``. ``max_dist`` is the largest per-image
best norm, so 1 means the attack found the best perturbation on every image, 0 that it did no better
than fooling nothing. The curves are step functions, so each area is exact: an image that is
clean-correct adds ``min(norm, max_dist) / N`` (an image never fooled adds ``max_dist / N``), a
misclassified one adds nothing. AttackBench integrates the same curves with the trapezoidal rule.

Passes: forward plus backward passes through the model per attacked image, counted by
``PassCounter`` around the model an engine gets (AttackBench counts its calls the same way). One
forward or backward of a batch of B images counts B; the total is divided by the number of images.
The examples' re-check and the clean prediction, which every attack shares, are not counted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..metrics import Metric


def curve_area(norms: np.ndarray, correct: np.ndarray, max_dist: float) -> float:
    """Exact area under eps -> share of images that are clean-correct and need more than eps, on [0, max_dist]."""
    norms = np.asarray(norms, np.float64)
    if len(norms) == 0:
        return float("nan")
    return float(np.where(correct, np.minimum(norms, max_dist), 0.0).sum() / len(norms))


def optimality(norms: dict[str, np.ndarray], correct: np.ndarray) -> dict[str, float]:
    """Each attack's optimality against the per-image best of all of them.

    ``norms[m]``: per-image L2 norm of attack m's adversarial example, ``inf`` where it did not fool the
    image. NaN for every attack when no image is clean-correct and fooled by some attack."""
    correct = np.asarray(correct, bool)
    stacked = np.stack([np.asarray(v, np.float64) for v in norms.values()])
    best = stacked.min(axis=0)
    finite = correct & np.isfinite(best)
    if not finite.any():
        return {m: float("nan") for m in norms}
    max_dist = float(best[finite].max())
    best_area = curve_area(best, correct, max_dist)
    worst_area = float(correct.mean()) * max_dist  # the curve of an attack that fools nothing
    out = {}
    for m, l2 in norms.items():
        area = curve_area(l2, correct, max_dist)
        if worst_area > best_area:
            out[m] = 1.0 - (area - best_area) / (worst_area - best_area)
        else:  # every best norm equals max_dist: only the attacks that reach it are optimal
            out[m] = 1.0 if area <= best_area else 0.0
    return out


def minimum_share(norms: dict[str, np.ndarray], correct: np.ndarray) -> dict[str, float]:
    """Share of the clean-correct images some attack fooled on which attack m found the smallest norm.

    Ties go to the first attack in ``norms``' order (the ensemble's example is that attack's), so the
    shares add up to 1."""
    names = list(norms)
    stacked = np.stack([np.asarray(norms[m], np.float64) for m in names])
    use = np.asarray(correct, bool) & np.isfinite(stacked).any(axis=0)
    if not use.any():
        return {m: float("nan") for m in names}
    winner = stacked[:, use].argmin(axis=0)
    return {m: float(np.mean(winner == k)) for k, m in enumerate(names)}


def strength_metrics(m: str) -> tuple[Metric, ...]:
    """The declarations of what ``strength`` reports for attack ``m``."""
    return (
        Metric(f"success_{m}", f"success rate of the ensemble member {m} alone (clean-correct images)"),
        Metric(f"rho_median_{m}", f"median rho of the member {m} alone over clean-correct images (an image it did not "
               "fool counts as infinite)", unit="ratio"),
        Metric(f"rho_mean_{m}", f"mean rho of the member {m} alone over the clean-correct images it fooled",
               unit="ratio"),
        Metric(f"passes_{m}", f"forward plus backward passes per image of the member {m}", unit="passes/image",
               higher_is_better=False),
        Metric(f"optimality_{m}", f"AttackBench's optimality of the member {m}: 1 - (area - best) / (clean accuracy x "
               "max_dist - best), the areas under the robust-accuracy-vs-L2 step curves of the member and of the "
               "per-image best over the members, up to the largest best norm (1: it found every minimum)"),
        Metric(f"minimum_share_{m}", f"share of the fooled clean-correct images on which the member {m} found the "
               "smallest perturbation (ties go to the first member)"),
    )


def strength(norms: dict[str, np.ndarray], x_norm: np.ndarray, correct: np.ndarray,
             passes: dict[str, float]) -> dict[str, float]:
    """Per attack m: ``success_m``, ``rho_median_m`` (unfooled images count as infinite), ``rho_mean_m``
    (over the images it fooled), ``passes_m``, ``optimality_m`` and ``minimum_share_m``."""
    correct = np.asarray(correct, bool)
    metrics: dict[str, float] = {}
    opt, share = optimality(norms, correct), minimum_share(norms, correct)
    for m, l2 in norms.items():
        rho = np.asarray(l2, np.float64)[correct] / np.maximum(np.asarray(x_norm, np.float64)[correct], 1e-12)
        fooled = np.isfinite(rho)
        metrics[f"success_{m}"] = float(fooled.mean()) if len(rho) else float("nan")
        metrics[f"rho_median_{m}"] = float(np.median(rho)) if len(rho) else float("nan")
        metrics[f"rho_mean_{m}"] = float(rho[fooled].mean()) if fooled.any() else float("nan")
        metrics[f"passes_{m}"] = float(passes.get(m, float("nan")))
        metrics[f"optimality_{m}"] = opt[m]
        metrics[f"minimum_share_{m}"] = share[m]
    return metrics


class PassCounter(nn.Module):
    """``model`` that counts the image rows of every forward and backward pass through it.

    A backward pass is counted when a gradient reaches the model's output. A vectorised backward over K
    output directions at once (``is_grads_batched``: DeepFool's ``grad_strategy: batched``, its default
    on CUDA) reaches the output once and counts as one pass, not K: counts on the CPU are exact."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.forward_rows += len(x)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_rows += grad.shape[0]

    @property
    def passes(self) -> int:
        return self.forward_rows + self.backward_rows
