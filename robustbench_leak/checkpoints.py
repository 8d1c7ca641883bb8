"""Checkpoint cache keyed by a hash of everything that determines the weights.

Files are written atomically (temporary file, then rename) and read with ``weights_only=True``.
A cached file that cannot be read is moved aside (never deleted) and the model is retrained.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

FORMAT = 1


class CheckpointError(RuntimeError):
    pass


def default_cache_dir() -> Path:
    env = os.environ.get("RBLEAK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "robustbench-leak" / "checkpoints"


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "meta": json.dumps(meta, sort_keys=True),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata of one of our checkpoints; ``CheckpointError`` naming the file otherwise."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a robustbench-leak checkpoint (format {FORMAT} with a state_dict)")
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


class EpochCheckpoint:
    """A half-trained model's epoch checkpoint beside its final one (``<key>.epoch.pt``): weights, optimizer
    state, random-generator states, the epoch reached and the history so far (``train.train_model``
    writes and reads the payload). It is not part of any key: a finished training removes it."""

    def __init__(self, cache: CheckpointCache, key: str) -> None:
        self.key = key
        self.path = cache.root / f"{key}{EPOCH_SUFFIX}"

    def load(self) -> dict[str, Any] | None:
        """The payload, or None when absent or unusable (moved aside, never deleted: training restarts)."""
        if not self.path.exists():
            return None
        try:
            try:
                payload = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises many types for truncated or foreign files
                raise CheckpointError(f"{self.path}: not a readable epoch checkpoint ({type(exc).__name__})") from exc
            if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != self.key:
                raise CheckpointError(f"{self.path}: not an epoch checkpoint of key {self.key!r}")
        except CheckpointError as exc:
            aside = self.path.with_name(f"{self.path.name}.bad-{int(time.time())}")
            os.replace(self.path, aside)
            print(f"warning: {exc}; moved it to {aside} and training from the start")
            return None
        return payload

    def save(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save({**payload, "format": FORMAT, "key": self.key}, tmp)
        os.replace(tmp, self.path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
