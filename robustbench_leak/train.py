"""Training: SGD or Adam, step or cosine schedule, seeded, on whatever device is given."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import ImageDataset


@dataclass(frozen=True)
class TrainSettings:
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    nesterov: bool = False
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "cosine"  # none | step | cosine
    milestones: tuple[int, ...] = field(default_factory=tuple)  # epochs where a step schedule multiplies lr by gamma
    gamma: float = 0.1
    warmup_epochs: int = 0
    augment: str = "none"  # none | flip_crop (random horizontal flip + 4 px padded random crop)
    label_smoothing: float = 0.0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available; use device: auto or cpu")
    return device


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                               nesterov=s.nesterov)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.optimizer!r}; allowed: sgd, adam")


def lr_factor(s: TrainSettings, epoch_progress: float) -> float:
    """Multiplier of the base lr at a fractional epoch (0 <= epoch_progress < epochs)."""
    if s.warmup_epochs and epoch_progress < s.warmup_epochs:
        return (epoch_progress + 1e-8) / s.warmup_epochs
    if s.schedule == "cosine":
        start = s.warmup_epochs
        t = (epoch_progress - start) / max(s.epochs - start, 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    if s.schedule == "step":
        return s.gamma ** sum(1 for m in s.milestones if epoch_progress >= m)
    if s.schedule == "none":
        return 1.0
    raise ValueError(f"unknown schedule {s.schedule!r}; allowed: none, step, cosine")


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "none":
        return x
    if kind != "flip_crop":
        raise ValueError(f"unknown augment {kind!r}; allowed: none, flip_crop")
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy.view(-1, 1) + torch.arange(h)).to(x.device)
    cols = (dx.view(-1, 1) + torch.arange(w)).to(x.device)
    idx = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (on the CPU) for images ``x``, in eval mode."""
    model.eval()
    preds = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def train_model(model: nn.Module, data: ImageDataset, s: TrainSettings, seed: int, device: torch.device,
                progress: bool = True, desc: str = "train") -> list[dict[str, Any]]:
    """Train ``model`` in place; returns one record per epoch (loss, train and test accuracy, lr, seconds)."""
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, s)
    n = len(data.train_y)
    steps = math.ceil(n / s.batch_size)
    history: list[dict[str, Any]] = []
    for epoch in range(s.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        bar = tqdm(range(steps), desc=f"{desc} epoch {epoch + 1}/{s.epochs}", disable=not progress, leave=False)
        for step in bar:
            lr = s.lr * lr_factor(s, epoch + step / steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * s.batch_size:(step + 1) * s.batch_size]
            x = augment_batch(data.train_x[idx].to(device), s.augment, gen)
            y = data.train_y[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                                         "lower the learning rate")
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            bar.set_postfix(loss=f"{loss_sum / min(n, (step + 1) * s.batch_size):.3f}")
        test_acc = float((predict(model, data.test_x, device) == data.test_y).float().mean())
        history.append({"epoch": epoch + 1, "loss": loss_sum / n, "train_accuracy": correct / n,
                        "test_accuracy": test_acc, "lr": lr, "seconds": time.perf_counter() - t0})
    model.eval()
    return history
