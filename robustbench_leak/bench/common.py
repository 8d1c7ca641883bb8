"""What the benches share: the ``--out`` path check, a device sync for timing, and the plainest training epoch."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config.training import TrainSettings
from ..data import ImageDataset
from ..outputs import check_out_file
from ..run.training import AugmentDraws, apply_augment, make_optimizer
from ..runtime import numerics, resolve_precision


def output_path(out: str, default_name: str = "bench.json") -> Path:
    """Where ``--out`` writes: into an existing folder as ``default_name``, or the file path given; checked
    before any measuring (the folder must exist and the file be writable)."""
    path = Path(out)
    if os.path.isdir(path):  # os.path answers False, not OSError, for a name the file system refuses
        path = path / default_name
    elif out.endswith(("/", os.sep)):
        raise ValueError(f"--out: {out}: folder does not exist; create it or give a file path in an existing folder")
    if not os.path.isdir(path.parent):
        raise ValueError(f"--out: {path.parent}: folder does not exist; create it or give an existing folder")
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise ValueError(f"--out: {path}: not writable ({type(exc).__name__}); give a writable file or folder") from None
    if not existed:
        path.unlink()
    check_out_file(path, "--out", "provenance")
    return path


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a timer read next sees it done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> tuple[float, Any]:
    """The best of ``repeat`` wall-clock times of ``fn`` and its last output (the first run also warms kernels
    and the allocator, so engines timed one after the other compare only from the second run on)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def best_times_interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int
                           ) -> dict[str, float]:
    """The best wall-clock time of each of ``fns`` over ``rounds`` rounds, each round running every function
    once, in an order that rotates from round to round: no engine is always the one timed first (after a
    warm-up, or after another engine filled the caches), and a slow spell of the machine falls on all of them."""
    names = list(fns)
    best = {name: float("inf") for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def plain_epoch(model: nn.Module, data: ImageDataset, s: TrainSettings, device: torch.device,
                max_steps: int | None = None) -> tuple[float, int]:
    """Seconds and images of one epoch of the plainest loop on the same work: data resident on the device, a
    device-side data order and augmentation, a fixed learning rate, no host syncs until the end."""
    model.to(device).train()
    x_all, y_all = data.train_x.to(device), data.train_y.to(device)
    opt = make_optimizer(model, s)
    gen = torch.Generator(device=device).manual_seed(0)
    precision = resolve_precision(s.precision, device)
    n = len(y_all)
    steps = -(-n // s.batch_size) if max_steps is None else min(max_steps, -(-n // s.batch_size))
    with numerics(device, precision, s.deterministic):
        sync(device)
        t0 = time.perf_counter()
        order = torch.randperm(n, device=device, generator=gen)
        for step in range(steps):
            idx = order[step * s.batch_size:(step + 1) * s.batch_size]
            x, y = x_all[idx], y_all[idx]
            if s.augment == "flip_crop":
                b = len(idx)
                x = apply_augment(x, AugmentDraws(torch.rand(b, device=device, generator=gen) < 0.5,
                                                  torch.randint(0, 9, (b,), device=device, generator=gen),
                                                  torch.randint(0, 9, (b,), device=device, generator=gen)))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(model(x), y, label_smoothing=s.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        seconds = time.perf_counter() - t0
    return seconds, min(n, steps * s.batch_size)
