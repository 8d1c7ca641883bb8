"""Spatial-transformation attack in batched PyTorch: translations and rotations on the device.

The grid is ART's (``SpatialTransformation``): ``round(linspace(-m, m, num_translations))`` pixel shifts
with ``m = round(size * max_translation / 100)``, computed for the rows from the image HEIGHT and for
the columns from its WIDTH (ART computes the row range from the channel count on NCHW input, so it
never shifts vertically), and ``linspace(-max_rotation, max_rotation, num_rotations)`` degrees.
Like ART, a transform shifts first and then rotates about the image centre, fills with 0 and clips
to [0, 1]; the resampling is one ``grid_sample`` (bicubic by default) instead of scipy's spline on
the CPU, so rotated pixels differ slightly from ART's while integer shifts are exact.
``interpolation: scipy`` resamples exactly as ART does (``scipy.ndimage.rotate``, cubic spline, on the
CPU): slower, for cross-checks against ART and for numbers that must equal ART's.

Modes:
- ``global``: ART's threat model: one transform for the whole set, the one that changes the most
  predictions on a fitting split that is disjoint from the attacked images (``fit_on: holdout``), or
  on the attacked images themselves as ART does (``fit_on: attacked``).
- ``worst_of_grid``: per-example worst case over the whole grid (Engstrom et al., ICML 2019).
- ``worst_of_k``: per-example worst case over ``k`` random transforms drawn from the same ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..metrics import ROBUST_ACCURACY, Metric, prediction_metrics
from ..runtime import device_batch_size, predict
from .base import Attack, AttackResult, Range, at_least, check_grid, register_attack


@dataclass(frozen=True)
class Transform:
    shift_rows: int
    shift_cols: int
    rotation_deg: float


def art_grid(height: int, width: int, max_translation: float, num_translations: int, max_rotation: float,
             num_rotations: int) -> list[Transform]:
    """ART's grid, deduplicated and in ART's search order (rows, then cols, then rotation), both axes."""
    def shifts(size: int) -> list[int]:
        m = int(round(size * max_translation / 100.0))
        return sorted({int(round(g)) for g in np.linspace(-m, m, num=num_translations)})

    rots = sorted(set(np.linspace(-max_rotation, max_rotation, num=num_rotations).tolist()))
    return [Transform(r, c, float(a)) for r in shifts(height) for c in shifts(width) for a in rots]


def shift_images(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Exact integer shift with zero fill (what scipy's spline shift gives for integer offsets)."""
    if rows == 0 and cols == 0:
        return x
    h, w = x.shape[2:]
    out = torch.zeros_like(x)
    src_r, dst_r = slice(max(0, -rows), min(h, h - rows)), slice(max(0, rows), min(h, h + rows))
    src_c, dst_c = slice(max(0, -cols), min(w, w - cols)), slice(max(0, cols), min(w, w + cols))
    if src_r.start < src_r.stop and src_c.start < src_c.stop:
        out[:, :, dst_r, dst_c] = x[:, :, src_r, src_c]
    return out


def rotate_images(x: torch.Tensor, degrees: float, mode: str = "bicubic") -> torch.Tensor:
    """Rotate about the image centre with zero padding, with scipy.ndimage.rotate's orientation."""
    if degrees == 0.0:
        return x
    if mode == "scipy":  # ART's resampling, bit for bit: scipy's defaults (order 3 spline, constant 0 fill)
        from scipy.ndimage import rotate

        out = rotate(x.detach().cpu().numpy(), degrees, axes=(2, 3), reshape=False)
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)
    n, _, h, w = x.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    rows = torch.arange(h, dtype=x.dtype, device=x.device) - (h - 1) / 2
    cols = torch.arange(w, dtype=x.dtype, device=x.device) - (w - 1) / 2
    pr, pc = torch.meshgrid(rows, cols, indexing="ij")
    # output pixel p samples the input at R (p - centre) + centre (checked against scipy in the tests)
    src_r = cos * pr + sin * pc + (h - 1) / 2
    src_c = -sin * pr + cos * pc + (w - 1) / 2
    grid = torch.stack([2 * src_c / (w - 1) - 1, 2 * src_r / (h - 1) - 1], dim=-1)
    return F.grid_sample(x, grid.unsqueeze(0).expand(n, -1, -1, -1), mode=mode, padding_mode="zeros",
                         align_corners=True)


def transform_images(x: torch.Tensor, t: Transform, mode: str = "bicubic") -> torch.Tensor:
    """ART's order: shift (content leaving the frame is lost), then rotate; clip to [0, 1]."""
    return rotate_images(shift_images(x, t.shift_rows, t.shift_cols), t.rotation_deg, mode).clamp(0.0, 1.0)


