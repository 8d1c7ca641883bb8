"""Checkpoints: the run's cache of trained weights, and weights from a checkpoint file in four namings.

The cache is keyed by a hash of everything that determines the weights. Its files are written
atomically (temporary file, then rename) and read with ``weights_only=True``; a cached file that
cannot be read is moved aside (never deleted) and the model is retrained. Each file written carries the
``state_sha256`` of its tensors (``sha256``), verified on load: ``torch.load`` checks no CRC, so bytes
overwritten inside a tensor would otherwise load silently. Files of earlier versions (no ``sha256``) load
as before. Weights with NaN or infinite values are refused wherever they are loaded.

Checkpoint files (a model entry's ``checkpoint: PATH``), in four namings.

Read from the public sources (ntomen/Windowed-Convolutions-for-CNNs, EvgenyKashin/non-leaking-conv):

- ``robustbench-leak``: our own checkpoint format (``save_checkpoint``), or a plain state
  dict in our names, of the bare network or of the ``Normalized`` wrapper (``net.`` prefix plus
  ``mean``/``std``).
- ``official-cifar``: ``CIFAR-10_experiments/cifar100_example.py`` builds its network as one
  ``nn.Sequential`` (conv, BN, ReLU per layer, then AdaptiveAvgPool, Flatten, Linear), so its keys are
  ``0.weight``, ``1.running_mean``, ..., ``{3n+2}.weight``; it saves ``{'state_dict': plain net,
  'state_dict_win': windowed net, 'args': argparse.Namespace, losses as NumPy arrays, ...}``. The
  entry is picked by whether the model is windowed. Maps onto ``tomen_cnn``.
- ``official``: the ImageNet scripts (``ImageNet_experiments/main_*.py``) save ``{'epoch', 'arch',
  'state_dict', 'best_prec1', 'optimizer'}`` of a ``DataParallel`` (``module.`` prefix) torchvision-named
  ResNet/VGG. Their ``Conv2d_window`` stores no window buffer: ours is filled from the model.
- ``port``: a PyTorch Lightning checkpoint of ``LitResnet``, whose network is ``self.model`` (``model.``
  prefix), torchvision names; ``Conv2dHamming`` stores its window as buffer ``hamming2d`` (the
  square-root Hamming window, checked against the model's), ``Conv2dFactorized`` holds ``conv1``
  (k x 1) and ``conv2`` (1 x k), our ``vertical`` and ``horizontal``.

Files are read with ``torch.load(..., weights_only=True)``. The only non-tensor objects allowed in
are inert containers these codes save: ``argparse.Namespace``, NumPy arrays, and Lightning's
``AttributeDict`` (read as a plain dict). Anything else fails with the refused names and a recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..nn import FactorizedConv2d, count_windowed
from .wrappers import Normalized

FORMAT = 1


class CheckpointError(RuntimeError):
    pass


def default_cache_dir() -> Path:
    env = os.environ.get("RBLEAK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "robustbench-leak" / "checkpoints"


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors: names, dtypes, shapes and bytes in name order (device-independent).

    The identity of a set of weights: an eval cell records the one it attacked, a train cell the one it made."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def tensors_of(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples, by its path (``optimizer.state.0.momentum_buffer``)."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found: dict[str, torch.Tensor] = {}
    for key, value in items:
        found.update(tensors_of(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def verify_sha256(payload: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> None:
    """``CheckpointError`` when ``payload`` records a ``sha256`` that ``tensors`` do not have (none: an earlier
    version's file, accepted)."""
    recorded = payload.get("sha256")
    if recorded is not None and recorded != state_sha256(tensors):
        raise CheckpointError(f"{source}: its tensors do not match the checksum stored with them (the file was "
                              "changed or damaged after it was written)")


def refuse_nonfinite(state: dict[str, torch.Tensor], source: str) -> None:
    """``CheckpointError`` naming the first tensors that hold NaN or infinite values."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.is_meta and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN or inf) in {_listed('tensors', bad, ', ', 5)}; "
                              "such weights give NaN logits, so they are refused")


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "meta": json.dumps(meta, sort_keys=True), "state_dict": state,
               "sha256": state_sha256(state)}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata of one of our checkpoints, checksum verified where the file has one;
    ``CheckpointError`` naming the file otherwise."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a robustbench-leak checkpoint (format {FORMAT} with a state_dict)")
    verify_sha256(payload, payload["state_dict"], str(path))
    refuse_nonfinite(payload["state_dict"], str(path))
    return payload["state_dict"], json.loads(payload.get("meta", "{}"))


def describe_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """The missing, unexpected and mis-shaped keys of ``state`` against ``own``; None when they match."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    parts = [_listed("missing keys", missing, ", "), _listed("unexpected keys", unexpected, ", "),
             _listed("shape mismatches", shapes, "; ")]
    return " | ".join(p for p in parts if p) or None


