"""``evaluate(model, ...)``: any ``torch.nn.Module`` that maps [0, 1] images to logits, through the same
config -> plan -> cells -> driver path as ``rbleak run``.

The module's weights are written to a checkpoint file and the module is registered, in this process
only, as the architecture ``user-module``; a config naming both is then validated and run like any
other (local executor), so the cells, engines, metrics, intervals and store are the CLI's. With ``out``
the run folder stays, and ``rbleak leaderboard`` merges it with config runs.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
import yaml

USER_ARCH = "user-module"
_MODULES: dict[str, nn.Module] = {}  # ref -> the user's module (a template; every build is a deep copy)


def _user_module(num_classes: int, in_chans: int, ref: str) -> nn.Module:
    """A user's own ``nn.Module`` given to ``evaluate`` in this process (a deep copy of it)."""
    if ref not in _MODULES:
        raise ValueError(f"user-module {ref!r} is only known in the Python process that called evaluate()")
    return copy.deepcopy(_MODULES[ref])


def _register() -> None:
    from .models.registry import is_registered, register_model

    if not is_registered(USER_ARCH):
        register_model(USER_ARCH, family="user", description="an nn.Module given to robustbench_leak.evaluate")(
            _user_module)


def _weights_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _dataset_entry(dataset: Any) -> dict[str, Any]:
    if not isinstance(dataset, (str, Mapping)):
        raise ValueError(f"evaluate: dataset: got a {type(dataset).__name__}; give a dataset name (rbleak list "
                         "datasets), a mapping with 'name', or a pair (x, y) of tensors")
    entry = {"name": dataset} if isinstance(dataset, str) else dict(dataset)
    if "name" not in entry:
        raise ValueError(f"evaluate: dataset: {dataset!r}: give a dataset name or a mapping with 'name'")
    # the module takes [0, 1] images (RobustBench's convention): no normalisation in front of it
    entry.setdefault("normalize", False)
    return entry


def _attack_entries(attacks: Sequence[str | dict[str, Any]], n_samples: int | None) -> list[Any]:
    if isinstance(attacks, str) or not attacks:
        raise ValueError(f"evaluate: attacks: {attacks!r}: give a list of preset names (rbleak list attacks), e.g. "
                         "['clean', 'deepfool']")
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1):
        raise ValueError(f"evaluate: n_samples: {n_samples!r}: expected an integer >= 1 (or None: each preset's own)")
    entries: list[Any] = []
    for a in attacks:
        entry = {"preset": a} if isinstance(a, str) else dict(a)
        if n_samples is not None:
            entry.setdefault("n_samples", n_samples)
        entries.append(entry)
    return entries


PROBE_IMAGES = 16
TENSORS_PREFIX = "tensors-"


def _is_tensor_pair(dataset: Any) -> bool:
    return (isinstance(dataset, (tuple, list)) and len(dataset) == 2
            and all(isinstance(t, torch.Tensor) for t in dataset))


def _check_tensor_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of ``dataset=(x, y)`` on the CPU, or ``ValueError`` naming what is wrong."""
    if not x.is_floating_point() or x.dim() != 4 or len(x) == 0:
        raise ValueError(f"evaluate: dataset: x: a {x.dtype} tensor of shape {tuple(x.shape)}; expected float "
                         "images (N, C, H, W), N >= 1, in [0, 1]")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex() or tuple(y.shape) != (len(x),):
        raise ValueError(f"evaluate: dataset: y: a {y.dtype} tensor of shape {tuple(y.shape)}; expected integer "
                         f"labels of shape ({len(x)},), one per image of x")
    x = x.detach().to("cpu", torch.float32).contiguous()
    y = y.detach().to("cpu", torch.int64).contiguous()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"evaluate: dataset: x: values from {float(x.min()):g} to {float(x.max()):g}; expected "
                         "finite images in [0, 1] (the module normalises, as in RobustBench)")
    if y.min() < 0:
        raise ValueError(f"evaluate: dataset: y: label {int(y.min())}; expected class indices >= 0")
    return x, y


def _probe(model: nn.Module, x: torch.Tensor, device: str, what: str) -> Any:
    """The module's output on ``x`` (a deep copy in eval mode), or ``ValueError`` with the first line of its error."""
    from .runtime import resolve_device

    probe = copy.deepcopy(model).to(resolve_device(device)).eval()
    try:
        with torch.no_grad():
            # a copy: a forward that writes into its input must not change the caller's images or the cached
            # dataset (in runs, Normalized hands the module a fresh tensor likewise)
            return probe(x.to(resolve_device(device), copy=True))
    except Exception as exc:  # noqa: BLE001 - the caller's code: any failure of its forward is a bad argument
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"evaluate: model: its forward on {len(x)} images of {what} "
                         f"({tuple(x.shape[1:])}, [0, 1]) raised {type(exc).__name__}: {first}") from None


