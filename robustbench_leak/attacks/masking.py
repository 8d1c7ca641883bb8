"""Gradient-masking checks of Carlini et al., "On Evaluating Adversarial Robustness" (2019), for the
minimum-norm ensemble. Each check either passes or adds a flag to the cell; none changes its values.

Settings: ``MaskingSettings`` (a config's ``masking:`` entry). On the first ``images``
clean-correct images (the subset), after the ensemble has run:
- ``unbounded_success``: the unbounded attack fools (close to) every clean-correct image: success of the
  ensemble over all attacked images at least ``min_success`` (its flag is the re-check's, in ``cells``);
- ``more_steps``: more steps never give larger perturbations: each iterative member rerun with half its
  steps; the area under its robust-accuracy curve on the subset (``optimality.curve_area``, up to the
  largest norm either run found) at full steps is at most ``1 + tolerance`` times the half-step area;
- ``black_box``: the white-box minimum is never larger than what a black-box search finds
  (``black_box_search``: ``directions`` lines per image, half random, half towards the nearest attacked
  images of another class, each bisected ``search_steps`` times); no subset image may have an ensemble norm above
  ``1 + tolerance`` times the smallest black-box norm (an image the ensemble did not fool but the search
  did counts as above);
- ``pgd_to_zero``: accuracy under L2 PGD (``pgd_steps`` steps) falls to 0 at large epsilon: eps at 1, 2,
  4 and 8 times the ensemble's median L2 on the subset (fractions 1/8 to 1 of the largest possible
  perturbation when it fooled none), never rising with eps by more than one image, and at most
  ``1 - min_success`` at the largest eps.
The checks' costs: with the defaults about 16 x (16 x 9 forward passes + half of each iterative
member's steps + 4 x 10 PGD steps), 7% of the attack time of the published 200-image quickstart
minnorm cells (docs/attack-strength.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..metrics import flat_l2
from ..runtime import predict
from .optimality import curve_area
from .pgd import pgd



@dataclass(frozen=True)
class MaskingSettings:
    """The checks' settings; a config's ``masking:`` entry sets them (same fields and defaults)."""

    enabled: bool = True
    images: int = 16  # clean-correct images the checks run on
    directions: int = 16  # random directions of the black-box search per image
    search_steps: int = 8  # bisection steps along each direction
    pgd_steps: int = 10
    min_success: float = 0.99
    tolerance: float = 0.01


PGD_MULTIPLES = (1.0, 2.0, 4.0, 8.0)

# (model, x, clean prediction, step scale) -> per iterative member, its L2 norms (inf: not fooled)
Rerun = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], dict[str, np.ndarray]]


def black_box_search(model: nn.Module, x: torch.Tensor, clean: torch.Tensor, pool: torch.Tensor,
                     pool_pred: torch.Tensor, directions: int, search_steps: int, device: torch.device,
                     seed: int = 0) -> np.ndarray:
    """Per image, the smallest L2 norm of ``clip(x + t d) - x`` that changes the prediction, found with
    prediction queries only: bisection on ``t`` along half of ``directions`` random unit directions (out to
    where most pixels reach a bound) and along the segments to the other half's nearest images of ``pool``
    that the model puts in another class (boundary-style: those end points are adversarial by
    construction). inf when no line changes the prediction."""
    gen = torch.Generator().manual_seed(seed)
    n, dim, shape = len(x), x[0].numel(), x.shape[1:]
    n_rand = (directions + 1) // 2
    rand = torch.randn((n, n_rand, *shape), generator=gen)
    rand = rand / rand.flatten(2).norm(dim=2).view(n, n_rand, *[1] * len(shape))
    lines, reach = [rand], [torch.full((n, n_rand), 2.0 * math.sqrt(dim))]
    n_pool = min(directions - n_rand, len(pool))
    if n_pool > 0:
        dist = torch.cdist(x.flatten(1).double(), pool.flatten(1).double())
        dist[clean[:, None] == pool_pred[None, :]] = math.inf  # only images of another class
        near, idx = dist.topk(n_pool, dim=1, largest=False)
        seg = pool[idx] - x.unsqueeze(1)
        lines.append(seg / near.clamp_min(1e-12).float().view(n, n_pool, *[1] * len(shape)))
        reach.append(near.float())
    d, hi = torch.cat(lines, dim=1), torch.cat(reach, dim=1)
    k = d.shape[1]
    base = x.unsqueeze(1).expand_as(d)
    label = clean.unsqueeze(1).expand(n, k).reshape(-1)

    def points(t: torch.Tensor) -> torch.Tensor:
        return (base + t.view(n, k, *[1] * len(shape)) * d).clamp(0, 1)

    def fooled(t: torch.Tensor) -> torch.Tensor:
        return (predict(model, points(t).reshape(-1, *shape), device) != label).view(n, k)

    finite = torch.isfinite(hi)  # a pool point at no finite distance: no line to search (and no NaN input)
    hi = torch.where(finite, hi, torch.zeros_like(hi))
    found = fooled(hi) & finite
    lo = torch.zeros_like(hi)
    for _ in range(search_steps):
        mid = (lo + hi) / 2
        adv = fooled(mid)
        hi, lo = torch.where(adv, mid, hi), torch.where(adv, lo, mid)
    norms = (points(hi) - base).flatten(2).norm(dim=2)
    return torch.where(found, norms, torch.full_like(norms, math.inf)).min(dim=1).values.double().numpy()


def pgd_accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_levels: list[float], steps: int,
                   device: torch.device) -> list[float]:
    """Accuracy of ``model`` under L2 PGD at each eps (no random start, step 2.5 eps / steps)."""
    out = []
    for eps in eps_levels:
        adv = pgd(model, x.to(device), y.to(device), eps=eps, step=2.5 * eps / steps, steps=steps, norm="l2",
                  random_start=False).cpu()
        out.append(float((predict(model, adv, device) == y).float().mean()))
    return out


def _check(passed: bool, value: float, limit: float, text: str) -> dict[str, Any]:
    return {"passed": bool(passed), "value": float(value), "limit": float(limit), "text": text}


def run_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: dict[str, np.ndarray],
               success_rate: float, member_norms: dict[str, np.ndarray], rerun: Rerun,
               steps: dict[str, int], device: torch.device, settings: MaskingSettings
               ) -> tuple[dict[str, Any], list[str]]:
    """The checks' record (``info["masking"]``) and a flag per failed check (none for unbounded success,
    which the re-check in ``cells.sanity_checks`` flags).

    ``samples``: the ensemble's per-image arrays (label, clean_pred, adv_pred, l2); ``member_norms``: each
    member's L2 norms at its full steps (inf: not fooled); ``rerun`` runs the iterative members on a
    subset at a fraction of their steps; ``steps``: each iterative member's full step count."""
    t0 = time.perf_counter()
    tol = settings.tolerance
    correct = samples["clean_pred"] == samples["label"]
    subset = np.flatnonzero(correct)[:settings.images]
    checks: dict[str, dict[str, Any]] = {}
    flags: list[str] = []
    checks["unbounded_success"] = _check(success_rate >= settings.min_success, success_rate, settings.min_success,
                                         "success of the unbounded ensemble on clean-correct images")
    if len(subset) == 0:
        return {"images": 0, "checks": checks, "seconds": time.perf_counter() - t0}, flags
    idx = torch.from_numpy(subset)
    xs, ys = x[idx], y[idx]
    clean = torch.from_numpy(samples["clean_pred"][subset])
    fooled = samples["adv_pred"][subset] != samples["clean_pred"][subset]
    white = np.where(fooled, samples["l2"][subset], np.inf)

    half = rerun(model, xs, clean, 0.5)
    worst_ratio, worst_member = 0.0, ""
    ones = np.ones(len(subset), bool)
    for m, half_norms in half.items():
        full_norms = np.asarray(member_norms[m], np.float64)[subset]
        both = np.concatenate([full_norms, half_norms])
        cap = float(both[np.isfinite(both)].max()) if np.isfinite(both).any() else 1.0
        full_area, half_area = curve_area(full_norms, ones, cap), curve_area(half_norms, ones, cap)
        ratio = full_area / half_area if half_area > 0 else (1.0 if full_area == 0 else math.inf)
        if ratio >= worst_ratio:
            worst_ratio, worst_member = ratio, m
    if half:
        checks["more_steps"] = _check(worst_ratio <= 1 + tol, worst_ratio, 1 + tol,
                                      f"largest full-step / half-step robust-accuracy area ({worst_member})")
        if worst_ratio > 1 + tol:
            flags.append(f"gradient masking check: {worst_member.upper()} at {steps[worst_member]} steps found larger "
                         f"perturbations than at half the steps on {len(subset)} images (robust-accuracy area "
                         f"{worst_ratio:.3f}x, tolerance {1 + tol:g}x); more steps should never hurt")

    black = black_box_search(model, xs, clean, x, torch.from_numpy(samples["clean_pred"]), settings.directions,
                             settings.search_steps, device)
    above = np.isfinite(black) & ~(white <= black * (1 + tol))
    checks["black_box"] = _check(not above.any(), float(above.mean()), 0.0,
                                 "share of images where the black-box search beat the white-box minimum")
    searched = np.isfinite(black)
    checks["black_box"]["median_ratio"] = float(np.median(white[searched] / black[searched])) if searched.any() \
        else math.nan
    if above.any():
        flags.append(f"gradient masking check: a black-box search (random directions, lines to other-class images) "
                     f"found smaller perturbations than the white-box ensemble on {int(above.sum())} of {len(subset)} images; gradients may be masked")

    finite = white[np.isfinite(white)]
    worst = float(flat_l2(torch.maximum(xs, 1 - xs).numpy()).mean())
    if len(finite):
        levels = [min(k * float(np.median(finite)), worst) for k in PGD_MULTIPLES]
    else:
        levels = [worst * k / PGD_MULTIPLES[-1] for k in PGD_MULTIPLES]
    acc = pgd_accuracies(model, xs, ys, levels, settings.pgd_steps, device)
    rises = any(b > a + 1.0 / len(subset) + 1e-9 for a, b in zip(acc, acc[1:]))
    top = 1 - settings.min_success
    checks["pgd_to_zero"] = _check(acc[-1] <= top and not rises, acc[-1], top,
                                   "accuracy under L2 PGD at the largest eps")
    checks["pgd_to_zero"].update(eps=levels, accuracy=acc)
    if acc[-1] > top or rises:
        what = (f"accuracy {100 * acc[-1]:.0f}% at eps {levels[-1]:.3g}" if acc[-1] > top
                else "accuracy rose with eps (" + ", ".join(f"{100 * a:.0f}%" for a in acc) + ")")
        flags.append(f"gradient masking check: L2 PGD on {len(subset)} images did not fall to 0 accuracy at large "
                     f"eps ({what}); gradients may be masked")
    return {"images": int(len(subset)), "checks": checks, "seconds": time.perf_counter() - t0}, flags