def _listed(label: str, items: list[str], sep: str, limit: int = 20) -> str:
    if not items:
        return ""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{label}: {sep.join(items[:limit])}{more}"


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly; a mismatch lists the missing, unexpected and mis-shaped keys."""
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{source}: checkpoint does not match the model ({problem})")
    model.load_state_dict(state)


class CheckpointCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load cached weights into ``model``; None when absent or unusable (moved aside)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            state, meta = read_checkpoint(path)
            if meta.get("key") != key:
                raise CheckpointError(f"{path}: holds key {meta.get('key')!r}, expected {key!r}")
            load_state(model, state, str(path))
        except CheckpointError as exc:
            aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
            os.replace(path, aside)
            print(f"warning: {exc}; moved it to {aside} and retraining")
            return None
        return meta

    def save(self, key: str, model: nn.Module, meta: dict[str, Any]) -> Path:
        path = self.path(key)
        save_checkpoint(path, model, {**meta, "key": key})
        return path


EPOCH_SUFFIX = ".epoch.pt"


PREVIOUS_SUFFIX = ".epoch.pt.previous"  # not *.pt: globs for weights files skip it


class EpochCheckpoint:
    """A half-trained model's epoch checkpoint beside its final one (``<key>.epoch.pt``): weights, optimizer
    state, random-generator states, the epoch reached and the history so far (``train.train_model``
    writes and reads the payload), with the ``state_sha256`` of all its tensors. The one it replaces is
    kept as ``<key>.epoch.pt.previous``: the last good state when the newest fails its checksum. It is not
    part of any key: a finished training removes both."""

    def __init__(self, cache: CheckpointCache, key: str) -> None:
        self.key = key
        self.path = cache.root / f"{key}{EPOCH_SUFFIX}"
        self.previous = cache.root / f"{key}{PREVIOUS_SUFFIX}"

    def load(self) -> dict[str, Any] | None:
        """The payload of the newest good file, or None when there is none (a bad file is moved aside, never
        deleted, with a one-line warning; then the previous one, else training restarts)."""
        for path in (self.path, self.previous):
            payload = self._read(path)
            if payload is not None:
                return payload
        return None

    def _read(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises many types for truncated or foreign files
                raise CheckpointError(f"{path}: not a readable epoch checkpoint ({type(exc).__name__})") from exc
            if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != self.key:
                raise CheckpointError(f"{path}: not an epoch checkpoint of key {self.key!r}")
            verify_sha256(payload, tensors_of(_checked_part(payload)), str(path))
            if isinstance(payload.get("model"), dict):
                refuse_nonfinite(payload["model"], str(path))
        except CheckpointError as exc:
            aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
            os.replace(path, aside)
            fallback = "the previous epoch checkpoint" if path == self.path and self.previous.exists() else \
                "the start"
            print(f"warning: {exc}; moved it to {aside} and training from {fallback}")
            return None
        return payload

    def save(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        full = {**payload, "format": FORMAT, "key": self.key}
        torch.save({**full, "sha256": state_sha256(tensors_of(_checked_part(full)))}, tmp)
        if self.path.exists():
            os.replace(self.path, self.previous)
        os.replace(tmp, self.path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        self.previous.unlink(missing_ok=True)


def _checked_part(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "sha256"}

_LIGHTNING_ATTRIBUTE_DICTS = ("pytorch_lightning.utilities.parsing.AttributeDict",
                              "lightning_fabric.utilities.data.AttributeDict",
                              "lightning.fabric.utilities.data.AttributeDict")
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")
_PREFIXES = ("module.", "model.", "_orig_mod.")  # DataParallel/DDP, Lightning's LitResnet.model, torch.compile


@dataclass
class LoadedCheckpoint:
    path: str
    naming: str
    entry: str | None = None  # which entry of the file held the state dict
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.naming} naming"
        if self.entry:
            text += f", entry '{self.entry}'"
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


def _safe_globals() -> list[Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # noqa: PLC0415  (NumPy 2)
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct  # noqa: PLC0415
    # files pickled under NumPy 1.x name it numpy.core.multiarray._reconstruct
    numpy_types = [np.ndarray, np.dtype, _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct")]
    numpy_types += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_, np.uint8)]
    return [argparse.Namespace, *numpy_types, *[(dict, name) for name in _LIGHTNING_ATTRIBUTE_DICTS]]


def read_any(path: str | Path, mmap: bool = False) -> Any:
    """The object stored in ``path``, loaded with ``weights_only=True``; ``CheckpointError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as exc:
                if not mmap or "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign or truncated files
        refused = _refused_globals(path)
        if refused:
            raise CheckpointError(
                f"{path}: torch.load(weights_only=True) refuses it: it holds Python objects other than "
                f"tensors and plain containers ({', '.join(refused)}). If you trust the file, extract its "
                f"weights once: python -c \"import torch; c = torch.load('{path}', weights_only=False); "
                f"torch.save(c['state_dict'], 'weights.pt')\" and point checkpoint: at weights.pt") from exc
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


