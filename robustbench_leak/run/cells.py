"""Cells: what one grid cell computes, as a pure function of its spec that returns records.

A train cell (``TrainTask``) loads its model from the checkpoint cache, or from a ``checkpoint:`` file,
or trains it (and caches it); it returns the model's record and its weights (a CPU state dict). An eval
cell (``EvalTask``) gets those weights from its train cell (or, when given none, from the checkpoint
cache) and never trains; it returns metrics, per-sample arrays, flags and timing. No cell opens the
results store: the driver writes what cells return, so cells can run in any process, on any machine,
in parallel. ``ctx`` (``RunContext``) carries what every cell of a run shares.
"""

from __future__ import annotations

import functools
import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from ..attacks import attack_class
from ..attacks.masking import MaskingSettings
from ..config import DEFAULT_FIT_SAMPLES
from ..data import ImageDataset, load_dataset_cached
from ..models import Normalized, count_flops, count_params, create_model
from ..models.checkpoints import (CheckpointCache, CheckpointError, EpochCheckpoint, load_checkpoint, load_state,
                                  state_sha256)
from ..nn import WindowedConv2d, WindowSpec
from ..runtime import predict
from ..stats import metric_intervals
from ..store import now
from .tasks import EvalTask, RunContext, TrainTask
from .training import train_model

ERROR_CHARS = 300  # a failed cell's one-line error is cut to this; its full traceback is stored

Log = Callable[[str], None]
Weights = dict[str, torch.Tensor]


def _quiet(line: str) -> None:
    pass


# ------------------------------------------------------------------------------------------------
# shared helpers (also used by ``rbleak bench``)
def get_dataset(spec: dict[str, Any]) -> ImageDataset:
    """A cell's dataset, loaded once per process (the config check loads the same spec first)."""
    return load_dataset_cached(spec)


def build_model(task: TrainTask, data: ImageDataset) -> nn.Module:
    # the seed fixes the initial weights as well as the data order; layers initialise from torch's global
    # generator, so seeding it is the one way to fix them (timm and torchvision models alike)
    torch.manual_seed(task.seed)
    net = create_model(task.arch, data.num_classes, data.in_chans, **task.options)
    if task.dataset["normalize"]:
        return Normalized(net, data.mean, data.std)
    return Normalized(net, (0.0,) * data.in_chans, (1.0,) * data.in_chans)


def describe_kernels(model: nn.Module) -> str:
    """Kernel sizes of the spatial convolutions, e.g. '7x7' or '3x3 (first 7x7)'."""
    sizes = [f"{kh}x{kw}" for m in model.modules() if isinstance(m, nn.Conv2d)
             for kh, kw in [_pair(m.kernel_size)] if max(kh, kw) > 1]
    if not sizes:
        return "1x1"
    rest = sorted(set(sizes[1:]) or {sizes[0]}, key=lambda s: int(s.split("x")[0]))
    text = "/".join(rest)
    return text if sizes[0] in rest and len(set(sizes)) == len(rest) else f"{text} (first {sizes[0]})"


def describe_window(model: nn.Module, options: dict[str, Any]) -> str:
    labels = sorted({m.window_spec.label() for m in model.modules()
                     if isinstance(m, WindowedConv2d) and not m.window_spec.is_identity})
    if labels:
        return ", ".join(labels)
    return WindowSpec.parse(options.get("window")).label()


@functools.lru_cache(maxsize=64)
def _flops_cached(arch: str, options_json: str, num_classes: int, input_shape: tuple[int, ...]) -> int:
    net = create_model(arch, num_classes, input_shape[0], **json.loads(options_json))
    return count_flops(net, input_shape)


def checkpoint_cache(ctx: RunContext) -> CheckpointCache:
    return CheckpointCache(Path(ctx.cache_dir) if ctx.cache_dir else None)


