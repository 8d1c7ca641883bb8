"""What every minimum-norm attack (L2 or L-inf) returns besides its examples: metrics, spectra, convergence.

Convergence signal of an iterative minimum-norm attack (DDN, FMN): for each image fooled at the end,
the relative change of its best (smallest) adversarial norm over the last 10% of the steps,
``(best at the start of the tail - final best) / final best``; an image first fooled inside the tail
counts as infinite change. The signal is the median over those images (NaN when none is fooled).
Small means the best norm had stopped improving; above ``CONVERGENCE_TOLERANCE`` (1%) the cell is
flagged in ``info["flags"]``: more steps would probably have found smaller perturbations, so its rho
overestimates the model's robustness by more than the attack's usual slack. The signal is necessary,
not sufficient: with a step size annealed towards zero (DDN, FMN) late changes are small by
construction, so step counts are also checked against runs with more steps (docs/min-norm.md).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..metrics import flat_linf, linf_median, perturbation_metrics
from ..perturbation_spectra import mean_spectrum, normalised_profiles, spectral_summaries
from ..runtime import device_batch_size, predict
from .base import Attack, AttackResult
from .optimality import PassCounter

TAIL = 0.1  # share of the steps the convergence signal looks at
CONVERGENCE_TOLERANCE = 0.01


def cosine(i: int, steps: int, start: float, end: float) -> float:
    """Cosine annealing from ``start`` (step 0) towards ``end`` (reached after the last step)."""
    return end + (start - end) * (1 + math.cos(math.pi * i / steps)) / 2


def steps_within(steps: int, budget: int | None, passes_per_step: int = 2) -> int:
    """The step count an iterative attack runs under ``budget`` passes per image (None: ``steps``).

    A step of DDN or FMN is one forward and one backward pass; the schedules anneal over the steps run."""
    return steps if budget is None else min(steps, budget // passes_per_step)


def tail_snapshot_step(steps: int) -> int:
    """Index of the step after whose check the best norms are snapshot: the last ``TAIL`` of the steps follow.

    -1 (before any step) when the tail is every step."""
    return steps - max(1, math.ceil(TAIL * steps)) - 1


def convergence_signal(best_before: np.ndarray, best_final: np.ndarray) -> float:
    """Median relative change of the best norm over the tail, over images fooled at the end (inf: not yet
    fooled at the tail's start); NaN when none is fooled."""
    before, final = np.asarray(best_before, np.float64), np.asarray(best_final, np.float64)
    fooled = np.isfinite(final)
    if not fooled.any():
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (before[fooled] - final[fooled]) / np.maximum(final[fooled], 1e-12)
    return float(np.median(np.where(np.isfinite(before[fooled]), change, np.inf)))


def convergence_flag(member: str, signal: float, steps: int) -> str | None:
    if not signal > CONVERGENCE_TOLERANCE:  # NaN (nothing fooled) is the re-check's flag, not this one
        return None
    if math.isinf(signal):
        return (f"{member} did not converge: most of the images it fooled were first fooled in the last "
                f"{int(100 * TAIL)}% of its {steps} steps; raise steps")
    return (f"{member} did not converge: the median best norm still fell by {100 * signal:.1f}% over the last "
            f"{int(100 * TAIL)}% of its {steps} steps (tolerance {100 * CONVERGENCE_TOLERANCE:g}%); raise steps")


def spectra(x: np.ndarray, x_adv: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray,
            label: np.ndarray, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-sample ``hf_share``/``centroid`` (NaN where the prediction did not change) and the mean spectrum
    over clean-correct images whose prediction changed (``info["spectrum"]``)."""
    delta = (x_adv.astype(np.float64) - x.astype(np.float64))
    flipped = adv_pred != clean_pred
    hf, centroid = spectral_summaries(delta)
    hf[~flipped], centroid[~flipped] = np.nan, np.nan
    use = flipped & (clean_pred == label)
    freq, profiles = normalised_profiles(delta[use])
    return {"hf_share": hf, "centroid": centroid}, {"spectrum": mean_spectrum(freq, profiles, seed=seed)}


def minimum_norm_result(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, clean_pred: np.ndarray,
                        adv_pred: np.ndarray, info: dict[str, Any] | None = None, norm: str = "l2") -> AttackResult:
    """DeepFool's metrics (``perturbation_metrics``) plus the spectra, from CPU tensors and re-checked predictions.

    Every result stores the per-image L-inf norm (sample ``linf``) beside the L2 one; an attack minimising
    the L-inf norm (``norm: linf``) also reports ``linf_median``."""
    xn, an, yn = x.numpy(), x_adv.numpy(), y.numpy()
    metrics, samples = perturbation_metrics(xn, an, yn, clean_pred, adv_pred)
    samples["linf"] = flat_linf(an - xn)
    if norm == "linf":
        metrics["linf_median"] = linf_median(samples["linf"], clean_pred == yn)
    spec_samples, spec_info = spectra(xn, an, clean_pred, adv_pred, yn)
    return AttackResult(metrics, {**samples, **spec_samples}, info={**(info or {}), **spec_info})


def counted_batches(engine: Callable[..., tuple[torch.Tensor, ...]], model: nn.Module, x: torch.Tensor,
                    labels: torch.Tensor, batch_size: int, device: torch.device, desc: str, progress: bool,
                    **params: Any) -> tuple[tuple[torch.Tensor, ...], float]:
    """``engine(counted model, x_batch, labels_batch, **params)`` over batches on ``device``: its outputs joined
    on the CPU, and the forward plus backward passes it took per image (a ``PassCounter`` around ``model``).

    A batch that runs out of device memory is retried at half the size (each image is attacked on its own,
    so the results are those of any batching), and the passes of the failed try are not counted."""
    counter = PassCounter(model)
    parts: list[tuple[torch.Tensor, ...]] = []
    bar = tqdm(total=len(x), desc=desc, disable=not progress, leave=False)
    i, size = 0, batch_size
    while i < len(x):
        before = (counter.forward_rows, counter.backward_rows)
        try:
            out = engine(counter, x[i:i + size].to(device), labels[i:i + size].to(device), **params)
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            counter.forward_rows, counter.backward_rows = before
            torch.cuda.empty_cache()
            size = max(1, size // 2)
            continue
        parts.append(tuple(t.cpu() for t in out))
        bar.update(min(size, len(x) - i))
        i += size
    bar.close()
    return tuple(torch.cat(ts) for ts in zip(*parts)), counter.passes / max(1, len(x))


def boundary_fraction(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor,
                      steps: int) -> torch.Tensor:
    """Per image, the fraction of the segment from ``x`` to ``x_adv`` just past the decision boundary after
    ``steps`` bisections (1 where no midpoint changed the prediction from ``labels``)."""
    view = (-1,) + (1,) * (x.ndim - 1)
    lo = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    with torch.no_grad():
        for _ in range(steps):
            mid = (lo + hi) / 2
            adv = model(torch.lerp(x, x_adv, mid.view(view))).argmax(1) != labels
            hi, lo = torch.where(adv, mid, hi), torch.where(adv, lo, mid)
    return hi


def iterative_result(member: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                     clean: torch.Tensor, best_final: torch.Tensor, best_before: torch.Tensor, steps: int,
                     device: torch.device, passes: float, norm: str = "l2") -> AttackResult:
    """An iterative engine's result: re-check every example, then metrics, spectra, ``converged_<member>``,
    its flag and the ``passes`` per image."""
    adv_pred = predict(model, x_adv, device).numpy()
    signal = convergence_signal(best_before.numpy(), best_final.numpy())
    result = minimum_norm_result(x, x_adv, y, clean.numpy(), adv_pred, norm=norm)
    result.metrics[f"converged_{member}"] = signal
    flag = convergence_flag(member.upper(), signal, steps)
    if flag:
        result.info["flags"] = [flag]
    result.metrics["passes"] = passes
    return result


def rechecked_result(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, clean: torch.Tensor,
                     iterations: torch.Tensor, passes: float, device: torch.device, norm: str = "l2") -> AttackResult:
    """A DeepFool-style engine's result: re-check every example, then metrics, spectra, the iterations each
    image ran (mean and max) and the ``passes`` per image."""
    adv_pred = predict(model, x_adv, device).numpy()
    it = iterations.numpy()
    result = minimum_norm_result(x, x_adv, y, clean.numpy(), adv_pred, info={
        "iterations_mean": float(it.mean()) if len(it) else 0.0, "iterations_max": int(it.max()) if len(it) else 0},
        norm=norm)
    result.metrics["passes"] = passes
    return result


class CountedEngineAttack(Attack):
    """A native minimum-norm attack whose ``run`` is one batched engine through ``counted_batches``: a subclass
    gives the engine (``batch_engine``), its parameters and how its outputs become a result (``finish``).
    On CUDA the batch size comes from the device's free memory (``runtime.device_batch_size``)."""

    progress_label = ""

    def gradients_kept(self) -> int:
        """Gradients the engine keeps at once per image, for sizing batches on a device."""
        return 1

    def batch_engine(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def engine_params(self, device: torch.device, gen: torch.Generator | None) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k != "batch_size"}

    def finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
               out: tuple[torch.Tensor, ...], passes: float, params: dict[str, Any],
               device: torch.device) -> AttackResult:
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        clean = predict(model, x, device)
        params = self.engine_params(device, gen)
        batch = device_batch_size(model, x, device, self.params["batch_size"], len(x), self.gradients_kept())
        out, passes = counted_batches(self.batch_engine(), model, x, clean, batch, device, self.progress_label,
                                      progress, **params)
        result = self.finish(model, x, y, clean, out, passes, params, device)
        if batch != self.params["batch_size"]:
            result.info["device_batch_size"] = batch
        return result

