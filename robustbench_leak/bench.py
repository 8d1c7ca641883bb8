"""``rbleak bench``: throughput measured side by side in one process, reported as ratios.

The bound is the model's plain batched forward+backward throughput; attack engines are measured on
the same model and inputs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .attacks import build_attack
from .data import load_dataset
from .models import Normalized, count_params, create_model
from .provenance import provenance
from .train import resolve_device

DEFAULT_MODEL = {"arch": "tomen_cnn", "options": {"n_layers": 4, "width": 16, "kernel_size": 7, "window": "hamming"}}


def _timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def plain_throughput(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    """Images per second of batched forward, and of forward+backward to the input (no weight grads)."""
    x = x.to(device)

    def forward() -> None:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i:i + batch_size])

    def forward_backward() -> None:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].clone().requires_grad_(True)
            model(xb).sum().backward()

    forward()  # warm-up
    return {"forward_images_per_s": len(x) / _timed(forward, 3),
            "forward_backward_images_per_s": len(x) / _timed(forward_backward, 3)}


def run_bench(out: Path, n_images: int = 100, dataset: str = "synthetic", device_name: str = "auto",
              model_spec: dict[str, Any] | None = None, checkpoint_state: dict | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    device = resolve_device(device_name)
    spec = model_spec or DEFAULT_MODEL
    data = load_dataset(dataset, test_subset=n_images) if dataset != "synthetic" else load_dataset(
        "synthetic", n_train=16, n_test=n_images)
    torch.manual_seed(0)
    model = Normalized(create_model(spec["arch"], data.num_classes, data.in_chans, **spec["options"]),
                       data.mean, data.std)
    if checkpoint_state:
        model.load_state_dict(checkpoint_state)
    model.to(device).eval().requires_grad_(False)
    x, y = data.test_x[:n_images], data.test_y[:n_images]
    results: dict[str, Any] = {"model": spec, "params": count_params(model.net), "n_images": len(x),
                               "dataset": dataset, **plain_throughput(model, x, device)}
    log(f"plain: forward {results['forward_images_per_s']:.0f} img/s, "
        f"forward+backward {results['forward_backward_images_per_s']:.0f} img/s")

    deepfool = build_attack("deepfool", "art", max_iter=50, overshoot=0.02, nb_grads=10, batch_size=100)
    t = _timed(lambda: deepfool.run(model, x, y, device, progress=False))
    results["art_deepfool_images_per_s"] = len(x) / t
    log(f"ART DeepFool: {results['art_deepfool_images_per_s']:.2f} img/s")

    spatial = build_attack("spatial", "art", max_translation=10.0, num_translations=3, max_rotation=30.0,
                           num_rotations=3)
    n_transforms = 3 * 3 * 3
    t = _timed(lambda: spatial.run(model, x, y, device, progress=False))
    results["art_spatial_image_transforms_per_s"] = len(x) * n_transforms / t
    results["art_spatial_vs_forward"] = results["art_spatial_image_transforms_per_s"] / results["forward_images_per_s"]
    results["art_deepfool_vs_forward_backward"] = (results["art_deepfool_images_per_s"]
                                                   / results["forward_backward_images_per_s"])
    log(f"ART spatial: {results['art_spatial_image_transforms_per_s']:.0f} image-transforms/s "
        f"({100 * results['art_spatial_vs_forward']:.1f}% of plain forward throughput)")
    results["provenance"] = provenance(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {out}")
    return results