def _register_tensors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> str:
    """Register ``(x, y)``, in this process only, as a dataset named after their SHA-256 (the same tensors give
    the same cells, so ``out`` resumes); both splits are these images, as no training runs. Returns the name."""
    from .data import ImageDataset, register_dataset
    from .data.base import channel_stats

    x, y = _check_tensor_pair(x, y)
    out = _probe(model, x[:PROBE_IMAGES], device, "the given x")
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] >= 2):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"evaluate: model: on the given x it returned {shape}; expected logits of shape (N, classes)"
                         ", classes >= 2")
    num_classes = int(out.shape[1])
    if int(y.max()) >= num_classes:
        raise ValueError(f"evaluate: dataset: y: label {int(y.max())}, but the model gives {num_classes} logits; "
                         f"expected labels from 0 to {num_classes - 1}")
    digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()
                            + repr(tuple(x.shape)).encode()).hexdigest()[:12]
    name = TENSORS_PREFIX + digest
    mean, std = channel_stats(x)
    source = f"{len(x)} images {tuple(x.shape[1:])} given to evaluate (sha256 {digest}...)"

    def loader():  # no annotation: the option schema resolves hints in this module's globals
        return ImageDataset(name, x, y, x, y, num_classes, mean, std, source=source)

    register_dataset(name, description=source,
                     shape=lambda _: (int(x.shape[1]), num_classes, int(x.shape[-1])))(loader)
    return name


def _check_output(model: nn.Module, dataset: dict[str, Any], device: str) -> None:
    """One forward pass on the first test images: the module must give one finite logit per class."""
    from .config import DatasetCfg
    from .data import load_dataset_cached
    from .run.plan import dataset_spec

    data = load_dataset_cached(dataset_spec(DatasetCfg(**dataset)))
    n = min(PROBE_IMAGES, len(data.test_x))
    out = _probe(model, data.test_x[:n], device, dataset["name"])
    if not (isinstance(out, torch.Tensor) and out.shape == (n, data.num_classes)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"evaluate: model: on {n} images of {dataset['name']} ({tuple(data.test_x.shape[1:])}, "
                         f"[0, 1]) it returned {shape}; expected logits of shape ({n}, {data.num_classes})")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out.float())).any(1).sum()) if out.is_floating_point() else n
        what = "non-finite logits (NaN or inf)" if out.is_floating_point() else f"{out.dtype} outputs, not logits"
        raise ValueError(f"evaluate: model: on {n} images of {dataset['name']} it returned {what} for {bad} of "
                         f"them; expected finite float logits (nothing was run)")


def _check_name(run_dir: Path, name: str, weights_sha256: str) -> None:
    """``ValueError`` when the store in ``run_dir`` already holds a model ``name`` with other weights (a config
    run's trained model, or another module): its rows and this module's would hide each other under one name."""
    from .store import STORE_NAME, StoreReader

    if not (run_dir / STORE_NAME).is_file():
        return
    with StoreReader(run_dir / STORE_NAME) as store:
        stored = store.model_weights().get(name, set())
    if stored - {weights_sha256}:
        raise ValueError(f"evaluate: name: {name!r}: {run_dir} already holds a model of that name with other weights "
                         "(from a config run, or another module); give this module another name, or another out")


def _write_run_files(folder: Path, stem: str, weights: bytes, config: dict[str, Any]) -> Path:
    """The weights file and the config naming it, in ``folder``; returns the config file."""
    folder.mkdir(parents=True, exist_ok=True)
    weights_file = folder / f"{stem}.pt"
    if not weights_file.exists():
        weights_file.write_bytes(weights)
    config["models"][0]["checkpoint"] = str(weights_file.resolve())
    config_file = folder / f"{stem}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_file


