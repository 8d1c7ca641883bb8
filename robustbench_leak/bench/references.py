"""``rbleak bench``'s reference comparisons: native AutoAttack against torchattacks' and ART's, and every native
minimum-norm engine against its adv-lib counterpart, on the same images and settings (images per second;
AutoAttack against torchattacks, and the minimum-norm engines against adv-lib, timed in interleaved rounds,
best of each).

Two native times per minimum-norm engine: the engine alone as ``Attack.run`` drives it (``counted_batches``:
the batches and the pass counter), which is the like-for-like comparison with adv-lib's bare function, and the
whole ``run`` (clean predictions, re-check of every example, metrics and perturbation spectra), which is what a
cell costs. A reference that is not installed is reported as such, never timed as zero.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..attacks import attack_class, build_attack
from ..attacks.native_ddn import ddn_batch
from ..attacks.native_fmn import fmn_batch, fmn_batch_params
from ..attacks.native_superdeepfool import superdeepfool_batch
from ..attacks.norm_results import counted_batches
from ..runtime import predict
from .common import best_time, best_times_interleaved

Log = Callable[[str], None]
# torchattacks' AutoAttack runs APGD and FAB at their class defaults (10 steps) with 5,000 Square queries
TORCHATTACKS_AA = {"n_iter": 10, "n_restarts": 1, "n_queries": 5000}
MINNORM_STEPS = 100  # DDN and FMN, as the adv-lib cross-check runs them
MINNORM_ROUNDS = 4  # best of four interleaved rounds: single runs of equal engines differed by 10% on 2 cores
AA_ROUNDS = 2  # AutoAttack against torchattacks: two interleaved rounds (a run takes 30-60 s on 2 cores; single
# runs in fixed order measured L2 at 0.99x and 0.88x in two runs, while Square alone, interleaved, ran 1.12x)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def bench_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, log: Log,
                     norm: str = "linf", eps: float = 4 / 255) -> dict[str, Any]:
    """Native AutoAttack (standard) against torchattacks' at torchattacks' settings; the ``autoattack`` preset's
    robust accuracy (the held-out check against torchattacks'); native APGD-CE against ART's
    AutoProjectedGradientDescent at 100 iterations; and native AutoAttack against ART's on the members both have."""
    out: dict[str, Any] = {"n_images": len(x), "norm": norm, "eps": eps, "settings": TORCHATTACKS_AA}
    out.update(native_vs_torchattacks_aa(model, x, y, device, norm, eps))
    gen = torch.Generator().manual_seed(0)
    # the held-out check: the `autoattack` preset as a cell runs it (the reference's 100 iterations), which
    # should be within a point of torchattacks' AutoAttack, or below it
    preset = build_attack("autoattack", norm=norm, eps=eps).run(model, x, y, device, progress=False,
                                                                 gen=torch.Generator().manual_seed(0))
    out["preset_robust_accuracy"] = preset.metrics["robust_accuracy"]
    from art.attacks.evasion import AutoProjectedGradientDescent

    from ..attacks.art import art_classifier, num_classes_of

    clf = art_classifier(model, tuple(x.shape[1:]), num_classes_of(model, x, device), device)
    art = AutoProjectedGradientDescent(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=2 * eps,
                                       max_iter=100, nb_random_init=1, batch_size=256, loss_type="cross_entropy",
                                       verbose=False)
    t_art, _ = best_time(lambda: art.generate(x.numpy(), y=y.numpy()), device)
    t_apgd, _ = best_time(lambda: build_attack("autoattack", norm=norm, eps=eps, version="custom",
                                              members=["apgd-ce"]).run(model, x, y, device, progress=False,
                                                                       gen=gen), device)
    out.update(apgd_ce_native_images_per_s=len(x) / t_apgd, apgd_ce_art_images_per_s=len(x) / t_art,
               apgd_ce_native_vs_art=t_art / t_apgd)
    out["art_autoattack"] = bench_art_autoattack(model, clf, x, y, device, norm, eps, gen)
    log(f"AutoAttack {norm} eps {eps:.4g} (standard, {TORCHATTACKS_AA}): native {out['native_images_per_s']:.2f} img/s"
        + (f", torchattacks {out['torchattacks_images_per_s']:.2f} img/s ({out['native_vs_torchattacks']:.2f}x)"
           if "native_vs_torchattacks" in out else ", torchattacks not installed")
        + f"; the autoattack preset's robust accuracy {out['preset_robust_accuracy']:.3f}"
        + f"; APGD-CE 100 iterations: native {out['apgd_ce_native_images_per_s']:.1f}, ART "
          f"{out['apgd_ce_art_images_per_s']:.1f} img/s ({out['apgd_ce_native_vs_art']:.1f}x)")
    art = out["art_autoattack"]
    log(f"AutoAttack {norm} as ART can run it ({'+'.join(ART_AA_MEMBERS)}, {ART_AA_SETTINGS}): native "
        f"{art['native_images_per_s']:.2f} img/s, ART {art['art_images_per_s']:.2f} img/s ({art['native_vs_art']:.1f}x); "
        f"robust accuracy native {art['native_robust_accuracy']:.3f}, ART {art['art_robust_accuracy']:.3f}; the model's "
        f"own passes alone {art['model_pass_seconds']:.1f} s ({art['native_share_in_model_passes']:.0%} of native's "
        f"time): ART takes {art['art_over_model_passes']:.1f}x that, the most any implementation could gain")
    return out


def native_vs_torchattacks_aa(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, norm: str,
                              eps: float) -> dict[str, Any]:
    """Native AutoAttack (standard, torchattacks' settings) and torchattacks' ``AutoAttack`` on the same images,
    timed in ``AA_ROUNDS`` interleaved rounds (best of each; every round seeded alike), with their robust
    accuracies."""
    last: dict[str, Any] = {}  # each engine's output of its last round

    def native() -> None:
        last["native"] = build_attack("autoattack", norm=norm, eps=eps, **TORCHATTACKS_AA).run(
            model, x, y, device, progress=False, gen=torch.Generator().manual_seed(0))

    fns = {"native": native}
    ta = _optional("torchattacks")
    if ta is not None:
        xd, yd = x.to(device), y.to(device)
        attack = ta.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard",
                               n_classes=int(model(xd[:1]).shape[1]), seed=0)
        fns["torchattacks"] = lambda: last.__setitem__("torchattacks", attack(xd, yd))
    t = best_times_interleaved(fns, device, AA_ROUNDS)
    nat = last["native"]
    out = {"rounds": AA_ROUNDS, "native_images_per_s": len(x) / t["native"],
           "native_robust_accuracy": nat.metrics["robust_accuracy"],
           "native_member_seconds": nat.info["member_seconds"]}
    if ta is None:
        return {**out, "torchattacks": "not installed (pip install --no-deps torchattacks==3.5.1)"}
    adv = last["torchattacks"]
    return {**out, "torchattacks_images_per_s": len(x) / t["torchattacks"],
            "native_vs_torchattacks": t["torchattacks"] / t["native"],
            "torchattacks_robust_accuracy": float((predict(model, adv.cpu(), device) == y).float().mean())}


