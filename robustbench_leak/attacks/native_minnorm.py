"""``minnorm``: per image, the smallest successful L2 perturbation of DeepFool, DDN, FMN and SuperDeepFool.

DeepFool runs with the ``deepfool-exact`` preset's parameters, DDN, FMN and SuperDeepFool with their
engines' defaults except DDN's and FMN's step counts. Version 2 added SuperDeepFool and FMN's version 2
(bound mask, DeepFool start); ALMA was measured and left out (docs/attack-strength.md).

An image counts as fooled when any member's re-checked example changes the clean prediction (success is
the union); its example is the fooled member example of smallest norm. An image no member fooled returns
DeepFool's example, as the ``deepfool`` attack would.

Besides DeepFool's metrics (rho and the robustness curve come from the ensemble's per-image norms),
each member ``m`` reports ``success_m`` (its success rate on clean-correct images), ``overestimate_m``
(the median over clean-correct images it fooled of its norm / the ensemble's norm: 1 when it always
found the smallest), for DDN and FMN the convergence signal ``converged_m`` (see ``norm_results``), and its
strength (``optimality``): ``rho_median_m``, ``rho_mean_m``, ``passes_m`` (forward + backward passes
per image), ``optimality_m`` (AttackBench's, against the per-image best of the members) and
``minimum_share_m`` (share of the fooled clean-correct images on which it supplied the minimum).
``passes`` is the sum over the members. ``budget`` caps each member's passes per image, so that the
members are compared at equal cost; the whole ensemble then costs up to the members' count times it.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..metrics import MIN_NORM_METRICS, PASSES, Metric, flat_l2, flat_linf
from ..runtime import device_batch_size, predict
from .base import Attack, AttackResult, at_least, register_attack
from .masking import MaskingSettings, run_checks
from .native_ddn import CONVERGED_DDN, NativeDDN, ddn_batch
from .native_deepfool import deepfool_engine
from .native_fmn import CONVERGED_FMN, NativeFMN, fmn_batch, fmn_batch_params
from .native_superdeepfool import NativeSuperDeepFool, superdeepfool_batch
from .norm_results import convergence_flag, convergence_signal, counted_batches, minimum_norm_result, steps_within
from .optimality import strength, strength_metrics

DEEPFOOL_EXACT = {"max_iter": 50, "overshoot": 0.02, "nb_grads": 10}  # attacks/deepfool-exact.yaml (a test checks)
_OUTSIDE = ("batch_size", "budget")  # the ensemble's own parameters, not a member's
# The members, in pick order (a tie goes to the first): name -> its batch engine and parameters under the
# ensemble's parameters p. Joining the ensemble is one more line here (its metrics follow from the name).
MEMBER_RUNS: dict[str, Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]] = {
    "deepfool": lambda p: (deepfool_engine, DEEPFOOL_EXACT | {"budget": p["budget"]}),
    "ddn": lambda p: (ddn_batch, {k: v for k, v in NativeDDN.defaults.items() if k not in _OUTSIDE}
                      | {"steps": steps_within(p["ddn_steps"], p["budget"])}),
    "fmn": lambda p: (fmn_batch, fmn_batch_params(NativeFMN.defaults | {"steps": p["fmn_steps"]}, p["budget"])),
    "superdeepfool": lambda p: (superdeepfool_batch, {k: v for k, v in NativeSuperDeepFool.defaults.items()
                                                      if k not in _OUTSIDE} | {"budget": p["budget"]}),
}
MEMBERS = tuple(MEMBER_RUNS)


def member_metrics(m: str) -> tuple[Metric, ...]:
    """What the ensemble reports about member ``m``: its overestimate, then its strength (``optimality``)."""
    return (Metric(f"overestimate_{m}", f"median over clean-correct images {m} fooled of its L2 norm / the minnorm "
                   "ensemble's (1 = it always found the smallest)", unit="ratio", higher_is_better=False),
            *strength_metrics(m))


MASKING_FAILED = Metric("masking_failed", (
    "gradient-masking checks of the cell that failed (minnorm, attacks/masking.py: unbounded success, more steps, "
    "black-box search, PGD to zero; autoattack: Square breaking images the gradient members left robust; "
    "0 = all clear)"), unit="checks", higher_is_better=False)


def member_ratios(norms: dict[str, np.ndarray], fooled: dict[str, np.ndarray], best: np.ndarray,
                  correct: np.ndarray) -> dict[str, float]:
    """``overestimate_m``: median of member norm / ensemble norm over clean-correct images member m fooled."""
    out = {}
    for m, l2 in norms.items():
        use = correct & fooled[m]
        ratio = l2[use] / np.maximum(best[use], 1e-12)
        out[f"overestimate_{m}"] = float(np.median(ratio)) if use.any() else float("nan")
    return out


@register_attack
class NativeMinNorm(Attack):
    kind = "minnorm"
    engine = "native"
    minimum_norm = True
    version = 2  # version 1: DeepFool, DDN and FMN version 1
    description = ("minimum-norm ensemble: per image the smallest successful L2 perturbation of DeepFool "
                   "(deepfool-exact), DDN, FMN and SuperDeepFool")
    defaults = {"ddn_steps": NativeDDN.defaults["steps"], "fmn_steps": NativeFMN.defaults["steps"], "batch_size": 256,
                "budget": None}
    key_neutral = {"budget": None}  # a budget applies to each member: they are compared at equal cost
    ranges = {"ddn_steps": at_least(1), "fmn_steps": at_least(1), "batch_size": at_least(1)}
    # shown in this order; the members' other strength metrics and masking_failed are stored, not shown
    metrics = (*MIN_NORM_METRICS, *(member_metrics(m)[0] for m in MEMBERS), CONVERGED_DDN, CONVERGED_FMN,
               *(f"optimality_{m}" for m in MEMBERS), *(f"minimum_share_{m}" for m in MEMBERS), PASSES)
    declares = (MASKING_FAILED, *(spec for m in MEMBERS for spec in member_metrics(m)[1:]))

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        p = self.params
        clean = predict(model, x, device)
        out, seconds, passes = run_members(model, x, clean, p, device, progress, gen=gen)
        return combine(model, x, y, clean, out, seconds, p, device, passes)

    def check_masking(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, result: AttackResult,
                      device: torch.device, settings: MaskingSettings, gen: torch.Generator | None = None
                      ) -> list[str]:
        """The gradient-masking checks (``masking``) on this run's result: stored in ``result.info["masking"]``
        and ``result.metrics["masking_failed"]``; returns the flags of the failed ones. ``gen``: the generator
        ``run`` drew from, continued by the reruns."""
        p = self.params
        steps = iterative_steps(p)

        def rerun(model: nn.Module, xs: torch.Tensor, clean: torch.Tensor, scale: float) -> dict[str, np.ndarray]:
            fewer = {**p, "budget": None, **{f"{m}_steps": max(1, int(n * scale)) for m, n in steps.items()}}
            out, _, _ = run_members(model, xs, clean, fewer, device, members=tuple(steps), gen=gen)
            return {m: _norms_if_fooled(model, xs, clean, out[m][0], device) for m in out}

        record, flags = run_checks(model, x, y, result.samples, result.metrics["success_rate"],
                                   result.transient["member_norms"], rerun, steps, device, settings)
        result.info["masking"] = record
        result.metrics["masking_failed"] = float(sum(not c["passed"] for c in record["checks"].values()))
        return flags


def _norms_if_fooled(model: nn.Module, x: torch.Tensor, clean: torch.Tensor, x_adv: torch.Tensor,
                     device: torch.device) -> np.ndarray:
    fooled = predict(model, x_adv, device).numpy() != clean.numpy()
    return np.where(fooled, flat_l2((x_adv - x).numpy()), np.inf)


def member_runs(p: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Each member's batch engine and its parameters under the ensemble's parameters ``p``."""
    return {name: run(p) for name, run in MEMBER_RUNS.items()}


