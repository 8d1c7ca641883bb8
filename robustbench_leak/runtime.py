"""The runtime floor: the device, float formats, compilation and inference every layer above shares.

Imports only torch. The device of a run is resolved once (``resolve_device``) and passed down; attacks,
training and the bench all predict with ``predict`` and set float formats with ``numerics``.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
COMPILE_MODES = ("none", "torch", "cudagraph", "max-autotune")
CHANNELS_LAST = ("auto", "true", "false")
RESIDENT_SHARE = 0.5  # the data may take at most this share of the device's free memory to stay resident


@functools.lru_cache(maxsize=None)
def check_device_name(name: object) -> str:
    """``name`` when it is a device a config may name (auto, cpu, cuda, cuda:N), else ``ValueError``."""
    ok = isinstance(name, str) and (name in ("auto", "cpu", "cuda")
                                    or (name.startswith("cuda:") and name[5:].isdigit() and name[5:].isascii()))
    if not ok:
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return name  # type: ignore[return-value]


def resolve_device(name: str = "auto") -> torch.device:
    """The device a config's ``device:`` names, resolved once per process (``auto``: CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available; use device: auto or cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` per device: fp32 on the CPU; on CUDA ``tf32-conv`` (TF32 convolutions, fp32 matmuls: PyTorch's
    own default, so weights trained before this option existed keep their keys). Not bf16: cuDNN's 7x7
    bf16 kernels are slower than TF32 on an H100."""
    if precision not in PRECISIONS:
        raise ValueError(f"training.precision: must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "tf32-conv" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(f"training.precision: tf32 needs a CUDA device (training on {device.type}); use auto or fp32")
    return precision


@contextmanager
def numerics(device: torch.device, precision: str, deterministic: bool) -> Iterator[None]:
    """Set the float formats and determinism flags for one training run; restore them afterwards."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled())
    try:
        if device.type == "cuda":
            cudnn.allow_tf32 = precision in ("tf32", "tf32-conv", "bf16")
            matmul.allow_tf32 = precision in ("tf32", "bf16")
            if deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
                cudnn.deterministic, cudnn.benchmark = True, False
            else:  # a training runs thousands of steps of few shapes: cuDNN's autotuning pays for itself
                cudnn.benchmark = True
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved[:4]
        torch.use_deterministic_algorithms(saved[4])


