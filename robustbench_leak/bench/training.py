"""``rbleak bench --training``: training throughput against the hardware's peak, unpacked and packed.

For each model size (tomen_cnn layers x width at a batch size) and kernel (3x3 plain, 7x7 Hamming), one
process measures side by side: the plainest loop (``common.plain_epoch``), the harness (``train_model``),
and the harness packed at K members (``packed.train_packed``, K models each on its own batches), each
for the same number of steps after a warm-up run of the same shapes. Reported per row: images/s, the
FLOPs of one training step per image from PyTorch's FLOP counter (forward and backward counted as
executed, not estimated), the achieved TFLOP/s and their fraction of the device's dense peak for the
precision used (looked up by device name in ``PEAK_TFLOPS``; ``null`` where unknown, e.g. on a CPU), and
per size the ratios harness/plain and packed/unpacked. ``--variants`` adds harness rows in bf16 and (CUDA)
without channels_last, ``--autotune`` one with ``compile: max-autotune``, each against the base row. The
JSON is rewritten after every row (``complete: false`` until the end), so a bench cut short keeps its rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..config.training import TrainSettings
from ..data import ImageDataset, load_dataset
from ..models import Normalized, create_model
from ..run.packed import train_packed
from ..run.provenance import provenance
from ..run.training import train_model
from ..runtime import resolve_channels_last, resolve_device, resolve_precision
from .common import output_path, plain_epoch, sync

Log = Callable[[str], None]
# dense (no sparsity) peaks from the vendors' spec sheets, TFLOP/s, by a substring of the device name;
# TF32 convolutions count against the TF32 peak ("tf32-conv": cuDNN's convolutions in TF32, matmuls fp32)
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "H100 80GB HBM3": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},  # H100 SXM
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}
PEAK_KEY = {"fp32": "fp32", "tf32": "tf32", "tf32-conv": "tf32", "bf16": "bf16"}
GPU_SIZES = "6x64@128,6x128@32"  # the converged protocol's models, and the paper's
CPU_SIZES = "4x16@64"  # the CPU-scale protocol's
KERNELS = {"3x3": {"kernel_size": 3, "window": "none"}, "7x7-hamming": {"kernel_size": 7, "window": "hamming"}}


MAX_ENTRIES = 16  # sizes or pack sizes in one bench: each is a measurement of minutes on a GPU
SIZE_RANGES = {"layers": (2, 64), "width": (1, 4096), "batch": (1, 1 << 16)}
MAX_PACK = 64  # the config's training.pack range


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """``6x64@128,6x128@32`` -> [(layers, width, batch), ...]."""
    out = []
    if len(text.split(",")) > MAX_ENTRIES:
        raise ValueError(f"--sizes: {text[:40]!r}: at most {MAX_ENTRIES} sizes")
    for part in text.split(","):
        try:
            shape, batch = part.strip().split("@")
            layers, width = shape.split("x")
            out.append((int(layers), int(width), int(batch)))
        except ValueError:
            raise ValueError(f"--sizes: {part.strip()[:40]!r}: expected LAYERSxWIDTH@BATCH, e.g. 6x64@128") from None
        if any(not lo <= v <= hi for v, (lo, hi) in zip(out[-1], SIZE_RANGES.values())):
            allowed = ", ".join(f"{k} {lo} to {hi:,}" for k, (lo, hi) in SIZE_RANGES.items())
            raise ValueError(f"--sizes: {part.strip()[:40]!r}: allowed: {allowed}")
    return out


def parse_ints(text: str, flag: str, hi: int = MAX_PACK) -> list[int]:
    allowed = f"expected at most {MAX_ENTRIES} comma-separated integers from 1 to {hi}, e.g. 1,5,20"
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag}: {text[:40]!r}: {allowed}") from None
    if not values or min(values) < 1 or max(values) > hi or len(values) > MAX_ENTRIES:
        raise ValueError(f"{flag}: {text[:40]!r}: {allowed}")
    return values


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """The dense peak TFLOP/s of ``device`` for ``precision`` and where it came from."""
    if device.type != "cuda":
        return None, "unknown: no peak table for CPUs"
    return peak_for_name(torch.cuda.get_device_name(device), precision)


def peak_for_name(name: str, precision: str) -> tuple[float | None, str]:
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[PEAK_KEY[precision]], f"spec sheet, dense ({key})"
    return None, f"unknown: {name} is not in the peak table"


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192) -> float | None:
    """TFLOP/s of a large matrix product on ``device`` (CUDA only): the reachable peak, beside the sheet's."""
    if device.type != "cuda":
        return None
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        return 10 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def step_flops_per_image(make: Callable[[], nn.Module], input_shape: tuple[int, ...], batch: int = 2) -> int:
    """FLOPs of one training step (forward, loss, backward) per image, counted by PyTorch on the CPU."""
    model = make().train()
    x = torch.zeros(batch, *input_shape)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return int(counter.get_total_flops()) // batch