def iterative_steps(p: dict[str, Any]) -> dict[str, int]:
    """The steps DDN and FMN run under the ensemble's parameters (and budget)."""
    runs = member_runs(p)
    return {m: runs[m][1]["steps"] for m in ("ddn", "fmn")}


def run_members(model: nn.Module, x: torch.Tensor, clean: torch.Tensor, p: dict[str, Any], device: torch.device,
                progress: bool = False, members: tuple[str, ...] = MEMBERS, gen: torch.Generator | None = None
                ) -> tuple[dict[str, tuple[torch.Tensor, ...]], dict[str, float], dict[str, float]]:
    """Each member's outputs on the CPU, its seconds and its forward + backward passes per image (``gen``: the
    generator of DDN's random directions)."""
    out: dict[str, tuple[torch.Tensor, ...]] = {}
    seconds: dict[str, float] = {}
    passes: dict[str, float] = {}
    # DeepFool's candidate classes bound what any member keeps at once
    batch = device_batch_size(model, x, device, p["batch_size"], len(x), DEEPFOOL_EXACT["nb_grads"])
    for name, (engine, params) in member_runs(p).items():
        if name not in members:
            continue
        t0 = time.perf_counter()
        if name == "ddn":
            params = params | {"gen": gen}
        out[name], passes[name] = counted_batches(engine, model, x, clean, batch, device, f"minnorm: {name}",
                                                  progress, **params)
        seconds[name] = time.perf_counter() - t0
    return out, seconds, passes


