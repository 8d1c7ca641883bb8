"""AutoAttack (Croce & Hein, ICML 2020), RobustBench's standard evaluation, native and batched, L-inf or L2.

Versions: ``standard`` runs APGD-CE, APGD-T (targeted DLR, 9 target classes), FAB-T (9 target classes) and
Square (5,000 queries, p_init 0.8) in that order, each on the images every earlier member left robust, and
reports the pointwise worst case; ``rand`` (models with randomness) runs APGD-CE and APGD-DLR with the gradient
averaged over ``eot_iter`` (20) draws; ``custom`` runs the ``members`` listed, in their order. Parameters are
the reference's (n_iter 100, n_restarts 1); ``budget`` caps the forward plus backward passes each member may
take per image (its iterations, targets and queries are cut to fit), so members compare at equal cost.

Robust accuracy is RobustBench's: a clean-misclassified image is not robust; an image is broken by the first
member whose example is re-checked (by a forward pass not counted in ``passes``) to be misclassified within
``eps`` of the clean image. ``eps`` null takes the dataset's default (``DATASET_EPS``): the attack learns the
dataset through ``bind_dataset`` before it runs. The cell key then carries ``eps: null`` and the dataset, so a
change of ``DATASET_EPS`` must raise ``version``.

Stored: ``robust_accuracy`` (with its bootstrap interval, from the per-image predictions), per member
``robust_accuracy_after_<m>`` and ``broke_first_<m>`` (share of the attacked images it broke first) and
``passes_<m>``; ``passes`` (per image, all members); per image the member that broke it (``broken_by``) and
the perturbation's L-inf and L2 norms. ``check_masking`` flags a cell where the black-box Square broke images
the gradient-based members before it could not (gradient masking suspected).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..metrics import CLEAN_ACCURACY, PASSES, ROBUST_ACCURACY, SUCCESS_RATE, Metric, flat_l2, prediction_metrics
from ..options import short
from ..runtime import device_batch_size, predict
from .base import Attack, AttackResult, Range, above, at_least, register_attack
from .masking import MaskingSettings
from .native_apgd import apgd_batch, check_loss_classes
from .native_fab import fab_batch
from .native_minnorm import MASKING_FAILED
from .native_square import square_batch
from .optimality import PassCounter

AA_MEMBERS = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")
VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr"), "custom": ()}
GRADIENT_MEMBERS = ("apgd-ce", "apgd-t", "fab-t", "apgd-dlr", "fab")
# Per dataset, the epsilons where standard-trained models keep a robust accuracy well inside (0, clean accuracy),
# so models differ (measured with torchattacks' AutoAttack on the quickstart models, issue 33; docs/attacks.md).
DATASET_EPS = {"fashion-mnist": {"linf": 4 / 255, "l2": 0.5}}
SQUARE_FLAG_SHARE = 0.01  # Square breaking more than this share of the clean-correct images first is flagged


MEMBER_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T (targeted DLR)", "fab-t": "FAB-T", "square": "Square",
                "apgd-dlr": "APGD-DLR", "fab": "FAB (untargeted)"}


def member_key(member: str) -> str:
    """The member's name inside metric names: 'apgd-ce' -> 'apgd_ce'."""
    return member.replace("-", "_")


