"""Packed training: K models of one shape trained together as one K-times-wider model.

Small models leave a GPU waiting on kernel launches; K of them packed side by side do K times the work
per launch. Member k's channels are the k-th block of every layer: convolutions become one grouped
convolution (``groups=K``; a windowed member keeps its own window, a plain one multiplies by ones, which
is exact), batch norms one batch norm over K x C channels (each channel's statistics are one member's),
the final linear layers one batched matrix product. The input is the K members' own batches side by side
on the channel axis, and the loss is the sum of the members' mean losses, so each member's gradient is
that of its own loss alone. SGD and Adam act element by element, so one optimizer over the packed
parameters is K independent optimizers.

Each member keeps everything that makes it itself: its initial weights (built from its seed), its data
order and augmentation draws (its own generator, drawn exactly as ``train.train_model`` draws them), its
optimizer state and its epoch records. What differs from training it alone is the float order of the
grouped kernels: on the CPU a packed training ends within float rounding of the unpacked one
(tests/test_packed.py states the tolerance), as a rerun on a GPU without ``deterministic`` does. So
packing is not in the cell key (``train.NOT_IN_KEY``); the checkpoint's metadata and the run log name
the pack a model was trained in, and a model with an epoch checkpoint is never packed (it resumes alone).

Packable: models built only of ``nn.Conv2d`` (groups 1, windowed or not), ``nn.BatchNorm2d``, ``nn.ReLU``,
``nn.AdaptiveAvgPool2d``, ``nn.Linear`` (on flat features), inside ``nn.Sequential``, ``Normalized`` and
``TomenCNN``; anything else trains unpacked.
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config.training import TrainSettings
from ..data import ImageDataset
from ..models import Normalized
from ..models.tomen_cnn import TomenCNN
from ..runtime import (
    compiled,
    numerics,
    resident,
    resolve_channels_last,
    resolve_precision,
    show_progress,
)
from .deadline import Deadline, TimeLimitReached
from .training import CheckpointClock, apply_augment, epoch_draws, lr_factor, make_optimizer, rng_states

CONTAINERS = (nn.Sequential, Normalized, TomenCNN)
AUTO_MAX = 8  # pack: auto packs at most this many
AUTO_GAIN = 1.1  # pack: auto packs when the packed step is at least this much faster per member
AUTO_STEPS = 3  # timed steps per side (after one warm-up step) when pack: auto measures


def signature(model: nn.Module) -> str | None:
    """What two models must share to be packed: their module tree and every layer's geometry (not the
    window's values); None when a module is not packable."""
    parts = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                return None
            parts.append((name, "conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                          m.dilation, m.bias is not None))
        elif isinstance(m, nn.BatchNorm2d):
            parts.append((name, "bn", m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats))
        elif isinstance(m, nn.Linear):
            parts.append((name, "linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, Normalized):
            parts.append((name, "normalized", tuple(m.mean.flatten().tolist()), tuple(m.std.flatten().tolist())))
        elif isinstance(m, (nn.ReLU, nn.AdaptiveAvgPool2d)) or type(m) in CONTAINERS:
            parts.append((name, type(m).__name__, getattr(m, "output_size", None)))
        else:
            return None
    return json.dumps(parts, default=str)


class PackedConv2d(nn.Module):
    def __init__(self, convs: list[nn.Conv2d]) -> None:
        super().__init__()
        c = convs[0]
        self.k, self.stride, self.padding, self.dilation = len(convs), c.stride, c.padding, c.dilation
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in convs]).clone())
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in convs]).clone()) if c.bias is not None else None
        ones = torch.ones(c.kernel_size, dtype=c.weight.dtype, device=c.weight.device)
        windows = [getattr(m, "window", ones).expand(m.out_channels, 1, *c.kernel_size) for m in convs]
        self.windowed = any(hasattr(m, "window") for m in convs)
        self.register_buffer("window", torch.cat(windows).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.window if self.windowed else self.weight
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.k)


