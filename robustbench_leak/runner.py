"""Expand a config into grid cells and run them.

A train cell (model x dataset x seed) produces a checkpoint in the cache; an eval cell (train cell x
attack) produces metrics in the store. Each cell is a JSON-able task that re-derives everything it
needs (data, model, weights) from its own spec, so cells never depend on another cell's in-process
state: an eval cell whose checkpoint is missing trains it first. Finished cells are skipped, which
makes a rerun after a crash recompute only what is missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from .attacks import attack_class, build_attack
from .checkpoints import CheckpointCache
from .config import DEFAULT_FIT_SAMPLES, Config, canonical_hash
from .data import ImageDataset, load_dataset
from .executor import Executor, LocalExecutor
from .models import Normalized, count_flops, count_params, create_model
from .models.checkpoint_io import load_checkpoint
from .nn import WindowedConv2d, WindowSpec
from .provenance import provenance
from .stats import metric_intervals
from .store import STORE_NAME, Store, now
from .train import TrainSettings, predict, resolve_device, train_model, weight_settings

WEIGHTS_VERSION = 1  # bump when a code change alters what the same spec trains to

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# planning
def dataset_spec(ds) -> dict[str, Any]:
    return {"name": ds.name, "options": ds.loader_options, "train_subset": ds.train_subset,
            "test_subset": ds.test_subset, "subset_seed": ds.subset_seed, "normalize": ds.normalize}


def train_key(task: dict[str, Any]) -> str:
    ds = {k: v for k, v in task["dataset"].items() if k != "test_subset"}  # the test split does not shape weights
    return canonical_hash({"v": WEIGHTS_VERSION, "arch": task["arch"], "options": task["options"], "dataset": ds,
                           "training": weight_settings(task["training"]), "seed": task["seed"]})


def loaded_key(task: dict[str, Any]) -> str:
    """Key of a model loaded from a ``checkpoint:`` file: its content, not a training recipe, fixes the weights."""
    ds = {k: v for k, v in task["dataset"].items() if k != "test_subset"}
    return canonical_hash({"v": WEIGHTS_VERSION, "arch": task["arch"], "options": task["options"], "dataset": ds,
                           "checkpoint_sha256": task["checkpoint"]["sha256"], "seed": task["seed"]})


def eval_key(task: dict[str, Any]) -> str:
    train = task["train"].get("key") or train_key(task["train"])
    return canonical_hash({"train": train, "test_subset": task["train"]["dataset"]["test_subset"],
                           "attack": task["attack"]})


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan(config: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train tasks and eval tasks of the grid datasets x seeds x models (x attacks), seed-major, so a run
    stopped part-way has every model of the first seeds rather than every seed of the first models."""
    trains, evals = [], []
    sha: dict[str, str] = {}
    for ds in config.run.datasets:
        for seed in config.run.seeds:
            for model in config.run.models:
                settings = config.training_for(model).__dict__
                t = {"model": model.name, "arch": model.arch, "options": model.options,
                     "dataset": dataset_spec(ds), "training": {**settings, "milestones": list(settings["milestones"])},
                     "seed": seed}
                if model.match_report:
                    t["match"] = model.match_report
                if model.checkpoint:
                    if model.checkpoint not in sha:
                        sha[model.checkpoint] = file_sha256(model.checkpoint)
                    t["checkpoint"] = {"path": model.checkpoint, "sha256": sha[model.checkpoint]}
                    t["key"] = loaded_key(t)
                else:
                    t["key"] = train_key(t)
                trains.append(t)
                for attack in config.attacks:
                    e = {"train": t, "attack": attack.spec(), "attack_label": attack.label}
                    e["key"] = eval_key(e)
                    evals.append(e)
    return trains, evals


# ------------------------------------------------------------------------------------------------
# cell execution
@functools.lru_cache(maxsize=4)
def _dataset(spec_json: str) -> ImageDataset:
    spec = json.loads(spec_json)
    return load_dataset(spec["name"], train_subset=spec["train_subset"], test_subset=spec["test_subset"],
                        subset_seed=spec["subset_seed"], **spec["options"])


def get_dataset(spec: dict[str, Any]) -> ImageDataset:
    return _dataset(json.dumps(spec, sort_keys=True))


def build_model(task: dict[str, Any], data: ImageDataset) -> nn.Module:
    torch.manual_seed(task["seed"])  # the seed fixes the initial weights as well as the data order
    net = create_model(task["arch"], data.num_classes, data.in_chans, **task["options"])
    if task["dataset"]["normalize"]:
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


