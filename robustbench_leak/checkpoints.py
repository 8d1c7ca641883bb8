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


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly; a mismatch lists the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:20]))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:20]))
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:20]))
        raise CheckpointError(f"{source}: checkpoint does not match the model ({' | '.join(parts)})")
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