class PackedLinear(nn.Module):
    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__()
        self.k, self.out_features = len(linears), linears[0].out_features
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]).clone())
        self.bias = (nn.Parameter(torch.cat([m.bias.detach() for m in linears]).clone())
                     if linears[0].bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w = self.weight.view(self.k, self.out_features, -1)
        y = torch.einsum("bki,koi->bko", x.reshape(b, self.k, -1), w)
        if self.bias is not None:
            y = y + self.bias.view(self.k, self.out_features)
        return y.reshape(b, self.k * self.out_features)


def _packed_bn(bns: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    b = bns[0]
    out = nn.BatchNorm2d(b.num_features * len(bns), b.eps, b.momentum, b.affine, b.track_running_stats,
                         device=b.running_mean.device if b.running_mean is not None else None)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(b, name) is not None:
                getattr(out, name).copy_(torch.cat([getattr(m, name) for m in bns]))
        if b.num_batches_tracked is not None:
            out.num_batches_tracked.copy_(b.num_batches_tracked)
    return out


def pack(models: list[nn.Module]) -> nn.Module:
    """One module that computes all ``models`` side by side (see the module docstring); they must share
    a ``signature``. The packed module owns copies of their weights: ``unpack`` writes them back."""
    sig = signature(models[0])
    if sig is None or any(signature(m) != sig for m in models[1:]):
        raise ValueError("pack: the models differ in shape or hold a module that cannot be packed")
    packed = copy.deepcopy(models[0])
    members = [dict(m.named_modules()) for m in models]
    for name, m in list(packed.named_modules()):
        group = [mods[name] for mods in members]
        if isinstance(m, nn.Conv2d):
            new: nn.Module = PackedConv2d(group)
        elif isinstance(m, nn.BatchNorm2d):
            new = _packed_bn(group)
        elif isinstance(m, nn.Linear):
            new = PackedLinear(group)
        elif isinstance(m, Normalized):
            m.mean = m.mean.repeat(1, len(models), 1, 1)
            m.std = m.std.repeat(1, len(models), 1, 1)
            continue
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(packed.get_submodule(parent_name) if parent_name else packed, attr, new)
    return packed


def unpack(packed: nn.Module, models: list[nn.Module]) -> None:
    """Write the packed weights, biases and batch-norm statistics back into ``models``."""
    k = len(models)
    members = [dict(m.named_modules()) for m in models]
    with torch.no_grad():
        for name, m in packed.named_modules():
            if isinstance(m, (PackedConv2d, PackedLinear, nn.BatchNorm2d)):
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    value = getattr(m, attr, None)
                    if value is not None:
                        for mods, part in zip(members, value.detach().chunk(k)):
                            getattr(mods[name], attr).copy_(part)
                if isinstance(m, nn.BatchNorm2d) and m.num_batches_tracked is not None:
                    for mods in members:
                        mods[name].num_batches_tracked.copy_(m.num_batches_tracked)


def member_optimizer_state(state: dict[str, Any], k: int, index: int) -> dict[str, Any]:
    """Member ``index``'s share of a packed optimizer's ``state_dict()``: every per-element tensor cut to its
    block (a scalar, such as Adam's step count, is shared)."""
    def part(v: Any) -> Any:
        return v.chunk(k)[index].clone() if isinstance(v, torch.Tensor) and v.dim() > 0 else copy.deepcopy(v)

    return {"state": {i: {name: part(v) for name, v in s.items()} for i, s in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


def _member_losses(logits: torch.Tensor, y: torch.Tensor, k: int, smoothing: float) -> torch.Tensor:
    """Each member's mean cross-entropy: ``logits`` (B, K x classes), ``y`` (B, K) -> (K,)."""
    b = logits.shape[0]
    per = F.cross_entropy(logits.view(b, k, -1).transpose(1, 2), y, reduction="none", label_smoothing=smoothing)
    return per.mean(0)


def train_packed(models: list[nn.Module], data: ImageDataset, s: TrainSettings, seeds: list[int],
                 device: torch.device, progress: bool = True, desc: str = "pack",
                 save_progress: list[Callable[[dict[str, Any]], None]] | None = None,
                 deadline: Deadline | None = None) -> list[list[dict[str, Any]] | FloatingPointError]:
    """Train ``models`` (one per seed) together, in place; per member its epoch records as
    ``train.train_model`` returns them, or the ``FloatingPointError`` its own loss raised.

    ``save_progress``: one per member, called with that member's epoch checkpoint (in ``train_model``'s
    format, so it resumes unpacked) when the checkpoint settings or ``deadline`` ask for one."""
    if s.eval_every < 1:
        raise ValueError("training.eval_every: must be an integer >= 1")
    k = len(models)
    precision = resolve_precision(s.precision, device)
    channels_last = resolve_channels_last(s.channels_last, device, s.deterministic)
    for m in models:
        m.to(device)
    net = pack(models)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    step_net = compiled(net, s.compile, device)
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    opt = make_optimizer(net, s)
    clock = CheckpointClock(s)
    n = len(data.train_y)
    steps = math.ceil(n / s.batch_size)
    (train_x, train_y), on_device = resident([data.train_x, data.train_y], device)
    (test_x, test_y), _ = resident([data.test_x, data.test_y], device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    histories: list[list[dict[str, Any]]] = [[] for _ in models]
    bad_at: list[tuple[int, int] | None] = [None] * k

    def payload(i: int, epochs_done: int, state: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": epochs_done, "history": copy.deepcopy(histories[i]),
                "rng": {**rng_states(gens[i]), "generator": gens[i].get_state()},
                "optimizer": member_optimizer_state(state, k, i),
                "model": {name: v.detach().to("cpu", copy=True) for name, v in models[i].state_dict().items()}}

    with numerics(device, precision, s.deterministic):
        for epoch in range(s.epochs):
            net.train()
            t0 = time.perf_counter()
            draws = [epoch_draws(n, s, steps, g) for g in gens]
            orders = torch.stack([o for o, _ in draws]).to(train_y.device)  # (K, n)
            augment = [d.to(device) if d is not None and on_device else d for _, d in draws]
            loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
            correct = torch.zeros(k, dtype=torch.long, device=device)
            first_bad = torch.full((k,), steps, dtype=torch.long, device=device)
            bar = tqdm(range(steps), desc=f"{desc} epoch {epoch + 1}/{s.epochs}",
                       disable=not show_progress(progress), leave=False)
            for step in bar:
                lr = s.lr * lr_factor(s, epoch + step / steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                start, stop = step * s.batch_size, min(n, (step + 1) * s.batch_size)
                idx = orders[:, start:stop]  # (K, B)
                xs = [train_x[i].to(device, non_blocking=True) for i in idx]
                if augment[0] is not None:
                    xs = [apply_augment(x, d.slice(start, stop)) for x, d in zip(xs, augment)]
                x = torch.cat(xs, 1)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = train_y[idx.reshape(-1)].to(device, non_blocking=True).view(k, -1).t()  # (B, K)
                with autocast:
                    logits = step_net(x)
                    losses = _member_losses(logits, y, k, s.label_smoothing)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                losses = losses.detach().float()
                first_bad = torch.where(torch.isfinite(losses) | (first_bad < steps), first_bad, step)
                loss_sum += losses.double() * (stop - start)
                correct += (logits.detach().view(len(y), k, -1).argmax(2) == y).sum(0)
            bads = first_bad.tolist()  # the one wait for the device in an epoch
            test_correct = None
            if (epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs:
                t_test = time.perf_counter()
                test_correct = count_correct_packed(net, test_x, test_y, device, k)
                test_seconds = time.perf_counter() - t_test
            seconds = time.perf_counter() - t0
            for i in range(k):
                if bads[i] < steps and bad_at[i] is None:
                    bad_at[i] = (epoch + 1, bads[i])
                record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(loss_sum[i]) / n,
                                          "train_accuracy": int(correct[i]) / n}
                if test_correct is not None:
                    record.update(test_accuracy=test_correct[i] / len(data.test_y), test_seconds=test_seconds / k)
                record.update(lr=lr, seconds=seconds / k, packed=k)
                histories[i].append(record)
            if epoch + 1 < s.epochs:
                stop_now = deadline is not None and not deadline.allows(seconds)
                if save_progress is not None and (clock.due(epoch + 1) or stop_now):
                    unpack(net, models)
                    state = opt.state_dict()
                    for i in range(k):
                        if bad_at[i] is None:
                            save_progress[i](payload(i, epoch + 1, state))
                if stop_now:
                    raise TimeLimitReached(f"{desc}: stopped after epoch {epoch + 1} of {s.epochs}: the next would "
                                           "end past the time limit (epoch checkpoints written)")
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    unpack(net, models)
    for m in models:
        m.eval()
    return [FloatingPointError(f"{desc} member {i}: loss became non-finite at epoch {bad[0]}, step {bad[1]}; "
                               "lower the learning rate") if bad else histories[i] for i, bad in enumerate(bad_at)]


@torch.no_grad()
def count_correct_packed(net: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, k: int,
                         batch_size: int = 512) -> list[int]:
    """Each member's correct count on the same images (fed to every member at once)."""
    net.eval()
    correct = torch.zeros(k, dtype=torch.long, device=device)
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        yb = y[i:i + batch_size].to(device, non_blocking=True)
        pred = net(xb.repeat(1, k, 1, 1)).view(len(xb), k, -1).argmax(2)
        correct += (pred == yb.view(-1, 1)).sum(0)
    return correct.tolist()


def packed_speedup(make_models: Callable[[int], list[nn.Module]], data: ImageDataset, s: TrainSettings,
                   device: torch.device, k: int, steps: int = AUTO_STEPS) -> dict[str, float]:
    """Seconds of one training step for one model alone and for ``k`` packed, after a warm-up step, on
    ``data``'s first batches; ``gain``: the packed step's speed per member against the single one."""
    def time_steps(models: list[nn.Module]) -> float:
        net = pack(models).to(device) if len(models) > 1 else models[0].to(device)
        opt = make_optimizer(net, s)
        x = data.train_x[:s.batch_size].to(device).repeat(1, len(models), 1, 1)
        y = data.train_y[:s.batch_size].to(device).view(-1, 1).expand(-1, len(models))
        best = float("inf")
        for i in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            losses = _member_losses(net(x), y, len(models), 0.0)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - t0)
        return best

    with numerics(device, resolve_precision(s.precision, device), s.deterministic):
        single = time_steps(make_models(1))
        packed = time_steps(make_models(k))
    return {"single_step_seconds": single, "packed_step_seconds": packed, "members": k,
            "gain": k * single / packed}