def ensure_model(task: dict[str, Any], ctx: dict[str, Any], log: Log = print,
                 announce_cache: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a train task: loaded from the cache, or trained and cached now."""
    device = resolve_device(ctx["device"])
    data = get_dataset(task["dataset"])
    model = build_model(task, data)
    cache = CheckpointCache(Path(ctx["cache_dir"]) if ctx.get("cache_dir") else None)
    meta = None if task.get("checkpoint") else cache.load(task["key"], model)
    label = f"{task['model']} / {task['dataset']['name']} / seed {task['seed']}"
    if task.get("checkpoint"):
        info = load_checkpoint(model, task["checkpoint"]["path"])
        if announce_cache:
            log(f"[load] {label}: loaded {info.path} ({info.describe()}); no training")
        return model.to(device).eval(), {"loaded_from_cache": False, "loaded_checkpoint": info.path,
                                         "naming": info.naming, "entry": info.entry, "history": []}
    if meta is not None:
        if announce_cache:
                log(f"[cache] {label}: loaded checkpoint {cache.path(task['key'])} (no retraining)")
        meta["loaded_from_cache"] = True
        return model.to(device).eval(), meta
    log(f"[train] {label}: training on {device} ({len(data.train_y)} images, {task['training']['epochs']} epochs)")
    t0 = time.perf_counter()
    settings = TrainSettings(**{**task["training"], "milestones": tuple(task["training"]["milestones"])})
    history = train_model(model, data, settings, task["seed"], device, progress=ctx.get("progress", True),
                          desc=task["model"])
    seconds = time.perf_counter() - t0
    meta = {"spec": {k: v for k, v in task.items() if k != "key"}, "history": history, "train_seconds": seconds,
            "trained_on": str(device), "created": now()}
    path = cache.save(task["key"], model, meta)
    last = history[-1] if history else {}
    log(f"[train] {label}: done in {seconds:.0f}s, test accuracy {last.get('test_accuracy', float('nan')):.4f}; "
        f"saved {path}")
    meta["loaded_from_cache"] = False
    return model.eval(), meta


def run_train_cell(task: dict[str, Any], ctx: dict[str, Any], log: Log = print) -> str:
    store = Store(ctx["store"])
    try:
        if store.is_done(task["key"]):
            # Its record (which run trained it, how long it took) stays; eval cells that still need the
            # weights load or train them themselves, so a resumed run needs no checkpoint of a finished row.
            log(f"[skip] {task['model']} / {task['dataset']['name']} / seed {task['seed']}: model already in the store")
            return "skipped"
        started = now()
        t0 = time.perf_counter()
        model, meta = ensure_model(task, ctx, log)
        data = get_dataset(task["dataset"])
        net = model.net
        extra = dict(task.get("match") or {})
        checkpoint_path = str(CheckpointCache(Path(ctx["cache_dir"]) if ctx.get("cache_dir") else None)
                              .path(task["key"]))
        if meta.get("loaded_checkpoint"):
            checkpoint_path = meta["loaded_checkpoint"]
            extra.update({"checkpoint": checkpoint_path, "sha256": task["checkpoint"]["sha256"],
                          "naming": meta["naming"], "entry": meta["entry"]})
        store.record_model(task["key"], {
            "arch": task["arch"], "options": task["options"], "kernel": describe_kernels(net),
            "window": describe_window(net, task["options"]), "params": count_params(net),
            "flops": _flops_cached(task["arch"], json.dumps(task["options"], sort_keys=True), data.num_classes,
                                   data.input_shape),
            "checkpoint": checkpoint_path,
            "history": meta.get("history", []), "train_seconds": meta.get("train_seconds"),
            "trained_on": meta.get("trained_on"), "extra": extra or None})
        store.record_cell(task["key"], "train", {k: v for k, v in task.items() if k != "key"}, ctx["run_id"],
                          ctx["device"], started, time.perf_counter() - t0,
                          info={"loaded_from_cache": meta["loaded_from_cache"],
                                "loaded_checkpoint": meta.get("loaded_checkpoint")})
        if meta.get("loaded_checkpoint"):
            return "loaded"
        return "cached" if meta["loaded_from_cache"] else "trained"
    finally:
        store.close()


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


def sanity_checks(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, result, device: torch.device) -> list[str]:
    """Checks from "On Evaluating Adversarial Robustness"; failures are flagged, never hidden."""
    from .attacks.pgd import pgd

    flags: list[str] = list(result.info.get("flags", []))  # the attack's own, e.g. a convergence flag
    samples = result.samples
    if attack_class(kind).minimum_norm:
        correct = samples["clean_pred"] == samples["label"]
        not_fooled = int(np.sum(correct & (samples["adv_pred"] == samples["clean_pred"])))
        if not_fooled > 0.01 * max(1, int(correct.sum())):
            flags.append(f"{not_fooled} of {int(correct.sum())} clean-correct DeepFool examples are still classified "
                         "correctly on re-check (max_iter too low, or masked gradients)")
        idx = torch.from_numpy(np.flatnonzero(correct))
        if len(idx):
            gen = torch.Generator().manual_seed(0)
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


def run_eval_cell(task: dict[str, Any], ctx: dict[str, Any], log: Log = print) -> str:
    store = Store(ctx["store"])
    try:
        label = f"{task['train']['model']} / {task['attack_label']} / seed {task['train']['seed']}"
        if store.is_done(task["key"]):
            log(f"[skip] {label}: already in the store")
            return "skipped"
        device = resolve_device(ctx["device"])
        model, _ = ensure_model(task["train"], ctx, log, announce_cache=False)
        model.to(device).eval().requires_grad_(False)
        data = get_dataset(task["train"]["dataset"])
        spec = task["attack"]
        n = spec["n_samples"] or len(data.test_y)
        x, y = data.test_x[:n], data.test_y[:n]
        attack = build_attack(spec["kind"], spec["engine"], **spec["params"])
        fit = fit_split(attack, data, n, spec.get("fit_samples") or DEFAULT_FIT_SAMPLES)
        torch.manual_seed(task["train"]["seed"])
        started = now()
        t0 = time.perf_counter()
        result = attack.run(model, x, y, device, progress=ctx.get("progress", True), fit=fit)
        seconds = time.perf_counter() - t0
        flags = sanity_checks(spec["kind"], model, x, y, result, device)
        intervals = metric_intervals(result.samples, result.metrics, seed=task["train"]["seed"])
        info = {**result.info, "images_per_second": n / seconds if seconds else None, "attack_seconds": seconds}
        if flags:
            info["flags"] = flags
        store.record_cell(task["key"], "eval", {"train_key": task["train"]["key"], "attack": spec},
                          ctx["run_id"], str(device), started, seconds, result.metrics, result.samples,
                          info=info, intervals=intervals)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if k in attack.metrics or k == "accuracy")
        log(f"[eval] {label}: {shown} ({n} images, {seconds:.1f}s)" + "".join(f"\n  FLAG: {f}" for f in flags))
        return "evaluated"
    finally:
        store.close()


def interleave(trains: list[dict[str, Any]], evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each train task followed by its eval tasks: finished rows accumulate as a long run goes on."""
    by_train: dict[str, list[dict[str, Any]]] = {}
    for e in evals:
        by_train.setdefault(e["train"]["key"], []).append(e)
    return [task for t in trains for task in (t, *by_train.get(t["key"], []))]


# ------------------------------------------------------------------------------------------------
def run_config(config: Config, out_dir: str | Path | None = None, executor: Executor | None = None,
               progress: bool = True, log: Log = print) -> Path:
    """Run every cell of ``config`` (skipping finished ones) and write the leaderboard into ``out_dir``."""
    from .leaderboard import FORMATS, write_outputs

    out = Path(out_dir) if out_dir else Path("runs") / config.name
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.run.device)
    prov = provenance(device)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    store = Store(out / STORE_NAME)
    store.start_run(run_id, config_name=config.name, config_path=config.path, config_hash=config.config_hash(),
                    config_yaml=config.text, device=prov["device"], versions=prov["versions"],
                    git_commit=prov["git_commit"], command=prov["command"])
    trains, evals = plan(config)
    store.add_run_cells(run_id, [
        {"cell_key": t["key"], "kind": "train", "train_key": t["key"], "model": t["model"], "arch": t["arch"],
         "dataset": t["dataset"]["name"], "seed": t["seed"], "attack": None} for t in trains] + [
        {"cell_key": e["key"], "kind": "eval", "train_key": e["train"]["key"], "model": e["train"]["model"],
         "arch": e["train"]["arch"], "dataset": e["train"]["dataset"]["name"], "seed": e["train"]["seed"],
         "attack": e["attack_label"]} for e in evals])
    store.close()
    (out / "config.yaml").write_text(config.text)
    ctx = {"store": str(out / STORE_NAME), "cache_dir": config.run.cache_dir, "device": config.run.device,
           "progress": progress, "run_id": run_id}
    log(f"run {run_id}: {len(trains)} train cells, {len(evals)} eval cells -> {out}")
    executor = executor or LocalExecutor()
    def run_cell(task: dict[str, Any]) -> str:
        return run_eval_cell(task, ctx, log) if "attack" in task else run_train_cell(task, ctx, log)

    try:
        list(executor.map(run_cell, interleave(trains, evals)))
    except BaseException:
        store = Store(out / STORE_NAME)
        store.finish_run(run_id, status="interrupted")
        store.close()
        raise
    store = Store(out / STORE_NAME)
    store.finish_run(run_id)
    store.close()
    (out / "provenance.json").write_text(json.dumps({**prov, "run_id": run_id, "config": config.path,
                                                     "config_hash": config.config_hash(),
                                                     "seeds": config.run.seeds}, indent=2) + "\n")
    written = write_outputs([out], out, formats=FORMATS)
    plots = [p for p in written if p.parent.name == "plots"]
    log("wrote " + ", ".join(str(p) for p in written if p not in plots)
        + (f" and {len(plots)} plot files in {out / 'plots'}" if plots else ""))
    return out