def _refused_globals(path: Path) -> list[str]:
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint at all
        return []
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in _safe_globals() if not isinstance(t, tuple)}
    allowed |= set(_LIGHTNING_ATTRIBUTE_DICTS) | {"numpy.core.multiarray._reconstruct"}
    return sorted(set(found) - allowed) or sorted(found)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj: Any, net: nn.Module, source: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside a loaded checkpoint object, and the entry it came from."""
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, dict):
        keys = list(_STATE_KEYS)
        if "state_dict_win" in obj:  # the official CIFAR script saves both of its networks
            keys.insert(0 if count_windowed(net) else 1, "state_dict_win")
        for key in keys:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key]), key
        top = ", ".join(map(str, list(obj)[:12]))
        raise CheckpointError(f"{source}: no state dict found: expected a mapping of tensors, or one under "
                              f"{', '.join(repr(k) for k in _STATE_KEYS)} (top-level keys: {top})")
    raise CheckpointError(f"{source}: no state dict found: the file holds a {type(obj).__name__}")


def _strip_prefixes(state: dict[str, torch.Tensor], own: set[str], notes: list[str]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
                state = {k[len(prefix):]: v for k, v in state.items()}
                notes.append(f"stripped prefix '{prefix}'")
                changed = True
    return state


def _official_cifar(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor] | None:
    """``cifar100_example.py``'s Sequential indices onto ``tomen_cnn`` (features.i, fc)."""
    from .tomen_cnn import TomenCNN  # noqa: PLC0415

    if not isinstance(net, TomenCNN) or not all(re.match(r"^\d+\.", k) for k in state):
        return None
    n_features = len(net.features)
    out = {}
    for key, value in state.items():
        index, rest = key.split(".", 1)
        i = int(index)
        # after the features come AdaptiveAvgPool2d (n), Flatten (n + 1), Linear (n + 2)
        name = f"features.{i}" if i < n_features else ("fc" if i == n_features + 2 else index)
        out[f"{name}.{rest}"] = value
    return out


