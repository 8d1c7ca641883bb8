"""``minnorm-linf``: per image, the smallest successful L-inf perturbation of the L-inf minimum-norm members.

The L-inf counterpart of ``minnorm`` (its ``combine`` picks, re-checks and scores the members the same
way): success is the union of the members', the example the fooled member example of smallest L-inf
norm, and each member ``m`` reports ``success_m``, ``overestimate_m``, AttackBench's ``optimality_m``
(areas under the robust-accuracy-vs-L-inf curves), ``minimum_share_m``, ``rho_median_m``/``rho_mean_m``
(its L-inf norm over the image's) and ``passes_m``. ``budget`` caps each member's passes per image.

The members are ``MEMBER_RUNS``, one line each, in pick order (a tie goes to the first); their metrics
follow from the name (``member_metrics``), so joining the ensemble is one more line.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn as nn

from ..metrics import LINF_MEDIAN, PASSES, ROBUST_ACCURACY, SUCCESS_RATE, Metric
from ..runtime import device_batch_size, predict
from .base import Attack, AttackResult, at_least, register_attack
from .native_deepfool import deepfool_engine
from .native_fab import fab_batch
from .native_fmn import NativeFMNLinf, fmn_batch, fmn_batch_params
from .native_minnorm import DEEPFOOL_EXACT, combine
from .norm_results import counted_batches

Engine = Callable[..., tuple[torch.Tensor, ...]]
FAB_STEPS = 100  # FAB's own default (Croce & Hein, ICML 2020)


def fab_linf_engine(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, n_iter: int,
                    budget: int | None) -> tuple[torch.Tensor]:
    """Untargeted FAB as a minimum-norm L-inf member: its steps cut to ``budget`` passes per image (a step
    takes a forward pass and one gradient per class, as in native_autoattack's plan)."""
    if budget is not None:
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        n_iter = max(1, min(n_iter, (budget - 1) // (2 + classes)))
    return (fab_batch(model, x, labels, norm="linf", n_iter=n_iter),)

# member -> (its batch engine, its parameters under the ensemble's ``p``); outputs start with the examples
MEMBER_RUNS: dict[str, Callable[[dict[str, Any]], tuple[Engine, dict[str, Any]]]] = {
    "deepfool_linf": lambda p: (deepfool_engine, DEEPFOOL_EXACT | {"budget": p["budget"], "norm": "linf"}),
    "fmn_linf": lambda p: (fmn_batch, fmn_batch_params(NativeFMNLinf.defaults | {"steps": p["fmn_steps"]},
                                                       p["budget"]) | {"norm": "linf"}),
    "fab_linf": lambda p: (fab_linf_engine, {"n_iter": FAB_STEPS, "budget": p["budget"]}),
}
MEMBERS = tuple(MEMBER_RUNS)
# members whose outputs are (examples, best norm at the end, best norm before the convergence tail)
CONVERGING = {"fmn_linf": lambda p: MEMBER_RUNS["fmn_linf"](p)[1]["steps"]}
CONVERGED_FMN_LINF = Metric("converged_fmn_linf", (
    "FMN-Linf's convergence signal in the minnorm-linf ensemble: median relative fall of the best L-inf norm over "
    "the last 10% of its steps (above 1% flags the cell)"), unit="ratio", higher_is_better=False)


def member_metrics(m: str) -> tuple[Metric, ...]:
    """What the ensemble reports about member ``m``: its overestimate, optimality and minimum share (shown),
    then its success, rho and passes (stored)."""
    return (
        Metric(f"overestimate_{m}", f"median over clean-correct images {m} fooled of its L-inf norm / the minnorm-linf "
               "ensemble's (1 = it always found the smallest)", unit="ratio", higher_is_better=False),
        Metric(f"optimality_{m}", f"AttackBench's optimality of the member {m} against the per-image best L-inf norm of "
               "the minnorm-linf members (1: it found every minimum)"),
        Metric(f"minimum_share_{m}", f"share of the fooled clean-correct images on which the member {m} found the "
               "smallest L-inf perturbation (ties go to the first member)"),
        Metric(f"success_{m}", f"success rate of the minnorm-linf member {m} alone (clean-correct images)"),
        Metric(f"rho_median_{m}", f"median of ||x_adv - x||_inf / ||x||_inf of the member {m} alone over clean-correct "
               "images (an image it did not fool counts as infinite)", unit="ratio"),
        Metric(f"rho_mean_{m}", f"mean ||x_adv - x||_inf / ||x||_inf of the member {m} alone over the clean-correct "
               "images it fooled", unit="ratio"),
        Metric(f"passes_{m}", f"forward plus backward passes per image of the member {m}", unit="passes/image",
               higher_is_better=False),
    )


@register_attack
class NativeMinNormLinf(Attack):
    kind = "minnorm-linf"
    engine = "native"
    minimum_norm = True
    norm = "linf"
    description = ("L-inf minimum-norm ensemble: per image the smallest successful L-inf perturbation of "
                   f"{', '.join(MEMBERS)}")
    defaults = {"fmn_steps": NativeFMNLinf.defaults["steps"], "batch_size": 256, "budget": None}
    key_neutral = {"budget": None}
    ranges = {"fmn_steps": at_least(1), "batch_size": at_least(1)}
    metrics = (SUCCESS_RATE, LINF_MEDIAN, ROBUST_ACCURACY, *(member_metrics(m)[0] for m in MEMBERS), CONVERGED_FMN_LINF,
               *(member_metrics(m)[1] for m in MEMBERS), *(member_metrics(m)[2] for m in MEMBERS), PASSES)
    declares = tuple(spec for m in MEMBERS for spec in member_metrics(m)[3:])

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        p = self.params
        clean = predict(model, x, device)
        out: dict[str, tuple[torch.Tensor, ...]] = {}
        seconds: dict[str, float] = {}
        passes: dict[str, float] = {}
        batch = device_batch_size(model, x, device, p["batch_size"], len(x), DEEPFOOL_EXACT["nb_grads"])
        for name, member in MEMBER_RUNS.items():
            engine, params = member(p)
            t0 = time.perf_counter()
            out[name], passes[name] = counted_batches(engine, model, x, clean, batch, device,
                                                      f"minnorm-linf: {name}", progress, **params)
            seconds[name] = time.perf_counter() - t0
        return combine(model, x, y, clean, out, seconds, p, device, passes, members=MEMBERS, norm="linf",
                       converging={m: steps(p) for m, steps in CONVERGING.items()})
