"""APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020), L-inf and L2, batched PyTorch.

Per image: a random start on the eps-sphere, then ``n_iter`` momentum steps (0.75) of size ``2 eps``, halved at
checkpoints (at 22% of the iterations, then at intervals shrinking by 3% to at least 6%) where the loss rose in
at most ``rho`` of the steps since the last checkpoint, or where the step was not halved last time and the best
loss did not improve; a halving restarts from the best point. Losses: ``ce`` (cross-entropy), ``dlr``
(difference of logits ratio) and ``dlr-targeted`` (the targeted DLR loss towards the ``t``-th most likely class,
t = 2 .. n_target_classes + 1, each target on the images the earlier ones did not fool). ``eot_iter`` averages the
gradient over that many forward passes (EOT, for models with randomness).

The loss trace (``apgd_run``'s third output) is the reference's ``loss_steps``: with the same random start
(``torch.rand`` / ``torch.randn`` from a generator seeded as the reference seeds the global one) the iterates are
the reference's (tests/test_autoattack_references.py). Random draws come from ``gen`` on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("ce", "dlr", "dlr-targeted")
MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr-targeted": 4}  # DLR divides by the gap to the 3rd (targeted: 3rd and 4th) logit


def check_loss_classes(loss: str, num_classes: int, what: str) -> None:
    """``ValueError`` when ``loss`` is undefined for ``num_classes`` classes."""
    if num_classes < MIN_CLASSES[loss]:
        raise ValueError(f"{what} needs at least {MIN_CLASSES[loss]} classes (its {loss} loss divides by the gap "
                         f"between the largest and the {'3rd and 4th' if loss == 'dlr-targeted' else '3rd'} largest "
                         f"logit); got {num_classes} classes")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR: -(z_y - max_{j != y} z_j) / (z_(1) - z_(3)), z_(k) the k-th largest logit."""
    z = logits.sort(1)[0]
    top_is_y = logits.argmax(1) == y
    other = torch.where(top_is_y, z[:, -2], z[:, -1])
    return -(logits.gather(1, y[:, None])[:, 0] - other) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)."""
    z = logits.sort(1)[0]
    gap = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, target[:, None])[:, 0]
    return -gap / (z[:, -1] - 0.5 * z[:, -3] - 0.5 * z[:, -4] + 1e-12)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def random_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator | None) -> torch.Tensor:
    """A point at distance ``eps`` from ``x`` in a random direction (L-inf: uniform, scaled to max |t| = 1;
    L2: Gaussian, normalised), clipped to [0, 1]."""
    if norm == "linf":
        t = (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device)
        t = t / t.flatten(1).abs().amax(1).view(-1, *[1] * (x.dim() - 1))
    else:
        t = torch.randn(x.shape, generator=gen).to(x.device)
        t = t / (_flat_norm(t) + 1e-12)
    return (x + eps * t).clamp(0.0, 1.0)


def _project(x: torch.Tensor, z: torch.Tensor, norm: str, eps: float, pad: float = 0.0) -> torch.Tensor:
    if norm == "linf":
        return torch.min(torch.max(z, x - eps), x + eps).clamp(0.0, 1.0)
    d = z - x
    n = _flat_norm(d)
    return (x + d / (n + 1e-12) * torch.clamp(n + pad, max=eps)).clamp(0.0, 1.0)


def _step(x: torch.Tensor, x_adv: torch.Tensor, x_old: torch.Tensor, grad: torch.Tensor, step: torch.Tensor,
          norm: str, eps: float, momentum: float) -> torch.Tensor:
    if norm == "linf":
        z = _project(x, x_adv + step * grad.sign(), norm, eps)
    else:
        z = _project(x, x_adv + step * grad / (_flat_norm(grad) + 1e-12), norm, eps)
    z = x_adv + (z - x_adv) * momentum + (x_adv - x_old) * (1 - momentum)
    return _project(x, z, norm, eps, pad=1e-12)


def apgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, n_iter: int,
             loss: str = "ce", target: torch.Tensor | None = None, rho: float = 0.75, eot_iter: int = 1,
             gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run from a random start: per image the last misclassified iterate (the start where none),
    whether one was found, and the loss of every iterate (``[n_iter, len(x)]``)."""
    view = (-1,) + (1,) * (x.dim() - 1)
    steps_2, steps_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    if loss == "ce":
        def criterion(z: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(z, y, reduction="none")
    elif loss == "dlr":
        def criterion(z: torch.Tensor) -> torch.Tensor:
            return dlr_loss(z, y)
    else:
        def criterion(z: torch.Tensor) -> torch.Tensor:
            return dlr_targeted_loss(z, y, target)

    def loss_and_grad(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grad = torch.zeros_like(point)
        for _ in range(eot_iter):
            p = point.detach().requires_grad_(True)
            logits = model(p)
            values = criterion(logits)
            grad += torch.autograd.grad(values.sum(), p)[0]
        return values.detach(), logits.detach(), grad / eot_iter

    x_adv = random_start(x, norm, eps, gen)
    x_best_adv = x_adv.clone()
    values, logits, grad = loss_and_grad(x_adv)
    robust = logits.argmax(1) == y
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), values.clone()
    loss_steps = torch.zeros(n_iter, len(x), device=x.device)
    step = torch.full((len(x),) + view[1:], 2.0 * eps, device=x.device, dtype=x.dtype)
    x_old = x_adv.clone()
    k, since = steps_2, 0
    best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for i in range(n_iter):
        with torch.no_grad():
            x_new = _step(x, x_adv, x_old, grad, step, norm, eps, 0.75 if i > 0 else 1.0)
            x_old = x_adv
            x_adv = x_new
        values, logits, grad = loss_and_grad(x_adv)
        with torch.no_grad():
            fooled = logits.argmax(1) != y
            robust &= ~fooled
            x_best_adv = torch.where(fooled.view(view), x_adv, x_best_adv)
            loss_steps[i] = values
            better = values > loss_best
            x_best = torch.where(better.view(view), x_adv, x_best)
            grad_best = torch.where(better.view(view), grad, grad_best)
            loss_best = torch.where(better, values, loss_best)
            since += 1
            if since == k:
                rows = torch.arange(i, i - k, -1, device=x.device)
                rises = (loss_steps[rows] > loss_steps[(rows - 1) % n_iter]).sum(0)
                halve = (rises <= k * rho) | (~reduced_at_check & (best_at_check >= loss_best))
                reduced_at_check, best_at_check = halve, loss_best.clone()
                step = torch.where(halve.view(view), step / 2, step)
                x_adv = torch.where(halve.view(view), x_best, x_adv)
                grad = torch.where(halve.view(view), grad_best, grad)
                since = 0
                k = max(k - size_decr, steps_min)
    return x_best_adv, ~robust, loss_steps


def apgd_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, loss: str = "ce",
               n_iter: int = 100, n_restarts: int = 1, n_target_classes: int = 9, rho: float = 0.75,
               eot_iter: int = 1, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD with restarts (and, for ``dlr-targeted``, target classes) on the images still classified correctly:
    the adversarial examples (``x`` where none was found) and which images were fooled. Misclassified clean
    images are not attacked and count as not fooled here (the caller decides what they count as)."""
    with torch.no_grad():
        logits = model(x)
    check_loss_classes(loss, logits.shape[1], f"APGD with the {loss} loss")
    robust = logits.argmax(1) == y
    adv = x.clone()
    n_targets = min(n_target_classes, logits.shape[1] - 1)
    targets = list(range(2, n_targets + 2)) if loss == "dlr-targeted" else [None]
    order = logits.sort(1)[1]
    for t in targets:
        for _ in range(n_restarts):
            idx = robust.nonzero()[:, 0]
            if len(idx) == 0:
                return adv, ~robust & (logits.argmax(1) == y)
            target = order[idx, -t] if t is not None else None
            found, fooled, _ = apgd_run(model, x[idx], y[idx], norm=norm, eps=eps, n_iter=n_iter, loss=loss,
                                        target=target, rho=rho, eot_iter=eot_iter, gen=gen)
            adv[idx[fooled]] = found[fooled]
            robust[idx[fooled]] = False
    return adv, ~robust & (logits.argmax(1) == y)