def _maker(data: ImageDataset, layers: int, width: int, kernel: dict[str, Any], seed: int = 0) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        torch.manual_seed(seed)
        net = create_model("tomen_cnn", data.num_classes, data.in_chans, n_layers=layers, width=width, **kernel)
        return Normalized(net, data.mean, data.std)
    return make


def measure(mode: str, make: Callable[[], nn.Module], data: ImageDataset, s: TrainSettings, device: torch.device,
            steps: int, members: int = 1) -> tuple[float, int]:
    """Seconds and images of ``steps`` training steps of one ``mode`` (plain | harness | packed), after a
    warm-up of the same shapes (cuDNN's autotuning, the allocator, compilation: not timed)."""
    n = steps * s.batch_size
    part = replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n], test_x=data.test_x[:s.batch_size],
                   test_y=data.test_y[:s.batch_size])
    warm = replace(part, train_x=part.train_x[:2 * s.batch_size], train_y=part.train_y[:2 * s.batch_size])
    one = replace(s, epochs=1, eval_every=1)
    if mode == "plain":
        plain_epoch(make(), warm, one, device)
        seconds, images = plain_epoch(make(), part, one, device)
        return seconds, images
    if mode == "harness":
        train_model(make(), warm, one, 0, device, progress=False)
        history = train_model(make(), part, one, 0, device, progress=False)
        return history[0]["seconds"] - history[0]["test_seconds"], n
    if mode == "packed":
        train_packed([make() for _ in range(members)], warm, one, list(range(members)), device, progress=False)
        (record,), *_ = train_packed([make() for _ in range(members)], part, one, list(range(members)), device,
                                     progress=False)
        return members * (record["seconds"] - record["test_seconds"]), n * members  # records hold 1/K each
    raise ValueError(f"unknown mode {mode!r}")


