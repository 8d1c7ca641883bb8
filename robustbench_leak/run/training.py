"""Training: SGD or Adam, step or cosine schedule, seeded, on whatever device is given.

The loop never waits for the device inside an epoch: the loss sum, the correct count and a
non-finite-loss marker accumulate on the device and are read once, at the end of the epoch, where a
non-finite loss raises ``FloatingPointError`` naming the epoch and step where it first appeared.
The training set stays on the device when it fits; the random numbers of the data order and of the
augmentation are drawn once per epoch from one seeded CPU generator, in the order the per-step loop
of earlier versions drew them, and the augmentation itself runs on the device. So the same seed
gives the same data order and the same crops on every device, and on the CPU the weights are
bitwise those of earlier versions (tests/test_train_loop.py keeps the old loop as the reference).

Reproducibility on CUDA: with ``deterministic: true`` (deterministic algorithms, cuDNN's
deterministic kernels, no cuDNN autotuning) two runs on the same GPU model, driver and torch build
give bitwise equal weights; across GPU models or library versions they do not. With the default
``deterministic: false`` cuDNN may pick kernels that accumulate in a varying order, so reruns agree
only to float rounding, as before.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config.training import TrainSettings
from ..data import ImageDataset
from ..runtime import (
    compiled,
    count_correct,
    numerics,
    resident,
    resolve_channels_last,
    resolve_precision,
    show_progress,
)
from .deadline import Deadline, TimeLimitReached

POSTFIX_EVERY = 50  # steps between progress-bar loss updates (each one waits for the device)


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


@dataclass
class AugmentDraws:
    """The random numbers of flip_crop for a run of images: flip flags and crop offsets (0..8 px)."""

    flip: torch.Tensor
    dy: torch.Tensor
    dx: torch.Tensor

    def to(self, device: torch.device) -> AugmentDraws:
        return AugmentDraws(self.flip.to(device), self.dy.to(device), self.dx.to(device))

    def slice(self, start: int, stop: int) -> AugmentDraws:
        return AugmentDraws(self.flip[start:stop], self.dy[start:stop], self.dx[start:stop])


def draw_augment(n: int, gen: torch.Generator) -> AugmentDraws:
    """flip_crop's draws for ``n`` images, in the order ``augment_batch`` has always drawn them."""
    flip = torch.rand(n, generator=gen) < 0.5
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    return AugmentDraws(flip, dy, dx)