def member_metrics(member: str) -> tuple[Metric, Metric, Metric]:
    """What a cell stores per member: robust accuracy after it, the share it broke first, its passes."""
    key, name = member_key(member), MEMBER_NAMES[member]
    return (Metric(f"robust_accuracy_after_{key}", (f"AutoAttack: robust accuracy over all attacked images after {name}, "
                                                    "with every member before it (clean-misclassified images count "
                                                    "as not robust)"), percent=True),
            Metric(f"broke_first_{key}", (f"AutoAttack: share of the attacked images {name} broke first (the members "
                                          "before it had left them robust)"), percent=True, higher_is_better=False),
            Metric(f"passes_{key}", f"AutoAttack: forward plus backward passes per attacked image of {name}",
                   unit="passes", higher_is_better=False))


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def member_plan(member: str, p: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """The member's iterations (or queries), restarts and EOT draws under ``p['budget']`` passes per image."""
    budget, restarts = p["budget"], p["n_restarts"]
    targets = min(p["n_target_classes"], n_classes - 1) if member in ("apgd-t", "fab-t") else 1
    eot = p["eot_iter"] if p["version"] == "rand" else 1
    runs = restarts * targets
    if member.startswith("apgd"):
        n_iter = p["n_iter"] if budget is None else max(1, min(p["n_iter"], (budget - 1) // (2 * eot * runs) - 1))
        return {"n_iter": n_iter, "eot_iter": eot}
    if member.startswith("fab"):
        per_step = 3 if member == "fab-t" else 2 + n_classes
        return {"n_iter": p["n_iter"] if budget is None else max(1, min(p["n_iter"], (budget - 1) // (per_step * runs)))}
    return {"n_queries": p["n_queries"] if budget is None else max(1, min(p["n_queries"], budget // restarts - 2))}


def run_member(member: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: dict[str, Any], eps: float,
               plan: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """The member's examples for a batch on its device (``x`` where it found none)."""
    norm = p["norm"]
    if member.startswith("apgd"):
        loss = {"apgd-ce": "ce", "apgd-t": "dlr-targeted", "apgd-dlr": "dlr"}[member]
        return apgd_batch(model, x, y, norm=norm, eps=eps, loss=loss, n_iter=plan["n_iter"],
                          n_restarts=p["n_restarts"], n_target_classes=p["n_target_classes"], rho=p["rho"],
                          eot_iter=plan["eot_iter"], gen=gen)[0]
    if member.startswith("fab"):
        return fab_batch(model, x, y, norm=norm, targeted=member == "fab-t", n_target_classes=p["n_target_classes"],
                         n_iter=plan["n_iter"], n_restarts=p["n_restarts"], eps=eps, alpha_max=p["alpha_max"],
                         eta=p["eta"], beta=p["beta"], gen=gen)
    return square_batch(model, x, y, norm=norm, eps=eps, n_queries=plan["n_queries"], p_init=p["p_init"],
                        n_restarts=p["n_restarts"], gen=gen)[0]


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: dict[str, Any], members: tuple[str, ...],
               device: torch.device, gen: torch.Generator, progress: bool = False
               ) -> tuple[torch.Tensor, np.ndarray, dict[str, float], dict[str, float], dict[str, float]]:
    """The members in order, each on the images still robust: the examples (CPU), per image the index in
    ``members`` of the member that broke it (-1: none), and per member its robust accuracy after it, its passes
    per image and its seconds."""
    eps = p["eps"]
    n = len(x)
    clean = predict(model, x, device)
    robust = (clean == y).numpy()
    x_adv = x.clone()
    broken_by = np.full(n, -1)
    counter = PassCounter(model)
    with torch.no_grad():
        n_classes = int(model(x[:1].to(device)).shape[1]) if n else 0
    batch = device_batch_size(model, x, device, p["batch_size"], n, 1)
    after, passes, seconds = {}, {}, {}
    bar = tqdm(total=len(members), desc="autoattack", disable=not progress, leave=False)
    tol = eps * 1e-5 + 1e-7  # float32 rounding of the projections
    for k, member in enumerate(members):
        t0, before = time.perf_counter(), counter.passes
        plan = member_plan(member, p, n_classes)
        idx = np.flatnonzero(robust)
        for i in range(0, len(idx), batch):
            rows = torch.from_numpy(idx[i:i + batch])
            xb, yb = x[rows].to(device), y[rows].to(device)
            adv = run_member(member, counter, xb, yb, p, eps, plan, gen)
            with torch.no_grad():
                ok = (model(adv).argmax(1) != yb) & (norm_of(adv - xb, p["norm"]) <= eps + tol)
            ok_cpu = ok.cpu()
            x_adv[rows[ok_cpu]] = adv[ok].cpu()
            robust[rows[ok_cpu].numpy()] = False
            broken_by[rows[ok_cpu].numpy()] = k
        after[member] = float(robust.mean()) if n else float("nan")
        passes[member] = (counter.passes - before) / max(1, n)
        seconds[member] = time.perf_counter() - t0
        bar.update(1)
    bar.close()
    return x_adv, broken_by, after, passes, seconds


def _members_check(value: Any, version: str) -> tuple[str, ...]:
    if version != "custom":
        if value is not None:
            raise ValueError(f"attack 'autoattack' parameter 'members' applies to version 'custom' only, got "
                             f"{short(value)} with version {version!r}; remove it or set version: custom")
        return VERSIONS[version]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise ValueError(f"attack 'autoattack' parameter 'members' must be a non-empty list of "
                         f"{', '.join(AA_MEMBERS)} with version 'custom', got {short(value)}")
    bad = [m for m in value if m not in AA_MEMBERS]
    if bad or len(set(value)) != len(value):
        raise ValueError(f"attack 'autoattack' parameter 'members' must list distinct members of "
                         f"{', '.join(AA_MEMBERS)}, got {short(value)}")
    return tuple(value)


@register_attack
class NativeAutoAttack(Attack):
    kind = "autoattack"
    engine = "native"
    description = ("AutoAttack (Croce & Hein, ICML 2020): APGD-CE, APGD-T, FAB-T and Square, each on the images "
                   "still robust, pointwise worst case (RobustBench's robust accuracy), batched PyTorch")
    defaults = {"norm": "linf", "eps": None, "version": "standard", "members": None, "n_iter": 100,
                "n_restarts": 1, "n_target_classes": 9, "n_queries": 5000, "p_init": 0.8, "rho": 0.75,
                "eot_iter": 20, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9, "batch_size": 256, "budget": None}
    key_neutral = {"budget": None}
    ranges = {"n_iter": at_least(1), "n_restarts": at_least(1), "n_target_classes": at_least(1),
              "n_queries": at_least(1), "p_init": Range(0, 1, lo_open=True), "rho": Range(0, 1),
              "eot_iter": at_least(1), "alpha_max": Range(0, 1), "eta": above(0), "beta": Range(0, 1),
              "batch_size": at_least(1)}
    choices = {"norm": ("linf", "l2"), "version": tuple(VERSIONS)}
    metrics = (ROBUST_ACCURACY, CLEAN_ACCURACY, SUCCESS_RATE,
               *(member_metrics(m)[0] for m in AA_MEMBERS), *(member_metrics(m)[1] for m in AA_MEMBERS),
               *(member_metrics(m)[2] for m in AA_MEMBERS), PASSES, MASKING_FAILED)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        merged = super().check_params(params)
        eps = merged["eps"]
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1e3):
            raise ValueError(f"attack 'autoattack' parameter 'eps' must be a number > 0 (the radius in the "
                             f"attacked norm, images in [0, 1]) or null (the dataset's default), got {short(eps)}")
        if eps is not None:
            merged["eps"] = float(eps)
        _members_check(merged["members"], merged["version"])
        return merged

    @classmethod
    def check_dataset(cls, params: dict[str, Any], dataset: str) -> None:
        """Raise ValueError when ``eps`` is null and ``dataset`` has no default epsilon."""
        if params.get("eps") is None and dataset not in DATASET_EPS:
            raise ValueError(f"attack 'autoattack' has no default eps for dataset {dataset!r} (defaults: "
                             f"{', '.join(DATASET_EPS)}); set params.eps")

    @classmethod
    def check_classes(cls, params: dict[str, Any], num_classes: int) -> None:
        """Raise ValueError when a member's loss is undefined for ``num_classes`` classes (DLR needs 3, APGD-T 4)."""
        for member in _members_check(params["members"], params["version"]):
            loss = {"apgd-t": "dlr-targeted", "apgd-dlr": "dlr"}.get(member)
            if loss:
                check_loss_classes(loss, num_classes, f"attack 'autoattack' member {member}")

    def bind_dataset(self, dataset: str) -> None:
        if self.params["eps"] is None:
            self.check_dataset(self.params, dataset)
            self.params = {**self.params, "eps": DATASET_EPS[dataset][self.params["norm"]]}

    def members(self) -> tuple[str, ...]:
        return _members_check(self.params["members"], self.params["version"])

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        p = self.params
        if p["eps"] is None:
            raise ValueError("attack 'autoattack': eps is null and no dataset was bound; set params.eps")
        gen = gen if gen is not None else torch.Generator().manual_seed(0)
        members = self.members()
        x_adv, broken_by, after, passes, seconds = autoattack(model, x, y, p, members, device, gen, progress)
        clean = predict(model, x, device).numpy()
        adv_pred = predict(model, x_adv, device).numpy()
        labels = y.numpy()
        metrics = prediction_metrics(labels, clean, adv_pred)
        n = max(1, len(x))
        for k, m in enumerate(members):
            metrics[f"robust_accuracy_after_{member_key(m)}"] = after[m]
            metrics[f"broke_first_{member_key(m)}"] = float(np.sum(broken_by == k)) / n
            metrics[f"passes_{member_key(m)}"] = passes[m]
        metrics["passes"] = float(sum(passes.values()))
        delta = (x_adv - x).flatten(1)
        samples = {"label": labels, "clean_pred": clean, "adv_pred": adv_pred, "l2": flat_l2(delta.numpy()),
                   "linf": delta.abs().amax(1).double().numpy() if len(x) else np.zeros(0),
                   "broken_by": np.array([members[k] if k >= 0 else None for k in broken_by], dtype=object)}
        info = {"eps": p["eps"], "members": list(members), "member_seconds": seconds}
        return AttackResult(metrics, samples, info=info, transient={"broken_by": broken_by, "members": members})

    def check_masking(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, result: AttackResult,
                      device: torch.device, settings: MaskingSettings, gen: torch.Generator | None = None
                      ) -> list[str]:
        """Square (black-box) breaking images the gradient-based members before it left robust: flagged when more
        than ``SQUARE_FLAG_SHARE`` of the clean-correct images. Stored in ``info["masking"]``."""
        members, broken_by = result.transient["members"], result.transient["broken_by"]
        checks: dict[str, dict[str, Any]] = {}
        flags = []
        if "square" in members and any(m in GRADIENT_MEMBERS for m in members[:members.index("square")]):
            correct = int(np.sum(result.samples["clean_pred"] == result.samples["label"]))
            by_square = int(np.sum(broken_by == members.index("square")))
            share = by_square / max(1, correct)
            passed = share <= SQUARE_FLAG_SHARE
            checks["square_after_gradient"] = {"passed": passed, "broken": by_square, "clean_correct": correct}
            if not passed:
                flags.append(f"Square (black-box) broke {by_square} of {correct} clean-correct images the "
                             "gradient-based members could not: gradients may be masked, so the gradient "
                             "attacks' numbers understate what an adaptive attack finds")
        result.info["masking"] = {"checks": checks, "seconds": 0.0}
        result.metrics["masking_failed"] = float(sum(not c["passed"] for c in checks.values()))
        return flags
