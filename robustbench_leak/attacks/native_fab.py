"""FAB (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020), L-inf and L2, untargeted or targeted (FAB-T: the t-th most likely classes, t = 2 .. 10), batched PyTorch.

Per step: linearise the decision boundary towards the chosen class (untargeted: the class whose linearised
boundary is nearest in the attacked norm; targeted: the target) into a hyperplane ``w . z = b``; project both
the current iterate and the clean image onto it inside the [0, 1] box (``project_linf`` / ``project_l2``: the
smallest perturbation in that norm that reaches the hyperplane while staying in the box); move to a convex
combination of the two extrapolated projections (weight of the clean image's ``a1 / (a1 + a2)`` capped at
``alpha_max``, extrapolation ``eta``); when the new point is adversarial, keep it if it is the smallest so far
and pull it back towards the clean image by ``beta``. Restarts after the first start from a random point at half
the best norm so far (capped at ``eps`` where given).

``fab_batch`` returns per image the smallest adversarial example it found over targets and restarts, the clean
image where none, so it serves both as AutoAttack's FAB-T (bounded: with ``eps``, images already fooled within
``eps`` are not attacked again) and as a minimum-norm attack (``eps=None``: every target runs on every image).
Random draws come from ``gen`` on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

NORMS = ("linf", "l2")


def project_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest L-inf ``d`` with ``w . (t + d) = b`` and ``t + d`` in [0, 1] (a bisection over the
    sorted coordinates); rows whose hyperplane the box does not reach get the box corner towards it."""
    w, b = w.clone(), b.clone()
    sign = 2 * ((w * t).sum(1) - b >= 0).to(t.dtype) - 1
    w.mul_(sign[:, None])
    b.mul_(sign)
    a = (w < 0).to(t.dtype)
    d = (a - t) * (w != 0).to(t.dtype)
    p = a - t * (2 * a - 1)
    order = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    rev = order.flip((1,))
    ws = w.gather(1, rev)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(-ws * d.gather(1, rev), dim=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * p.gather(1, order[:, :1])[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = torch.zeros(int(c2.sum()), device=t.device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    order_, sb_, s_, p_, b_ = order[c2], sb[c2], s[c2], p[c2], b[c2]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        m = mid.long()[:, None]
        cur = order_.gather(1, order_.shape[1] - 1 - m)
        above = b_ - (sb_.gather(1, m) - s_.gather(1, m) * p_.gather(1, cur))[:, 0] > 0
        lb = torch.where(above, mid, lb)
        ub = torch.where(above, ub, mid)
    lb = lb.long()
    if c_l.any():
        lam = torch.clamp_min((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), 0)[:, None]
        d[c_l] = (2 * a[c_l] - 1) * lam
    lam = torch.clamp_min((b[c2] - sb[c2, lb]) / (-s[c2, lb]), 0)[:, None]
    d[c2] = torch.min(lam, d[c2]) * a[c2] + torch.max(-lam, d[c2]) * (1 - a[c2])
    return d * (w != 0).to(t.dtype)


def project_l2(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest L2 ``d`` with ``w . (t + d) = b`` and ``t + d`` in [0, 1]: coordinates saturate at
    the box in the order of their breakpoints, found by bisection."""
    w = w.clone()
    c = (w * t).sum(1) - b
    sign = 2 * (c >= 0).to(t.dtype) - 1
    w.mul_(sign[:, None])
    c = c * sign
    r = torch.max(t / w, (t - 1) / w).clamp(min=-1e12, max=1e12)
    r.masked_fill_(w.abs() < 1e-8, 1e12)
    r[r == -1e12] *= -1
    rs, order = torch.sort(r, dim=1)
    rs2 = torch.nn.functional.pad(rs[:, 1:], (0, 1))
    rs.masked_fill_(rs == 1e12, 0)
    rs2.masked_fill_(rs2 == 1e12, 0)
    w2 = (w ** 2).gather(1, order)
    total = w2.sum(dim=1, keepdim=True)
    rest = total - torch.cumsum(w2, dim=1)
    d = -(r * w) * (w.abs() > 1e-8).to(t.dtype)
    s = torch.cat((-total * rs[:, :1], torch.cumsum((rs - rs2) * rest, dim=1) - total * rs[:, :1]), 1)
    c4 = s[:, 0] + c < 0
    c3 = (d * w).sum(1) + c > 0
    c2 = ~(c4 | c3)
    lb = torch.zeros(int(c2.sum()), device=t.device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    s_, c_ = s[c2], c[c2]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lb + ub) / 2)
        above = s_.gather(1, mid.long()[:, None])[:, 0] + c_ > 0
        lb = torch.where(above, mid, lb)
        ub = torch.where(above, ub, mid)
    lb = lb.long()
    if c4.any():
        d[c4] = -(c[c4] / total[c4, 0])[:, None] * w[c4]
    if c2.any():
        alpha = (s[c2, lb] + c[c2]) / rest[c2, lb] + rs[c2, lb]
        alpha[rest[c2, lb] == 0] = 0
        keep = (alpha[:, None] > r[c2]).to(t.dtype)
        d[c2] = d[c2] * keep - alpha[:, None] * w[c2] * (1 - keep)
    return d * (w.abs() > 1e-8).to(t.dtype)


def norm_of(d: torch.Tensor, norm: str) -> torch.Tensor:
    flat = d.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _boundary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
              norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The linearised boundary at ``x`` as (w, b) of ``w . z = b`` (flattened): towards ``target``, or untargeted
    towards the class whose linearised boundary is nearest in ``norm``."""
    rows = torch.arange(len(x), device=x.device)
    p = x.detach().requires_grad_(True)
    logits = model(p)
    if target is not None:
        f = logits[rows, target] - logits[rows, y]
        (g,) = torch.autograd.grad(f.sum(), p)
        f, g = f.detach(), g.flatten(1)
    else:
        k = logits.shape[1]
        grads = torch.stack([torch.autograd.grad(logits[:, j].sum(), p, retain_graph=j < k - 1)[0].flatten(1)
                             for j in range(k)], 1)
        z = logits.detach()
        df = z - z[rows, y][:, None]
        dg = grads - grads[rows, y][:, None]
        df[rows, y] = 1e10
        dual = dg.abs().sum(-1) if norm == "linf" else dg.norm(dim=-1)
        j = (df.abs() / (dual + 1e-12)).argmin(1)
        f, g = df[rows, j], dg[rows, j]
    return g, -f + (g * x.flatten(1)).sum(1)


def fab_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, *, norm: str,
            target: torch.Tensor | None, n_iter: int, alpha_max: float, eta: float,
            beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``start``: the smallest adversarial example found per image and its norm (inf: none)."""
    view = (-1,) + (1,) * (x.dim() - 1)
    n = len(x)
    project = project_linf if norm == "linf" else project_l2
    best = x.clone()
    best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
    x0 = x.flatten(1)
    x1 = start.clone()
    for _ in range(n_iter):
        w, b = _boundary(model, x1, y, target, norm)
        with torch.no_grad():
            d = project(torch.cat((x1.flatten(1), x0)), torch.cat((w, w)), torch.cat((b, b)))
            d1, d2 = d[:n].view_as(x), d[n:].view_as(x)
            a = norm_of(d, norm).clamp_min(1e-8)
            alpha = (a[:n] / (a[:n] + a[n:])).clamp(0.0, alpha_max).view(view)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x + d2 * eta) * alpha).clamp(0.0, 1.0)
            adv = model(x1).argmax(1) != y
            size = norm_of(x1 - x, norm)
            better = adv & (size < best_norm)
            best = torch.where(better.view(view), x1, best)
            best_norm = torch.where(better, size, best_norm)
            x1 = torch.where(adv.view(view), x + (x1 - x) * beta, x1)
    return best, best_norm


def _random_start(x: torch.Tensor, radius: torch.Tensor, norm: str, gen: torch.Generator | None) -> torch.Tensor:
    view = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        t = (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device)
    else:
        t = torch.randn(x.shape, generator=gen).to(x.device)
    t = t / norm_of(t, norm).clamp_min(1e-12).view(view)
    return (x + radius.view(view) * t * 0.5).clamp(0.0, 1.0)


def fab_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, targeted: bool = False,
              n_target_classes: int = 9, n_iter: int = 100, n_restarts: int = 1, eps: float | None = None,
              alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
              gen: torch.Generator | None = None) -> torch.Tensor:
    """Per image the smallest (in ``norm``) adversarial example FAB found, the clean image where none (and for
    images misclassified to begin with). With ``eps``, an image fooled within ``eps`` is not attacked again by
    later targets or restarts (AutoAttack's FAB-T); without, every target and restart runs on every image."""
    view = (-1,) + (1,) * (x.dim() - 1)
    with torch.no_grad():
        logits = model(x)
    correct = logits.argmax(1) == y
    out = x.clone()
    best_norm = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    order = logits.sort(1)[1]
    n_targets = min(n_target_classes, logits.shape[1] - 1)
    targets = list(range(2, n_targets + 2)) if targeted else [None]
    for t in targets:
        for restart in range(n_restarts):
            todo = correct & ~(best_norm <= eps) if eps is not None else correct
            idx = todo.nonzero()[:, 0]
            if len(idx) == 0:
                break
            xs = x[idx]
            if restart > 0:
                radius = best_norm[idx].clone()
                if eps is not None:
                    radius = torch.minimum(radius, torch.full_like(radius, eps))
                start = torch.where(torch.isfinite(radius).view(view),
                                    _random_start(xs, torch.nan_to_num(radius, posinf=0.0), norm, gen), xs)
            else:
                start = xs
            target = order[idx, -t] if t is not None else None
            found, size = fab_run(model, xs, y[idx], start, norm=norm, target=target, n_iter=n_iter,
                                  alpha_max=alpha_max, eta=eta, beta=beta)
            better = size < best_norm[idx]
            out[idx[better]] = found[better]
            best_norm[idx[better]] = size[better]
    return out