def ensure_model(task: TrainTask, ctx: RunContext, log: Log = print,
                 announce_cache: bool = True, fresh: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a train task: loaded from the cache, or trained and cached now. ``fresh``: the
    cached weights were trained moments ago for this run (in a pack, ``run/packing.py``), not reused.

    Only train cells (and ``rbleak bench``) call this; eval cells never train."""
    device = ctx.device
    data = get_dataset(task.dataset)
    model = build_model(task, data)
    cache = checkpoint_cache(ctx)
    meta = None if task.checkpoint else cache.load(task.key, model)
    label = task.label
    if task.checkpoint:
        info = load_checkpoint(model, task.checkpoint["path"])
        if announce_cache:
            log(f"[load] {label}: loaded {info.path} ({info.describe()}); no training")
        return model.to(device).eval(), {"loaded_from_cache": False, "loaded_checkpoint": info.path,
                                         "naming": info.naming, "entry": info.entry, "history": []}
    if meta is not None and fresh:
        meta["loaded_from_cache"] = False
        return model.to(device).eval(), meta
    if meta is not None:
        if announce_cache:
            log(f"[cache] {label}: loaded checkpoint {cache.path(task.key)} (no retraining)")
        meta["loaded_from_cache"] = True
        return model.to(device).eval(), meta
    epochs = EpochCheckpoint(cache, task.key)
    resume = epochs.load()
    settings = task.training
    if resume is not None:
        log(f"[resume] {label}: from its epoch checkpoint at epoch {resume['epoch']} of {settings.epochs} "
            f"({epochs.path})")
    else:
        log(f"[train] {label}: training on {device} ({len(data.train_y)} images, {settings.epochs} epochs)")
    t0 = time.perf_counter()
    earlier = float(resume.get("train_seconds", 0.0)) if resume else 0.0

    def save_progress(payload: dict[str, Any]) -> None:
        epochs.save({**payload, "train_seconds": earlier + time.perf_counter() - t0})

    history = train_model(model, data, settings, task.seed, device, progress=ctx.progress, desc=task.model,
                          resume=resume, save_progress=save_progress, deadline=ctx.deadline)
    seconds = earlier + time.perf_counter() - t0
    meta = {"spec": task.spec(), "history": history, "train_seconds": seconds,
            "trained_on": str(device), "created": now()}
    if resume is not None:
        meta["resumed_from_epoch"] = int(resume["epoch"])
    path = cache.save(task.key, model, meta)
    epochs.drop()
    last = history[-1] if history else {}
    log(f"[train] {label}: done in {seconds:.0f}s, test accuracy {last.get('test_accuracy', float('nan')):.4f}; "
        f"saved {path}")
    meta["loaded_from_cache"] = False
    return model.eval(), meta


def state_of(model: nn.Module) -> Weights:
    """The weights an eval cell needs, on the CPU (what crosses process and machine boundaries)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# train cell
def train_cell(task: TrainTask, ctx: RunContext, record: bool = True,
               log: Log = _quiet, fresh: bool = False,
               stored: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, Weights]:
    """The model of ``task`` (cached, loaded or trained now) and, when ``record``, its store records.

    ``record=False`` is for a model whose records are already stored (a resumed run) but whose weights
    some eval still needs: it keeps the record of the run that trained it and says nothing on a cache hit.
    ``stored`` (``trained_on``, ``weights_sha256`` of the stored model): the weights must be those its stored
    cells attacked; a model trained on another kind of device is not retrained here (``ValueError`` before
    any training), and retrained or cached weights with another hash are refused (``ValueError``).
    Returns ``(records, weights)``; records hold ``model`` (for ``StoreWriter.record_model``), ``cell`` (for
    ``StoreWriter.record_cell``) and ``outcome`` (trained, cached or loaded)."""
    started = now()
    t0 = time.perf_counter()
    if not record and stored:
        _check_retrainable(task, ctx, stored)
    model, meta = ensure_model(task, ctx, log, announce_cache=record, fresh=fresh)
    weights = state_of(model)
    if not record:
        want = (stored or {}).get("weights_sha256")
        got = state_sha256(weights) if want else None
        if want and got != want:
            raise ValueError(f"{task.label}: the weights here (sha256 {got[:12]}) are not those its stored cells "
                             f"attacked ({want[:12]}): retraining did not reproduce them; copy the original "
                             f"{task.key}.pt into the run folder's weights/ (or the checkpoint cache) to add cells "
                             "to this model")
        return None, weights
    data = get_dataset(task.dataset)
    net = model.net
    extra = dict(task.match or {})
    if task.training.epochs == 0 and not task.checkpoint:
        extra["untrained"] = True  # its initial random weights (allow_untrained: true); tables say so
    if meta.get("packed_with"):
        extra["packed_with"] = meta["packed_with"]
    checkpoint_path = str(checkpoint_cache(ctx).path(task.key))
    if meta.get("loaded_checkpoint"):
        checkpoint_path = meta["loaded_checkpoint"]
        extra.update({"checkpoint": checkpoint_path, "sha256": task.checkpoint["sha256"],
                      "naming": meta["naming"], "entry": meta["entry"]})
    model_record = {
        "arch": task.arch, "options": task.options, "kernel": describe_kernels(net),
        "window": describe_window(net, task.options), "params": count_params(net),
        "flops": _flops_cached(task.arch, json.dumps(task.options, sort_keys=True), data.num_classes,
                               data.input_shape),
        "checkpoint": checkpoint_path,
        "history": meta.get("history", []), "train_seconds": meta.get("train_seconds"),
        "trained_on": meta.get("trained_on"), "extra": extra or None}
    cell = {"spec": task.spec(), "device": str(ctx.device),
            "started_at": started,
            "seconds": time.perf_counter() - t0,
            "info": {"loaded_from_cache": meta["loaded_from_cache"], "loaded_checkpoint": meta.get("loaded_checkpoint"),
                     "weights_sha256": state_sha256(weights)}}
    outcome = "loaded" if meta.get("loaded_checkpoint") else "cached" if meta["loaded_from_cache"] else "trained"
    return {"model": model_record, "cell": cell, "outcome": outcome}, weights


def _check_retrainable(task: TrainTask, ctx: RunContext, stored: dict[str, Any]) -> None:
    """Before training: a stored model whose weights are not here, trained on another kind of device, cannot
    be retrained into the weights its stored cells attacked (training is bitwise reproducible on one device
    type only); adding cells to it would attack a different model under the same train key."""
    then, here = stored.get("trained_on"), ctx.device.type
    path = checkpoint_cache(ctx).path(task.key)
    if task.checkpoint or not then or then == here or path.is_file():
        return
    raise ValueError(f"{task.label}: its stored cells attacked weights trained on {then}, which are not in "
                     f"{path.parent}; retraining on {here} would give other weights. "
                     f"Copy its {task.key}.pt there, or run these cells on a {then} device")


# ------------------------------------------------------------------------------------------------
# eval cell
def fit_split(attack, data: ImageDataset, n_attacked: int, fit_samples: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The last ``fit_samples`` test images, for attacks that choose before attacking; never the attacked ones."""
    if not (attack.needs_fit and getattr(attack, "uses_fit_split", lambda: True)()):
        return None
    n_total = len(data.test_y)
    if n_attacked + fit_samples > n_total:
        raise ValueError(f"attack {attack.kind!r} fits on the last {fit_samples} test images, which would overlap "
                         f"the {n_attacked} attacked ones ({n_total} test images in all); lower n_samples or "
                         f"fit_samples")
    return data.test_x[n_total - fit_samples:], data.test_y[n_total - fit_samples:]


def sanity_checks(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, result, device: torch.device,
                  seed: int) -> list[str]:
    """Checks from "On Evaluating Adversarial Robustness"; failures are flagged, never hidden. ``seed``: of the
    generator the unbounded PGD check would draw a random start from (it starts at the image itself)."""
    from ..attacks.pgd import pgd

    flags: list[str] = list(result.info.get("flags", []))  # the attack's own, e.g. a convergence flag
    samples = result.samples
    if attack_class(kind).minimum_norm:
        correct = samples["clean_pred"] == samples["label"]
        not_fooled = int(np.sum(correct & (samples["adv_pred"] == samples["clean_pred"])))
        if not_fooled > 0.01 * max(1, int(correct.sum())):
            flags.append(f"{not_fooled} of {int(correct.sum())} clean-correct {kind} examples are still classified "
                         "correctly on re-check (max_iter too low, or masked gradients)")
        idx = torch.from_numpy(np.flatnonzero(correct))
        if len(idx):
            gen = torch.Generator().manual_seed(seed)
            adv = torch.cat([pgd(model, x[idx[i:i + 256]].to(device), y[idx[i:i + 256]].to(device), eps=1.0,
                                 step=0.1, steps=20, norm="linf", random_start=False,
                                 gen=gen).cpu() for i in range(0, len(idx), 256)])
            with torch.no_grad():
                success = float((predict(model, adv, device) != y[idx]).float().mean())
            result.metrics["sanity_pgd_success"] = success
            if success < 0.99:
                flags.append(f"unbounded PGD (L-inf eps=1) fooled only {100 * success:.1f}% of clean-correct images: "
                             "gradients may be masked, so gradient-based robustness numbers are not trustworthy")
    return flags


def trained_model(train: TrainTask, ctx: RunContext, weights: Weights | None) -> nn.Module:
    """The model of train task ``train`` with its trained weights, never training: ``weights`` from the
    train cell, else the ``checkpoint:`` file or the checkpoint cache (``CheckpointError`` when absent)."""
    data = get_dataset(train.dataset)
    model = build_model(train, data)
    if weights is not None:
        load_state(model, weights, f"weights of {train.label}")
    elif train.checkpoint:
        load_checkpoint(model, train.checkpoint["path"])
    else:
        cache = checkpoint_cache(ctx)
        if cache.load(train.key, model) is None:
            raise CheckpointError(f"{cache.path(train.key)}: no checkpoint of {train.label}; an eval cell "
                                  "never trains, so its train cell must run first (or cache_dir must be shared)")
    return model


def eval_cell(task: EvalTask, ctx: RunContext, weights: Weights | None,
              log: Log = _quiet) -> dict[str, Any]:
    """Attack the trained model of ``task.train``; returns the ``cell`` record for the store's ``record_cell``
    (metrics, per-sample arrays, intervals, info with flags and timing)."""
    device = ctx.device
    model = trained_model(task.train, ctx, weights)
    weights_sha = state_sha256(model.state_dict())  # the weights this cell attacked (reports compare them)
    model.to(device).eval().requires_grad_(False)
    data = get_dataset(task.train.dataset)
    spec = task.attack
    n = spec["n_samples"] or len(data.test_y)
    x, y = data.test_x[:n], data.test_y[:n]
    attack = attack_class(spec["kind"], spec["engine"]).from_checked(spec["params"])  # checked when loaded
    attack.bind_dataset(task.train.dataset["name"])
    fit = fit_split(attack, data, n, spec.get("fit_samples") or DEFAULT_FIT_SAMPLES)
    predict(model, x, device)  # NonFiniteLogits before any attack step: no cell from NaN logits is stored
    gen = task.generator()  # every random draw of the attack (and of its masking checks), in order
    started = now()
    t0 = time.perf_counter()
    result = attack.run(model, x, y, device, progress=ctx.progress, fit=fit, gen=gen)
    seconds = time.perf_counter() - t0
    flags = sanity_checks(spec["kind"], model, x, y, result, device, task.seed)
    masking = MaskingSettings(**(task.masking or {}))
    if masking.enabled and hasattr(attack, "check_masking"):
        flags += attack.check_masking(model, x, y, result, device, masking, gen=gen)
    intervals = metric_intervals(result.samples, result.metrics, seed=task.seed,
                                 per_example=attack.per_example(attack.params))
    info = {**result.info, "weights_sha256": weights_sha, "images_per_second": n / seconds if seconds else None, "attack_seconds": seconds}
    if flags:
        info["flags"] = flags
    shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if k in attack.metrics or k == "accuracy")
    log(f"[eval] {task.label}: {shown} ({n} images, {seconds:.1f}s)" + "".join(f"\n  FLAG: {f}" for f in flags))
    return {"cell": {"spec": task.spec(), "device": str(device),
                     "started_at": started, "seconds": seconds, "metrics": result.metrics,
                     "samples": result.samples, "info": info, "intervals": intervals}}


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message, cut to ``ERROR_CHARS``."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if len(text) > ERROR_CHARS:
        text = text[:ERROR_CHARS] + f"... ({len(text)} characters)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