def apply_augment(x: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
    """Random horizontal flip, then a random crop of the 4 px zero-padded image, on ``x``'s device."""
    n, _, h, w = x.shape
    x = torch.where(draws.flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (4, 4, 4, 4))
    rows = draws.dy.to(x.device).view(-1, 1) + torch.arange(h, device=x.device)
    cols = draws.dx.to(x.device).view(-1, 1) + torch.arange(w, device=x.device)
    idx = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "none":
        return x
    if kind != "flip_crop":
        raise ValueError(f"unknown augment {kind!r}; allowed: none, flip_crop")
    return apply_augment(x, draw_augment(len(x), gen))


def epoch_draws(n: int, s: TrainSettings, steps: int, gen: torch.Generator) -> tuple[torch.Tensor, AugmentDraws | None]:
    """Every random number of one epoch (data order, then augmentation), in the order the per-step loop
    of earlier versions drew them."""
    order = torch.randperm(n, generator=gen)
    if s.augment == "none":
        return order, None
    if s.augment != "flip_crop":
        raise ValueError(f"unknown augment {s.augment!r}; allowed: none, flip_crop")
    parts = [draw_augment(min(s.batch_size, n - i * s.batch_size), gen) for i in range(steps)]
    return order, AugmentDraws(*(torch.cat(t) for t in zip(*((p.flip, p.dy, p.dx) for p in parts))))


class CheckpointClock:
    """When a training writes its epoch checkpoint: every ``checkpoint_every`` epochs, or once
    ``checkpoint_minutes`` passed since the last one (whichever comes first; 0 turns either off)."""

    def __init__(self, s: TrainSettings) -> None:
        if s.checkpoint_every < 0 or s.checkpoint_minutes < 0:
            raise ValueError("training.checkpoint_every and training.checkpoint_minutes: must be >= 0")
        self.every, self.seconds, self.last = s.checkpoint_every, 60.0 * s.checkpoint_minutes, time.monotonic()

    def due(self, epochs_done: int) -> bool:
        if (self.every and epochs_done % self.every == 0) or (self.seconds and time.monotonic() - self.last >= self.seconds):
            self.last = time.monotonic()
            return True
        return False


def rng_states(gen: torch.Generator) -> dict[str, Any]:
    """The random-generator states a resumed training needs: its data-order generator and torch's global
    ones (read by layers such as dropout)."""
    states: dict[str, Any] = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(gen: torch.Generator, states: dict[str, Any]) -> None:
    gen.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def train_model(model: nn.Module, data: ImageDataset, s: TrainSettings, seed: int, device: torch.device,
                progress: bool = True, desc: str = "train", resume: dict[str, Any] | None = None,
                save_progress: Callable[[dict[str, Any]], None] | None = None,
                deadline: Deadline | None = None) -> list[dict[str, Any]]:
    """Train ``model`` in place; returns one record per epoch (loss, train accuracy, lr, seconds, and the test
    accuracy on epochs with a test pass: every ``eval_every``-th and the last).

    ``resume``: an epoch checkpoint's payload (as ``save_progress`` got it) to continue from: the result is
    bitwise that of an uninterrupted training on the same device. ``save_progress`` receives one when
    ``training.checkpoint_every``/``checkpoint_minutes`` say so, and before ``deadline`` stops the
    training (``TimeLimitReached``) at an epoch boundary because the next epoch would not end in time."""
    if s.eval_every < 1:
        raise ValueError("training.eval_every: must be an integer >= 1")
    precision = resolve_precision(s.precision, device)
    channels_last = resolve_channels_last(s.channels_last, device, s.deterministic)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = compiled(model, s.compile, device)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, s)
    clock = CheckpointClock(s)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        set_rng_states(gen, resume["rng"])
        history, start_epoch = list(resume["history"]), int(resume["epoch"])

    def progress_payload(epochs_done: int) -> dict[str, Any]:
        # copies: the training goes on updating these tensors in place
        return {"epoch": epochs_done, "history": copy.deepcopy(history), "rng": rng_states(gen),
                "optimizer": copy.deepcopy(opt.state_dict()),
                "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}

    n = len(data.train_y)
    steps = math.ceil(n / s.batch_size)
    (train_x, train_y), on_device = resident([data.train_x, data.train_y], device)
    (test_x, test_y), _ = resident([data.test_x, data.test_y], device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with numerics(device, precision, s.deterministic):
        for epoch in range(start_epoch, s.epochs):
            model.train()
            t0 = time.perf_counter()
            order, draws = epoch_draws(n, s, steps, gen)
            if draws is not None and on_device:
                draws = draws.to(device)
            order = order.to(train_y.device)  # labels are always a tensor (images may be decoded lazily)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            first_bad = torch.full((), steps, dtype=torch.long, device=device)  # steps: none so far
            bar = tqdm(range(steps), desc=f"{desc} epoch {epoch + 1}/{s.epochs}", disable=not show_progress(progress),
                       leave=False)
            for step in bar:
                lr = s.lr * lr_factor(s, epoch + step / steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                start, stop = step * s.batch_size, min(n, (step + 1) * s.batch_size)
                idx = order[start:stop]
                x = train_x[idx].to(device, non_blocking=True)
                y = train_y[idx].to(device, non_blocking=True)
                if draws is not None:
                    x = apply_augment(x, draws.slice(start, stop))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                try:
                    with autocast:
                        logits = step_model(x)
                        loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                except Exception as exc:
                    if s.compile == "none" or epoch > start_epoch or step:
                        raise
                    raise RuntimeError(f"training.compile: {s.compile} failed on {device} ({type(exc).__name__}); "
                                       "use compile: none") from exc
                opt.step()
                loss = loss.detach().float()
                first_bad = torch.where(torch.isfinite(loss) | (first_bad < steps), first_bad, step)
                loss_sum += loss.double() * len(idx)
                correct += (logits.detach().argmax(1) == y).sum()
                if not bar.disable and (step % POSTFIX_EVERY == 0 or step == steps - 1):
                    bar.set_postfix(loss=f"{float(loss_sum) / stop:.3f}")
            record: dict[str, Any] = {"epoch": epoch + 1}
            # the one wait for the device in an epoch
            bad = int(first_bad)
            if bad < steps:
                raise FloatingPointError(f"{desc}: loss became non-finite at epoch {epoch + 1}, step {bad}; "
                                         "lower the learning rate")
            record.update(loss=float(loss_sum) / n, train_accuracy=int(correct) / n)
            if (epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs:
                t_test = time.perf_counter()
                record["test_accuracy"] = int(count_correct(model, test_x, test_y, device)) / len(data.test_y)
                record["test_seconds"] = time.perf_counter() - t_test  # included in seconds
            record.update(lr=lr, seconds=time.perf_counter() - t0)
            history.append(record)
            if epoch + 1 < s.epochs:
                stop_now = deadline is not None and not deadline.allows(record["seconds"])
                if save_progress is not None and (clock.due(epoch + 1) or stop_now):
                    save_progress(progress_payload(epoch + 1))
                if stop_now:
                    raise TimeLimitReached(f"{desc}: stopped after epoch {epoch + 1} of {s.epochs}: the next would "
                                           "end past the time limit" + (" (epoch checkpoint written)"
                                                                        if save_progress is not None else ""))
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history