def combine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
            out: dict[str, tuple[torch.Tensor, ...]], seconds: dict[str, float], p: dict[str, Any],
            device: torch.device, passes: dict[str, float] | None = None, *, members: tuple[str, ...] = MEMBERS,
            norm: str = "l2", converging: dict[str, int] | None = None) -> AttackResult:
    """The ensemble's result from each member's (examples, ...) on the CPU: re-check, pick, metrics, flags.

    ``members`` in pick order; ``norm``: the norm compared (``l2`` or ``linf``); ``converging``: the members
    whose outputs carry best norms before and after the convergence tail, with their steps (default: DDN
    and FMN's under ``p``)."""
    size = flat_l2 if norm == "l2" else flat_linf
    clean_np, y_np = clean.numpy(), y.numpy()
    correct = clean_np == y_np
    advs = {m: out[m][0] for m in members}
    preds = {m: predict(model, advs[m], device).numpy() for m in members}  # re-check every member example
    fooled = {m: preds[m] != clean_np for m in members}
    norms = {m: size((advs[m] - x).numpy()) for m in members}
    candidates = np.stack([np.where(fooled[m], norms[m], np.inf) for m in members])
    pick = np.where(np.isfinite(candidates).any(axis=0), candidates.argmin(axis=0), 0)
    rows = torch.arange(len(x))
    pick_t = torch.from_numpy(pick)
    x_adv = torch.stack([advs[m] for m in members])[pick_t, rows]
    adv_pred = np.stack([preds[m] for m in members])[pick, np.arange(len(x))]
    result = minimum_norm_result(x, x_adv, y, clean_np, adv_pred, norm=norm)
    best = result.samples[norm]
    metrics = result.metrics
    metrics.update(member_ratios(norms, fooled, best, correct))
    member_norms = {m: np.where(fooled[m], norms[m], np.inf) for m in members}
    result.transient["member_norms"] = member_norms
    metrics.update(strength(member_norms, size(x.numpy()), correct, passes or {}))
    metrics["passes"] = float(sum((passes or {}).values())) if passes else float("nan")
    flags = []
    for m, steps in (iterative_steps(p) if converging is None else converging).items():
        _, final, before = out[m]
        metrics[f"converged_{m}"] = convergence_signal(before.numpy(), final.numpy())
        flag = convergence_flag(m.upper(), metrics[f"converged_{m}"], steps)
        flags += [flag] if flag else []
    won = correct & np.isfinite(candidates).any(axis=0)
    result.info.update(member_seconds=seconds,
                       smallest_by={m: int(np.sum(won & (pick == k))) for k, m in enumerate(members)})
    if flags:
        result.info["flags"] = flags
    return result