def _sampling_grids(transforms: list[Transform], h: int, w: int, device: torch.device) -> torch.Tensor:
    """``grid_sample`` grids of the rotations of ``transforms``, (T, H, W, 2): ``rotate_images``'s grid, each
    cosine and sine rounded to float32 from double precision as its float-times-tensor arithmetic does."""
    angles = [math.radians(t.rotation_deg) for t in transforms]
    cos = torch.tensor([math.cos(a) for a in angles], dtype=torch.float32, device=device).view(-1, 1, 1)
    sin = torch.tensor([math.sin(a) for a in angles], dtype=torch.float32, device=device).view(-1, 1, 1)
    rows = torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2
    pr, pc = torch.meshgrid(rows, cols, indexing="ij")
    src_r = cos * pr + sin * pc + (h - 1) / 2
    src_c = -sin * pr + cos * pc + (w - 1) / 2
    return torch.stack([2 * src_c / (w - 1) - 1, 2 * src_r / (h - 1) - 1], dim=-1)


class GridEvaluator:
    """Every transform of a list applied to a batch of images in one device batch: integer shifts as one
    gather from a zero-padded copy, rotations as one ``grid_sample`` with per-transform grids, built once on
    the device. The images are bitwise ``transform_images``'s (tests compare them)."""

    def __init__(self, transforms: list[Transform], h: int, w: int, device: torch.device, mode: str) -> None:
        self.mode = mode
        self.pad = max([abs(t.shift_rows) for t in transforms] + [abs(t.shift_cols) for t in transforms] + [0])
        as_tensor = lambda v, dt: torch.tensor(v, dtype=dt, device=device)  # noqa: E731
        dr = as_tensor([t.shift_rows for t in transforms], torch.long)
        dc = as_tensor([t.shift_cols for t in transforms], torch.long)
        # output pixel (i, j) of a shift by (dr, dc) is input pixel (i - dr, j - dc), zero outside
        self.rows = torch.arange(h, device=device) - dr.view(-1, 1) + self.pad  # (T, H)
        self.cols = torch.arange(w, device=device) - dc.view(-1, 1) + self.pad  # (T, W)
        self.rotated = as_tensor([t.rotation_deg != 0.0 for t in transforms], torch.bool)
        self.grids = _sampling_grids(transforms, h, w, device)

    def images(self, x: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """Transforms ``t0:t1`` of images ``x`` (on the device), transform-major: ((t1 - t0) * len(x), C, H, W)."""
        n, c, h, w = x.shape
        m = t1 - t0
        padded = F.pad(x, (self.pad,) * 4)
        rows, cols = self.rows[t0:t1], self.cols[t0:t1]
        shifted = padded[:, :, rows.view(m, h, 1), cols.view(m, 1, w)]  # (N, C, m, H, W)
        shifted = shifted.permute(2, 0, 1, 3, 4).reshape(m * n, c, h, w)
        grid = self.grids[t0:t1].to(x.dtype).unsqueeze(1).expand(m, n, h, w, 2).reshape(m * n, h, w, 2)
        rotated = F.grid_sample(shifted, grid, mode=self.mode, padding_mode="zeros", align_corners=True)
        keep = ~self.rotated[t0:t1].repeat_interleave(n).view(-1, 1, 1, 1)  # a 0 degree rotation is skipped
        return torch.where(keep, shifted, rotated).clamp(0.0, 1.0)


def grid_predictions(model: nn.Module, x: torch.Tensor, transforms: list[Transform], device: torch.device,
                     batch_size: int, interpolation: str, progress: bool = False) -> torch.Tensor:
    """Predicted labels of every image under every transform: (len(transforms), len(x)), on the CPU.

    Each forward pass evaluates about ``batch_size`` (transform, image) pairs; the predictions stay on the
    device until the end."""
    model.eval()
    if interpolation == "scipy" or not transforms:
        return _grid_predictions_per_transform(model, x, transforms, device, batch_size, interpolation, progress)
    h, w = x.shape[2:]
    evaluator = GridEvaluator(transforms, h, w, device, interpolation)
    out = torch.empty(len(transforms), len(x), dtype=torch.long, device=device)
    per_chunk = max(1, batch_size // max(1, min(len(x), batch_size)))
    with torch.no_grad():
        for start in tqdm(range(0, len(x), batch_size), desc="spatial (native)", disable=not progress, leave=False):
            xb = x[start:start + batch_size].to(device, non_blocking=True)
            for t0 in range(0, len(transforms), per_chunk):
                t1 = min(len(transforms), t0 + per_chunk)
                pred = model(evaluator.images(xb, t0, t1)).argmax(1)
                out[t0:t1, start:start + len(xb)] = pred.view(t1 - t0, len(xb))
    return out.cpu()


def _grid_predictions_per_transform(model: nn.Module, x: torch.Tensor, transforms: list[Transform],
                                    device: torch.device, batch_size: int, interpolation: str,
                                    progress: bool) -> torch.Tensor:
    """One ``transform_images`` call per transform: for scipy's resampling, which runs on the CPU anyway."""
    out = torch.empty(len(transforms), len(x), dtype=torch.long)
    per_chunk = max(1, batch_size // max(1, min(len(x), batch_size)))
    with torch.no_grad():
        for start in tqdm(range(0, len(x), batch_size), desc="spatial (native)", disable=not progress, leave=False):
            xb = x[start:start + batch_size].to(device)
            for t0 in range(0, len(transforms), per_chunk):
                group = transforms[t0:t0 + per_chunk]
                batch = torch.cat([transform_images(xb, t, interpolation) for t in group])
                pred = model(batch).argmax(1).view(len(group), len(xb)).cpu()
                out[t0:t0 + len(group), start:start + len(xb)] = pred
    return out


def per_transform_accuracy(grid: list[Transform], preds: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Accuracy of every grid transform on the attacked images: tx (column shift, px), ty (row shift, px),
    rot (degrees), accuracy; equal-length lists in grid order."""
    return {"tx": [float(t.shift_cols) for t in grid], "ty": [float(t.shift_rows) for t in grid],
            "rot": [float(t.rotation_deg) for t in grid],
            "accuracy": [float(a) for a in (preds == labels[None]).mean(1)]}


FOOLING_RATE = Metric("fooling_rate", "fraction of images whose prediction the chosen transform changed (ART's fooling "
                      "rate)", percent=True, higher_is_better=False)
SHIFT_ROWS = Metric("shift_rows", "vertical shift in pixels of the chosen global transform", unit="px")
SHIFT_COLS = Metric("shift_cols", "horizontal shift in pixels of the chosen global transform", unit="px")
ROTATION_DEG = Metric("rotation_deg", "rotation in degrees of the chosen global transform", unit="deg")
CHOSEN_TRANSFORM = (FOOLING_RATE, SHIFT_ROWS, SHIFT_COLS, ROTATION_DEG)


@register_attack
class NativeSpatial(Attack):
    kind = "spatial"
    engine = "native"
    preferred_engine = True
    description = "spatial transformation (black-box): translations + rotations, batched PyTorch engine"
    defaults = {"max_translation": 10.0, "num_translations": 5, "max_rotation": 30.0, "num_rotations": 7,
                "mode": "global", "fit_on": "holdout", "k": 10, "seed": 0, "interpolation": "bicubic",
                "batch_size": 512, "record_grid": True}
    metrics = (ROBUST_ACCURACY,
               Metric("worst_of_grid_accuracy", "fraction of images classified correctly before the attack and under "
                      "EVERY transform of the grid (per-example worst case)", percent=True),
               *CHOSEN_TRANSFORM)
    declares = (Metric("fit_fooling_rate", "fooling rate of the chosen global transform on the fitting split it was "
                      "chosen on", percent=True, higher_is_better=False),)
    needs_fit = True
    ranges = {"max_translation": Range(0.0, 100.0), "num_translations": at_least(1), "max_rotation": Range(0.0, 180.0),
              "num_rotations": at_least(1), "k": at_least(1), "seed": Range(0, 2**63 - 1), "batch_size": at_least(1)}

    @classmethod
    def check_params(cls, params: dict) -> dict:
        merged = super().check_params(params)
        choices = {"mode": ("global", "worst_of_grid", "worst_of_k"), "fit_on": ("holdout", "attacked"),
                   "interpolation": ("bilinear", "bicubic", "nearest", "scipy")}
        for key, allowed in choices.items():
            if merged[key] not in allowed:
                raise ValueError(f"attack 'spatial' parameter {key!r} must be one of {', '.join(allowed)}, "
                                 f"got {merged[key]!r}")
        check_grid(cls.kind, merged)
        return merged

    @classmethod
    def per_example(cls, params: dict) -> bool:
        return {**cls.defaults, **params}["mode"] != "global"

    def uses_fit_split(self) -> bool:
        return self.params["mode"] == "global" and self.params["fit_on"] == "holdout"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        p = self.params
        h, w = x.shape[2:]
        grid = art_grid(h, w, p["max_translation"], p["num_translations"], p["max_rotation"], p["num_rotations"])
        labels = y.numpy()
        clean_pred = predict(model, x, device).numpy()
        info: dict = {"mode": p["mode"], "grid_size": len(grid)}
        # (image, transform) pairs per forward pass: on CUDA as many as the device's memory holds
        batch = device_batch_size(model, x, device, p["batch_size"], len(x) * len(grid), gradients=0)
        if batch != p["batch_size"]:
            info["device_batch_size"] = batch
        metrics: dict[str, float] = {}
        # global and worst_of_grid always evaluate the grid on the attacked images (per-transform accuracy)
        preds = (grid_predictions(model, x, grid, device, batch, p["interpolation"], progress).numpy()
                 if p["mode"] != "worst_of_k" else None)

        if p["mode"] == "global":
            if p["fit_on"] == "holdout":
                if fit is None:
                    raise ValueError("spatial mode 'global' with fit_on 'holdout' needs a fitting split")
                fit_x = fit[0]
                fit_clean = predict(model, fit_x, device).numpy()
                fit_preds = grid_predictions(model, fit_x, grid, device, batch, p["interpolation"]).numpy()
                fooling = (fit_preds != fit_clean[None]).mean(1)
                info["n_fit"] = len(fit_x)
            else:
                fooling = (preds != clean_pred[None]).mean(1)
            # ART keeps the first transform with the strictly highest fooling rate, starting from identity at 0
            best = int(np.argmax(fooling)) if fooling.max() > 0 else None
            chosen = grid[best] if best is not None else Transform(0, 0, 0.0)
            if preds is not None and best is not None:
                adv_pred = preds[best]
            else:
                adv_pred = predict(model, transform_images(x, chosen, p["interpolation"]), device).numpy()
            metrics.update(prediction_metrics(labels, clean_pred, adv_pred, per_example=False))
            metrics.update(fooling_rate=float(np.mean(adv_pred != clean_pred)), shift_rows=float(chosen.shift_rows),
                           shift_cols=float(chosen.shift_cols), rotation_deg=float(chosen.rotation_deg),
                           fit_fooling_rate=float(fooling.max()))
        elif p["mode"] == "worst_of_grid":
            adv_pred = _worst_case(preds, labels, clean_pred)
            metrics.update(prediction_metrics(labels, clean_pred, adv_pred))
        else:
            gen = np.random.default_rng(p["seed"])
            rows = sorted({t.shift_rows for t in grid})
            cols = sorted({t.shift_cols for t in grid})
            sampled = [Transform(int(gen.integers(rows[0], rows[-1] + 1)), int(gen.integers(cols[0], cols[-1] + 1)),
                                 float(gen.uniform(-p["max_rotation"], p["max_rotation"]))) for _ in range(p["k"])]
            k_preds = grid_predictions(model, x, sampled, device, batch, p["interpolation"], progress).numpy()
            adv_pred = _worst_case(k_preds, labels, clean_pred)
            metrics.update(prediction_metrics(labels, clean_pred, adv_pred))
            info["k"] = p["k"]
        if preds is not None:
            info["per_transform"] = per_transform_accuracy(grid, preds, labels)
            info["grid_mean_accuracy"] = float(np.mean(info["per_transform"]["accuracy"]))
        if preds is not None and p["record_grid"]:
            info["grid"] = [{"shift_rows": t.shift_rows, "shift_cols": t.shift_cols, "rotation_deg": t.rotation_deg,
                             "accuracy": float(np.mean(preds[i] == labels))} for i, t in enumerate(grid)]
            # per example: the untransformed image counts as one of its transforms (x_adv = x)
            metrics["worst_of_grid_accuracy"] = float(np.mean((preds == labels[None]).all(0) & (clean_pred == labels)))
        samples = {"label": labels, "clean_pred": clean_pred, "adv_pred": adv_pred}
        return AttackResult(metrics, samples, info)


def _worst_case(preds: np.ndarray, labels: np.ndarray, clean_pred: np.ndarray) -> np.ndarray:
    """Per image: a wrong prediction under some transform if one exists, else the clean prediction."""
    wrong = preds != labels[None]
    any_wrong = wrong.any(0)
    first_wrong = wrong.argmax(0)
    worst = preds[first_wrong, np.arange(preds.shape[1])]
    return np.where(any_wrong, worst, clean_pred)