# ART has no FAB: its AutoAttack is compared on the members both have (APGD-CE, untargeted APGD-DLR, Square),
# one restart each at the reference's iterations and queries
ART_AA_MEMBERS = ("apgd-ce", "apgd-dlr", "square")
ART_AA_SETTINGS = {"n_iter": 100, "n_restarts": 1, "n_queries": 5000, "p_init": 0.8}


def bench_art_autoattack(model: nn.Module, clf: Any, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                         norm: str, eps: float, gen: torch.Generator,
                         settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Native AutoAttack (``custom``: APGD-CE, APGD-DLR, Square) against ART's ``AutoAttack`` with the same three
    attacks at the same settings, run sequentially (ART imports the optional ``multiprocess`` even then; where it
    is not installed an empty module stands in, which the sequential path never touches)."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

    if _optional("multiprocess") is None:
        sys.modules["multiprocess"] = types.ModuleType("multiprocess")
    art_norm = np.inf if norm == "linf" else 2
    s = settings or ART_AA_SETTINGS
    members = [AutoProjectedGradientDescent(clf, norm=art_norm, eps=eps, eps_step=2 * eps, max_iter=s["n_iter"],
                                            nb_random_init=s["n_restarts"], batch_size=256, loss_type=loss,
                                            verbose=False)
               for loss in ("cross_entropy", "difference_logits_ratio")]
    members.append(SquareAttack(clf, norm=art_norm, eps=eps, max_iter=s["n_queries"], p_init=s["p_init"],
                                nb_restarts=s["n_restarts"], batch_size=256, verbose=False))
    art = AutoAttack(clf, norm=art_norm, eps=eps, eps_step=2 * eps, attacks=members, batch_size=256)
    t_art, adv = best_time(lambda: art.generate(x.numpy(), y=y.numpy()), device)
    adv = torch.from_numpy(adv)
    broken = ~torch.isfinite(adv.flatten(1)).all(1)  # ART's L2 Square divides by zero on flat windows
    adv[broken] = x[broken]  # such an example fooled nothing: the clean image stands in, and the count is given
    native = build_attack("autoattack", norm=norm, eps=eps, version="custom", members=list(ART_AA_MEMBERS),
                          **s)
    recorder = PassRecorder(model)
    t_nat, res = best_time(lambda: native.run(recorder, x, y, device, progress=False, gen=gen), device)
    floor = replay_passes(model, recorder.calls, x, device)
    return {"members": list(ART_AA_MEMBERS), "settings": s, "native_images_per_s": len(x) / t_nat,
            "art_images_per_s": len(x) / t_art, "native_vs_art": t_art / t_nat,
            "native_robust_accuracy": res.metrics["robust_accuracy"],
            "art_robust_accuracy": float((predict(model, adv, device) == y).float().mean()),
            "art_non_finite_examples": int(broken.sum()),
            # the model's own passes that the native run made, replayed alone: no implementation of the same
            # algorithm with this model's forward can take less, so ART's time over it bounds any speed-up
            "model_passes": {"calls": len(recorder.calls), "with_backward": sum(g for _, g in recorder.calls),
                             "image_passes": sum(n for n, _ in recorder.calls)},
            "model_pass_seconds": floor, "native_seconds": t_nat, "art_seconds": t_art,
            "native_share_in_model_passes": floor / t_nat, "art_over_model_passes": t_art / floor}


class PassRecorder(nn.Module):
    """``model`` as it is, recording each forward pass's batch size and whether it is differentiated (its input
    requires grad under autograd): what :func:`replay_passes` repeats."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((len(x), bool(torch.is_grad_enabled() and x.requires_grad)))
        return self.model(x)


def replay_passes(model: nn.Module, calls: list[tuple[int, bool]], x: torch.Tensor, device: torch.device) -> float:
    """Seconds that the recorded passes take alone: the same batch sizes of these images, forward only or
    forward and backward to the input, with nothing else of the attack between them."""
    if not calls:
        return 0.0
    biggest = max(n for n, _ in calls)
    pool = x.repeat((biggest + len(x) - 1) // len(x), 1, 1, 1)[:biggest].to(device)

    def replay() -> None:
        for n, grad in calls:
            if grad:
                xi = pool[:n].clone().requires_grad_(True)
                torch.autograd.grad(model(xi).sum(), xi)
            else:
                with torch.no_grad():
                    model(pool[:n])

    seconds, _ = best_time(replay, device)
    return seconds


def bench_minnorm_references(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                             log: Log) -> dict[str, Any]:
    """DDN, FMN (adv-lib's settings: clean start, no bound mask, sphere projection) and SuperDeepFool: the native
    engine as ``run`` drives it, the whole ``run``, and adv-lib's function, on the same images and labels."""
    sys.modules.setdefault("visdom", types.ModuleType("visdom"))  # adv-lib's optional plotting
    adv_lib = _optional("adv_lib.attacks")
    clean = predict(model, x, device)
    xd, cd = x.to(device), clean.to(device)
    fmn_params = {"steps": MINNORM_STEPS, "bound_mask": False, "projection": "sphere", "start": "clean"}
    ddn_defaults = {k: v for k, v in attack_class("ddn").defaults.items() if k not in ("batch_size", "budget")}
    sdf_defaults = {k: v for k, v in attack_class("superdeepfool").defaults.items() if k != "batch_size"}
    cases = {
        "ddn": (ddn_batch, ddn_defaults | {"steps": MINNORM_STEPS}, {"steps": MINNORM_STEPS},
                lambda: adv_lib.ddn(model, xd, cd, steps=MINNORM_STEPS)),
        "fmn": (fmn_batch, fmn_batch_params(attack_class("fmn").defaults | fmn_params, None), fmn_params,
                lambda: adv_lib.fmn(model, xd, cd, norm=2, steps=MINNORM_STEPS)),
        "superdeepfool": (superdeepfool_batch, sdf_defaults, {}, lambda: adv_lib.sdf(model, xd, cd)),
    }
    out: dict[str, Any] = {"n_images": len(x)}
    for name, (engine, engine_params, run_params, reference) in cases.items():
        kw = dict(engine_params)
        if name == "ddn":
            kw["gen"] = torch.Generator().manual_seed(0)
        fns = {"engine": lambda: counted_batches(engine, model, x, clean, 256, device, name, False, **kw),
               "run": lambda: build_attack(name, **run_params).run(model, x, y, device, progress=False)}
        if adv_lib is not None:
            fns["reference"] = reference
        t = best_times_interleaved(fns, device, MINNORM_ROUNDS)
        row = {"native_engine_images_per_s": len(x) / t["engine"], "native_run_images_per_s": len(x) / t["run"],
               "rounds": MINNORM_ROUNDS}
        if adv_lib is not None:
            row.update(adv_lib_images_per_s=len(x) / t["reference"],
                       native_engine_vs_adv_lib=t["reference"] / t["engine"])
        out[name] = row
        log(f"{name}: native engine {row['native_engine_images_per_s']:.1f} img/s, whole run "
            f"{row['native_run_images_per_s']:.1f} img/s" +
            (f", adv-lib {row['adv_lib_images_per_s']:.1f} img/s ({row['native_engine_vs_adv_lib']:.2f}x)"
             if adv_lib is not None else ", adv-lib not installed"))
    if adv_lib is None:
        out["adv_lib"] = "not installed (pip install --no-deps adv-lib==0.2.8)"
    return out


def run_references_bench(out: str, config_path: str, model_name: str, n_images: int = 100, log: Log = print,
                         device_name: str | None = None) -> dict[str, Any]:
    """``rbleak bench --references``: the comparisons above on the first ``n_images`` test images of the
    config's model, AutoAttack at the dataset's default L-inf and L2 epsilons (4/255 and 0.5 where none), as
    JSON in ``out`` (a file, or an existing folder to hold bench-references.json)."""
    from ..attacks.native_autoattack import DATASET_EPS
    from ..run.cells import get_dataset
    from ..run.provenance import provenance
    from .attacks import bench_model
    from .common import output_path

    path = output_path(out, "bench-references.json")
    task, model, device = bench_model(config_path, model_name, device_name, log)
    data = get_dataset(task.dataset)
    x, y = data.test_x[:n_images], data.test_y[:n_images]
    eps = DATASET_EPS.get(task.dataset["name"], {"linf": 4 / 255, "l2": 0.5})
    results: dict[str, Any] = {"config": config_path, "model": model_name, "dataset": task.dataset["name"],
                               "device": str(device), "threads": torch.get_num_threads()}
    for norm in ("linf", "l2"):
        results[f"autoattack_{norm}"] = bench_autoattack(model, x, y, device, log, norm, eps[norm])
    results["minnorm_vs_adv_lib"] = bench_minnorm_references(model, x, y, device, log)
    results["provenance"] = provenance(device)
    path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {path}")
    return results