def _window_conflict(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> str | None:
    if ours.is_meta or tuple(theirs.shape) != tuple(ours.shape):
        return None
    if torch.allclose(theirs.to(ours.dtype), ours, rtol=0, atol=1e-6):
        return None
    return (f"{key}: the checkpoint's window {[round(v, 4) for v in theirs.flatten()[:4].tolist()]}... differs "
            f"from the model's {[round(v, 4) for v in ours.flatten()[:4].tolist()]}...; set the model option "
            "window to the one it was trained with (the unofficial port's is {name: hamming, sqrt: true})")


def map_state_dict(state: dict[str, torch.Tensor], net: nn.Module,
                   source: str) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Rename ``state`` (a bare network's weights in any known naming) to ``net``'s own names.

    Returns the renamed state, the naming recognised and notes on what was changed. Keys it cannot
    place are left as they are, so a strict load then lists them.
    """
    own = net.state_dict()
    notes: list[str] = []
    naming = "robustbench-leak"
    state = _strip_prefixes(state, set(own), notes)
    if "stripped prefix 'module.'" in notes:
        naming = "official"
    if "stripped prefix 'model.'" in notes:
        naming = "port"
    mapped = _official_cifar(state, net)
    if mapped is not None:
        state, naming = mapped, "official-cifar"
        notes.append("nn.Sequential indices mapped onto features.i / fc")
    factorized = {name for name, m in net.named_modules() if isinstance(m, FactorizedConv2d)}
    out: dict[str, torch.Tensor] = {}
    conflicts = []
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        parent, _, sub = prefix.rpartition(".")
        if parent in factorized and sub in ("conv1", "conv2"):  # the port's Conv2dFactorized
            key = f"{parent}.{'vertical' if sub == 'conv1' else 'horizontal'}.{leaf}"
            prefix = key.rpartition(".")[0]
            naming = "port"
        if leaf == "hamming2d":  # the port's Conv2dHamming window buffer
            naming = "port"
            key = f"{prefix}.window"
            if key not in own:
                conflicts.append(f"{prefix}: the checkpoint's convolution is windowed (port's sqrt-Hamming) but "
                                 "the model's is not; set the model option window: {name: hamming, sqrt: true}")
                continue
        if key not in own and f"{prefix}.parametrizations.{leaf}.original" in own:
            key = f"{prefix}.parametrizations.{leaf}.original"  # a windowized Conv2d subclass (timm)
        if key.endswith("window") and key in own:
            conflict = _window_conflict(key, value, own[key])
            if conflict:
                conflicts.append(conflict)
        out[key] = value
    if conflicts:
        raise CheckpointError(f"{source}: " + "; ".join(conflicts))
    filled = []
    for key, value in own.items():
        if key in out:
            continue
        stem = key.rsplit(".", 1)[0]
        # X.window beside X.weight, or X.parametrizations.weight.0.window beside ...weight.original
        windowed = key.endswith(".window") and (f"{stem}.weight" in out or f"{key.rsplit('.', 2)[0]}.original" in out)
        if windowed or (key.endswith("num_batches_tracked") and f"{stem}.running_mean" in out):
            out[key] = value  # deterministic buffers that other codes do not store
            filled.append(key)
    n_windows = sum(k.endswith(".window") for k in filled)
    if n_windows:
        notes.append(f"{n_windows} window buffers taken from the model (the checkpoint stores none)")
        if naming == "robustbench-leak":
            naming = "official"
    return out, naming, notes


def _split_wrapper(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(network part, Normalized part) of a state dict saved from the ``Normalized`` wrapper."""
    if {"mean", "std"} <= set(state) and all(k.startswith("net.") for k in state if k not in ("mean", "std")):
        return {k[4:]: v for k, v in state.items() if k.startswith("net.")}, {k: state[k] for k in ("mean", "std")}
    return state, {}


def _prepare(obj: Any, model: Normalized, source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                                   LoadedCheckpoint]:
    ours = isinstance(obj, dict) and obj.get("format") == FORMAT and "state_dict" in obj and "meta" in obj
    if ours:
        verify_sha256(obj, obj["state_dict"], source)
    state, entry = (obj["state_dict"], None) if ours else find_state_dict(obj, model.net, source)
    net_state, wrapper_state = _split_wrapper(state)
    mapped, naming, notes = map_state_dict(net_state, model.net, source)
    if ours:
        naming = "robustbench-leak"
    return mapped, wrapper_state, LoadedCheckpoint(source, naming, entry, notes)


def load_checkpoint(model: Normalized, path: str | Path) -> LoadedCheckpoint:
    """Load the weights in ``path`` into ``model`` (strictly); ``CheckpointError`` listing any mismatch.

    A checkpoint of the ``Normalized`` wrapper brings its own input mean/std; one of the bare network
    keeps the model's (the dataset's).
    """
    source = str(path)
    mapped, wrapper_state, info = _prepare(read_any(path), model, source)
    refuse_nonfinite({**mapped, **wrapper_state}, source)
    problem = describe_mismatch(model.net.state_dict(), mapped)
    if not problem and wrapper_state:
        problem = describe_mismatch({"mean": model.mean, "std": model.std}, wrapper_state)
    if problem:
        raise CheckpointError(f"{source}: checkpoint does not match the model ({info.naming} naming; {problem})")
    model.net.load_state_dict(mapped)
    if wrapper_state:
        model.load_state_dict({**model.state_dict(), **wrapper_state})
    return info


def check_checkpoint(path: str | Path, model: Normalized) -> LoadedCheckpoint:
    """Keys and shapes of ``path`` against ``model`` (which may live on the meta device), loading nothing."""
    source = str(path)
    mapped, wrapper_state, info = _prepare(read_any(path, mmap=True), model, source)
    refuse_nonfinite({**mapped, **wrapper_state}, source)
    problem = describe_mismatch(model.net.state_dict(), mapped)
    if problem:
        raise CheckpointError(f"{source}: checkpoint does not match the model ({info.naming} naming; {problem})")
    return info