def bench_training_rows(device: torch.device, data: ImageDataset, sizes: list[tuple[int, int, int]],
                        packs: list[int], steps: int, variants: bool, log: Log, autotune: bool = False,
                        on_row: Callable[[dict[str, Any]], None] = lambda partial: None) -> dict[str, Any]:
    """The rows and ratios; ``on_row`` gets the result so far after each row (a run cut short keeps them)."""
    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for layers, width, batch in sizes:
        for kernel_name, kernel in KERNELS.items():
            make = _maker(data, layers, width, kernel)
            flops = step_flops_per_image(make, data.input_shape)
            base = TrainSettings(batch_size=batch, augment="flip_crop", lr=0.05)
            plan = [("plain", base, 1, "base"), ("harness", base, 1, "base")]
            plan += [("packed", base, k, "base") for k in packs]
            if variants:
                plan.append(("harness", replace(base, precision="bf16"), 1, "bf16"))
                if device.type == "cuda":
                    plan.append(("harness", replace(base, channels_last="false"), 1, "no channels_last"))
            if autotune:  # compiling with autotuning takes minutes per shape: asked for apart
                plan.append(("harness", replace(base, compile="max-autotune"), 1, "compile max-autotune"))
            size_rows = {}
            for mode, s, k, variant in plan:
                try:
                    seconds, images = measure(mode, make, data, s, device, steps, k)
                except (RuntimeError, ValueError) as exc:  # e.g. bf16 or compile unavailable here
                    log(f"  {layers}x{width}@{batch} {kernel_name} {mode} {variant}: not measured ({exc})")
                    continue
                precision = resolve_precision(s.precision, device)
                peak, source = device_peak(device, precision)
                tflops = images * flops / seconds / 1e12
                row = {"layers": layers, "width": width, "batch_size": batch, "kernel": kernel_name, "mode": mode,
                       "members": k, "variant": variant, "precision": precision,
                       "channels_last": resolve_channels_last(s.channels_last, device, s.deterministic),
                       "compile": s.compile, "steps": steps, "images": images, "seconds": seconds,
                       "images_per_s": images / seconds, "train_step_flops_per_image": flops,
                       "tflops": tflops, "peak_tflops": peak, "peak_source": source,
                       "fraction_of_peak": tflops / peak if peak else None}
                rows.append(row)
                size_rows[(mode, k, variant)] = row
                on_row({"rows": rows, "ratios": ratios})
                log(f"  {layers}x{width}@{batch} {kernel_name:<11} {mode:<7} x{k:<2} {variant:<20} "
                    f"{row['images_per_s']:>10,.0f} img/s {tflops:9.4g} TFLOP/s"
                    + (f" ({100 * row['fraction_of_peak']:.1f}% of {peak:g})" if peak else " (peak unknown)"))
            unpacked = size_rows.get(("harness", 1, "base"))
            if unpacked:
                entry: dict[str, Any] = {"layers": layers, "width": width, "batch_size": batch, "kernel": kernel_name}
                if ("plain", 1, "base") in size_rows:
                    entry["harness_vs_plain"] = unpacked["images_per_s"] / size_rows[("plain", 1, "base")]["images_per_s"]
                for (mode, k, variant), row in size_rows.items():
                    if mode == "packed":
                        entry[f"packed_{k}_vs_unpacked"] = row["images_per_s"] / unpacked["images_per_s"]
                    elif mode == "harness" and variant != "base":
                        entry[f"{variant.replace(' ', '_')}_vs_base"] = row["images_per_s"] / unpacked["images_per_s"]
                ratios.append(entry)
    return {"rows": rows, "ratios": ratios}


def run_training_bench(out: str | Path, device_name: str = "auto", sizes: str | None = None,
                       packs: str | None = None, steps: int | None = None, dataset: str = "fashion-mnist",
                       variants: bool = False, log: Log = print, autotune: bool = False) -> dict[str, Any]:
    """Measure and write JSON to ``out`` (a file, or an existing folder to hold bench-training.json)."""
    path = output_path(str(out), "bench-training.json")
    device = resolve_device(device_name)
    gpu = device.type == "cuda"
    size_list = parse_sizes(sizes or (GPU_SIZES if gpu else CPU_SIZES))
    pack_list = parse_ints(packs or ("1,5,20" if gpu else "1,5"), "--packs")
    steps = steps if steps is not None else (30 if gpu else 4)
    if steps < 1:
        raise ValueError(f"--steps: must be an integer >= 1 (got {steps})")
    largest = max(b for _, _, b in size_list) * steps
    data = load_dataset(dataset) if dataset != "synthetic" else load_dataset("synthetic", n_train=largest,
                                                                               n_test=64)
    if len(data.train_y) < largest:
        raise ValueError(f"--steps: {steps} steps at batch {largest // steps} need {largest} training images; "
                         f"{dataset} has {len(data.train_y)}")
    log(f"training bench on {device}: sizes {sizes or ('GPU' if gpu else 'CPU') + ' default'}, packs {pack_list}, "
        f"{steps} steps per measurement, {dataset}")
    result: dict[str, Any] = {"device": str(device), "dataset": dataset, "threads": torch.get_num_threads()}
    if gpu:
        result["measured_matmul_tflops"] = {"bf16": measured_matmul_tflops(device, torch.bfloat16),
                                            "tf32": measured_matmul_tflops(device, torch.float32)}
    result["provenance"] = provenance(device)

    def write(partial: dict[str, Any], complete: bool = False) -> None:
        path.write_text(json.dumps({**result, **partial, "complete": complete}, indent=2) + "\n")

    write(bench_training_rows(device, data, size_list, pack_list, steps, variants, log, autotune, on_row=write),
          complete=True)
    result = json.loads(path.read_text())
    for r in result["ratios"]:
        shown = ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k.endswith(("_vs_plain", "_vs_unpacked", "_vs_base")))
        log(f"{r['layers']}x{r['width']}@{r['batch_size']} {r['kernel']}: {shown}")
    log(f"wrote {path}")
    return result