def compiled(model: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """``model`` itself, or compiled for training steps (it shares the parameters)."""
    check_compile(mode, device)
    if mode == "none":
        return model
    return torch.compile(model, mode={"cudagraph": "reduce-overhead", "max-autotune": "max-autotune"}.get(mode))


def check_compile(mode: str, device: torch.device) -> None:
    """``ValueError`` unless ``compile: mode`` works on ``device`` (a config checks it before any work)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"training.compile: must be one of {', '.join(COMPILE_MODES)}")
    if mode == "none":
        return
    if mode == "cudagraph" and device.type != "cuda":
        raise ValueError(f"training.compile: cudagraph needs a CUDA device (training on {device.type}); "
                         "use none or torch")
    if not hasattr(torch, "compile"):
        raise ValueError("training.compile: this torch has no torch.compile; use compile: none")
    if device.type == "cuda":
        try:
            import triton  # noqa: F401  (inductor's GPU code generator)
        except ImportError:
            raise ValueError("training.compile: torch.compile on CUDA needs triton, which is not installed; "
                             "use compile: none") from None


def resolve_channels_last(value: str, device: torch.device, deterministic: bool) -> bool:
    """``auto``: on CUDA unless deterministic (cuDNN's tensor-core convolutions work on NHWC; the others
    would transpose each layer); never on the CPU, where it would change the float order of every result."""
    value = str(value).lower()
    if value not in CHANNELS_LAST:
        raise ValueError(f"training.channels_last: {value!r}: must be one of {', '.join(CHANNELS_LAST)}")
    if value == "auto":
        return device.type == "cuda" and not deterministic
    return value == "true"


class NonFiniteLogits(FloatingPointError):
    """A model returned NaN or infinite logits: its predictions (argmax of NaN) mean nothing."""


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (on the CPU) for images ``x``, in eval mode; one wait for the device at the end.

    ``NonFiniteLogits`` when any logit is NaN or infinite, so no result is computed from such predictions."""
    model.eval()
    preds, bad = [], torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device, non_blocking=True))
        bad += (~torch.isfinite(logits)).any(1).sum()
        preds.append(logits.argmax(1))
    if int(bad):  # the wait for the device that the copy below would make anyway
        raise NonFiniteLogits(f"the model returned non-finite logits (NaN or inf) on {int(bad)} of {len(x)} "
                              "images; no result is computed from them (check the weights, or the model's "
                              "forward for a division by zero or a log of 0)")
    return torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def count_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                  batch_size: int = 512) -> torch.Tensor:
    """Number of correctly classified images, as a tensor on ``device`` (no wait for the device)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(x), batch_size):
        pred = model(x[i:i + batch_size].to(device, non_blocking=True)).argmax(1)
        correct += (pred == y[i:i + batch_size].to(device, non_blocking=True)).sum()
    return correct


def fits_on_device(tensors: list[torch.Tensor], device: torch.device) -> bool:
    """Whether ``tensors`` may stay resident on ``device``: always on the CPU; on CUDA when they take at most
    ``RESIDENT_SHARE`` of its free memory."""
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return False  # a lazily decoded image set (ImageNet folders) is read batch by batch
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) <= RESIDENT_SHARE * free


def resident(tensors: list[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor], bool]:
    """``tensors`` moved to ``device`` if they fit there, else kept where they are (pinned, on CUDA); and
    whether they moved."""
    if fits_on_device(tensors, device):
        return [t.to(device) for t in tensors], True
    return [t.pin_memory() if device.type == "cuda" and isinstance(t, torch.Tensor) else t for t in tensors], False


def show_progress(progress: bool) -> bool:
    """A progress bar only for a person watching: asked for, and stdout is a terminal."""
    return progress and sys.stdout.isatty()


ATTACK_MEMORY_SHARE = 0.4  # an attack batch may take at most this share of the device's free memory
MAX_DEVICE_BATCH = 16384  # images (or image x transform pairs) per launch, at most
PROBE_IMAGES = 16


def fit_batch(bytes_per_image: float, free_bytes: float, n_images: int) -> int:
    """Images per batch that ``ATTACK_MEMORY_SHARE`` of ``free_bytes`` holds, between 1 and ``n_images``
    (and ``MAX_DEVICE_BATCH``)."""
    fit = int(ATTACK_MEMORY_SHARE * free_bytes / max(bytes_per_image, 1.0))
    return max(1, min(fit, n_images, MAX_DEVICE_BATCH))


def device_batch_size(model: nn.Module, x: torch.Tensor, device: torch.device, requested: int, n_images: int,
                      gradients: int = 1) -> int:
    """Images per attack batch on ``device``. On the CPU: ``requested`` (the preset's, so CPU results stay those
    of the preset). On CUDA: as many as ``ATTACK_MEMORY_SHARE`` of the free memory holds, measured once with
    a forward pass of ``PROBE_IMAGES`` images of ``x`` and ``gradients`` backward passes kept at once
    (0: forward only, as a grid of transforms needs; DeepFool keeps one gradient per candidate class)."""
    if device.type != "cuda" or len(x) == 0:
        return requested
    xb = x[:PROBE_IMAGES].to(device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    if gradients:
        xb = xb.clone().requires_grad_(True)
        torch.autograd.grad(model(xb).logsumexp(1).sum(), xb)
    else:
        with torch.no_grad():
            model(xb)
    torch.cuda.synchronize(device)
    per_image = (torch.cuda.max_memory_allocated(device) - base) / len(xb) * max(1, gradients)
    free, _ = torch.cuda.mem_get_info(device)
    return fit_batch(per_image, free, n_images)
