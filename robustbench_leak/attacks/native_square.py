"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf and L2, untargeted, score-based (no gradients),
batched PyTorch.

From a start on the eps-boundary (L-inf: vertical stripes of +-eps; L2: a grid of square bumps of random
signs), each query changes one random square window (shared by the batch, as the reference draws it) of side
``sqrt(p * pixels)``, ``p`` falling from ``p_init`` on the reference's schedule (rescaled to ``n_queries``), and
keeps the change where the margin loss ``z_y - max_{j != y} z_j`` fell (or went negative). L-inf: the window is
set to +-eps per channel; L2: the window's mass is redrawn and a second window's mass moved into it so the
perturbation stays on the eps-sphere. Images stop being queried once fooled. Random draws come from ``gen``
on the CPU. One forward pass per query and image still attacked.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn

SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """The reference's schedule of the window's share of the image, rescaled to 10,000 queries."""
    it = int(it / n_queries * 10000)
    for bound, div in SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    rows = torch.arange(len(x), device=x.device)
    own = logits[rows, y].clone()
    logits[rows, y] = -math.inf
    return own - logits.amax(1)


def _signs(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.sign(2 * torch.rand(shape, generator=gen) - 1).to(device)


def _randint(high: int, gen: torch.Generator | None) -> int:
    return int(high * float(torch.rand(1, generator=gen)))


def _rectangles(h: int, w: int) -> torch.Tensor:
    delta = torch.zeros(h, w)
    xc, yc = h // 2 + 1, w // 2 + 1
    r0, c0 = xc - 1, yc - 1
    for k in range(max(xc, yc)):
        delta[max(r0, 0):min(r0 + 2 * k + 1, h), max(0, c0):min(c0 + 2 * k + 1, w)] += 1.0 / (k + 1) ** 2
        r0, c0 = r0 - 1, c0 - 1
    return delta / delta.norm()


@lru_cache(maxsize=64)
def _bump(s: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The window of side ``s`` and its transpose, built once per side (every L2 query draws one)."""
    delta = torch.zeros(s, s)
    delta[:s // 2] = _rectangles(s // 2, s)
    delta[s // 2:] = -_rectangles(s - s // 2, s)
    delta = delta / delta.norm()
    delta = delta.to(device)
    return delta, delta.t()  # a view, as before caching: reductions over it keep their order


def bump(s: int, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The reference's L2 window: two nested-rectangle halves of opposite sign, unit norm, randomly transposed."""
    delta, transposed = _bump(s, torch.device(device))
    return transposed if float(torch.rand(1, generator=gen)) > 0.5 else delta


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def _l2_start(x: torch.Tensor, eps: float, gen: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    delta = torch.zeros_like(x)
    s = max(h // 5, 1)
    top = (h - s * 5) // 2
    for i in range(h // s):
        for j in range(w // s):
            r, col = top + i * s, top + j * s
            window = delta[:, :, r:r + s, col:col + s]
            window += bump(s, gen, x.device)[:window.shape[2], :window.shape[3]] * _signs((n, c, 1, 1), gen, x.device)
    return (x + delta / (_l2(delta) + 1e-12) * eps).clamp(0.0, 1.0)


def square_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                 n_queries: int = 5000, p_init: float = 0.8, n_restarts: int = 1,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Square Attack on the images still classified correctly: the examples (``x`` where none was found) and
    which images were fooled (misclassified clean images are not attacked and count as not fooled here)."""
    with torch.no_grad():
        robust = model(x).argmax(1) == y
        correct = robust.clone()
        adv = x.clone()
        for _ in range(n_restarts):
            idx = robust.nonzero()[:, 0]
            if len(idx) == 0:
                break
            found, fooled = _square_run(model, x[idx], y[idx], norm, eps, n_queries, p_init, gen)
            adv[idx[fooled]] = found[fooled]
            robust[idx[fooled]] = False
    return adv, correct & ~robust


def _square_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, n_queries: int,
                p_init: float, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w = x.shape
    features = c * h * w
    view = (-1, 1, 1, 1)
    if norm == "linf":
        best = (x + eps * _signs((n, c, 1, w), gen, x.device)).clamp(0.0, 1.0)
    else:
        best = _l2_start(x, eps, gen)
    m_best = margin(model, best, y)
    # the images still attacked, gathered once and again only when some are fooled (not every query)
    active = (m_best > 0).nonzero()[:, 0]
    xa, ba, ya, ma = x[active], best[active], y[active], m_best[active]
    if norm == "linf":
        lo, hi = (xa - eps).clamp(0.0, 1.0), (xa + eps).clamp(0.0, 1.0)
    for it in range(n_queries):
        if len(active) == 0:
            break
        p = p_selection(p_init, it, n_queries)
        if norm == "linf":
            s = max(int(round(math.sqrt(p * features / c))), 1)
            vh, vw = _randint(h - s, gen), _randint(w - s, gen)
            new = ba.clone()
            rows, cols = slice(vh, vh + s), slice(vw, vw + s)
            # best stays within the box, so only the changed window needs clamping
            window = new[:, :, rows, cols] + 2.0 * eps * _signs((c, 1, 1), gen, x.device)
            new[:, :, rows, cols] = torch.min(torch.max(window, lo[:, :, rows, cols]), hi[:, :, rows, cols])
        else:
            new = _l2_query(xa, ba, eps, p, gen)
        m_new = margin(model, new, ya)
        better = m_new < ma
        ma = torch.where(better, m_new, ma)
        ba = torch.where(better.view(view), new, ba)
        fooled = ma <= 0
        if bool(fooled.any()):
            best[active], m_best[active] = ba, ma
            keep = ~fooled
            active, xa, ba, ya, ma = active[keep], xa[keep], ba[keep], ya[keep], ma[keep]
            if norm == "linf":
                lo, hi = lo[keep], hi[keep]
    best[active], m_best[active] = ba, ma
    return best, m_best <= 0


def _l2_query(x: torch.Tensor, best: torch.Tensor, eps: float, p: float, gen: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    s = max(int(round(math.sqrt(p * c * h * w / c))), 3)
    s = s + 1 if s % 2 == 0 else s
    delta = best - x
    vh, vw = _randint(h - s, gen), _randint(w - s, gen)
    vh2, vw2 = _randint(h - s, gen), _randint(w - s, gen)
    mask = torch.zeros_like(x)
    mask[:, :, vh:vh + s, vw:vw + s] = 1.0
    mask[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.0
    window = delta[:, :, vh:vh + s, vw:vw + s]
    window_norm = window.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    image_norm = _l2(delta)
    masked_norm = _l2(delta * mask)
    new = bump(s, gen, x.device).view(1, 1, s, s) * _signs((n, c, 1, 1), gen, x.device)
    new = new + window / (1e-12 + window_norm)
    room = (torch.clamp(eps ** 2 - image_norm ** 2, min=0.0) / c + masked_norm ** 2).sqrt()
    new = new / (1e-12 + new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()) * room
    delta = delta.clone()
    delta[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0.0
    delta[:, :, vh:vh + s, vw:vw + s] = new
    return (x + delta / (_l2(delta) + 1e-12) * eps).clamp(0.0, 1.0)