def evaluate(model: nn.Module,
             dataset: str | Mapping[str, Any] | tuple[torch.Tensor, torch.Tensor] = "fashion-mnist",
             attacks: Sequence[str | dict[str, Any]] = ("clean", "deepfool", "spatial"),
             n_samples: int | None = None, device: str = "auto", out: str | Path | None = None,
             name: str | None = None, seed: int = 0, progress: bool = False,
             time_limit: float | None = None) -> pd.DataFrame:
    """Evaluate ``model`` (any ``nn.Module`` mapping [0, 1] images to logits) as ``rbleak run`` would.

    ``dataset``: a dataset name (``rbleak list datasets``) or a mapping of its options, e.g.
    ``{"name": "fashion-mnist", "root": "/data/fmnist"}``, or a pair ``(x, y)`` of tensors (float images in
    [0, 1] of shape (N, C, H, W), integer labels), named ``tensors-<sha256 prefix>`` in the results.
    ``attacks``: preset names or mappings as in a config's ``attacks:`` list. ``n_samples``: test images per
    attack (default: each preset's own; with tensors, all N).
    ``out``: a run folder to keep (``rbleak leaderboard`` reads it); default: a temporary one, removed.
    ``name``: the model's name in the results; refused where ``out`` already holds other weights under it.
    ``seed``: the seed of the attacks' random numbers. ``time_limit``: seconds; no cell starts that would
    not end in time, then ``TimeLimitReached`` (with ``out``, the same call resumes). Every argument is
    checked before anything is written into ``out``. Returns one row per (model, attack, metric) with the
    columns of ``robustbench_leak.COLUMNS["metrics"]``."""
    from .run.deadline import check_time_limit
    from .runtime import check_device_name

    if not isinstance(model, nn.Module):
        raise ValueError(f"evaluate: model: expected a torch.nn.Module, got {type(model).__name__}")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise ValueError(f"evaluate: name: {name!r}: expected a non-empty string")
    if time_limit is not None:
        check_time_limit(time_limit, "evaluate: time_limit")
    try:
        check_device_name(device)
    except ValueError as exc:
        raise ValueError(f"evaluate: device: {device!r}: {exc}") from None
    name = name or type(model).__name__
    entries = _attack_entries(attacks, n_samples)
    tensors = _register_tensors(model, *dataset, device) if _is_tensor_pair(dataset) else None
    if tensors and n_samples is None:  # the images given are the ones to attack, not a preset's first 1,000
        entries = [{**e, "n_samples": e.get("n_samples", len(dataset[0]))} for e in entries]
    try:
        return _evaluate(model, _dataset_entry(tensors or dataset), entries, device, out, name, seed, progress,
                         time_limit)
    finally:
        if tensors:
            from .data.registry import unregister_dataset

            unregister_dataset(tensors)  # nothing of the caller's tensors outlives the call


def _load_own_config(path: Path) -> Any:
    """``load_config`` of the config evaluate wrote, its errors naming the argument, not that file."""
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"{path}: ", "evaluate: ").replace(str(path), "evaluate")) from None


def _evaluate(model: nn.Module, ds: dict[str, Any], entries: list[Any], device: str, out: str | Path | None,
              name: str, seed: int, progress: bool, time_limit: float | None) -> pd.DataFrame:
    from .outputs import check_out_dir, mark_folder
    from .results import load_results
    from .pipeline import run_config
    from .run.executor import LocalExecutor

    _register()
    arch_text = f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}"
    ref = f"{type(model).__qualname__[:60]}-{hashlib.sha256(arch_text.encode()).hexdigest()[:12]}"
    _MODULES[ref] = model
    weights = _weights_bytes(model)
    digest = hashlib.sha256(weights).hexdigest()[:12]
    tmp = Path(tempfile.mkdtemp(prefix="rbleak-evaluate-"))
    try:
        run_dir = Path(out) if out is not None else tmp / "run"
        check_out_dir(run_dir, "out")
        stem = re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:80] + f"-{digest}"
        config = {"name": "evaluate",
                  "description": f"robustbench_leak.evaluate of {type(model).__qualname__} (weights sha256 {digest}...)",
                  "device": device, "seeds": [seed], "datasets": [ds],
                  "models": [{"name": name, "arch": USER_ARCH, "options": {"ref": ref}}],
                  "attacks": entries}
        # every check on files in the temporary folder first: a call refused here leaves nothing in out
        loaded = _load_own_config(_write_run_files(tmp, stem, weights, config))
        _check_output(model, ds, device)
        if out is not None:
            _check_name(run_dir, name, hashlib.sha256(weights).hexdigest())
            run_dir.mkdir(parents=True, exist_ok=True)
            mark_folder(run_dir)  # what follows is recognised as ours by a retry, whatever fails next
            # the same cell keys: a key holds the weights file's sha256, not its path
            loaded = _load_own_config(_write_run_files(run_dir / "weights", stem, weights, config))
        # a kept folder gets the leaderboard files a config run writes; a temporary one needs none
        run_config(loaded, run_dir, executor=LocalExecutor(), progress=progress, formats=None if out else (),
                   time_limit=time_limit)
        metrics = load_results(run_dir).metrics
        return metrics[(metrics.model == name) & (metrics.dataset == ds["name"])].reset_index(drop=True)
    finally:
        _MODULES.pop(ref, None)  # no reference to the caller's module outlives the call
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["USER_ARCH", "evaluate"]
