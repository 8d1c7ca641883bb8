"""A latent 0/1-outcome model of a store's accuracies, for simulated sequential runs.

Model m, training seed s and test image i: the image is classified correctly when

    mu_m + a_i + b_mi + c_s + c_ms + d_si + e_msi > 0

with independent normal effects of variances va (image), vb (model x image), vs (seed), vms (model x seed),
vsi (seed x image) and ve (the rest): a probit model. Seed s of every model shares c_s and d_si (on the
published store, models trained with one seed agree more on an image than at two seeds, and their per-seed
accuracies correlate). A model's expected accuracy is Phi(mu_m / sqrt(V)), V the sum of the six. Every
moment the sequential design needs is closed-form through Plackett's identity
Phi2(h, k; r) - Phi(h) Phi(k) = int_0^r phi2(h, k; u) du (no Monte Carlo):

- on the latent scale one image correlates (va + vb) / V across two seeds of a model, va / V across two
  models and seeds, (va + vsi) / V across two models at one seed; two images (vs + vms) / V within one
  model and seed, vs / V across two models at one seed;
- a comparison A - B over k seeds on N shared images has Var = s^2 / k + V_sh with V_sh = Var_i(P_A - P_B)
  / N (P_m(i) the image's accuracy over seeds) and s^2 = E[Var(acc_As - acc_Bs | the test set)].

:meth:`LatentModel.draw` gives per-seed accuracies with exactly these means, variances and covariances (see
its docstring for what is drawn exactly and what is approximated). :func:`estimate` fits the components to
a store's per-image outcomes by these moments (tetrachoric correlations, the between-seed variances and
covariances).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import integrate
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

def cov_above(h: float, k: float, r: float) -> float:
    """Phi2(h, k; r) - Phi(h) Phi(k): the covariance of 1[X > -h] and 1[Y > -k] for standard normals
    correlated r (Plackett's identity, integrated numerically: exact where r is tiny)."""
    if r == 0:
        return 0.0
    f = lambda u: np.exp(-(h * h - 2 * u * h * k + k * k) / (2 * (1 - u * u))) / (2 * np.pi * np.sqrt(1 - u * u))
    return float(integrate.quad(f, 0.0, r, epsabs=1e-15, epsrel=1e-12, limit=200)[0])


def tetrachoric(pa: float, pb: float, p11: float) -> float:
    """The latent correlation of two probit outcomes with rates ``pa``, ``pb`` and joint rate ``p11``."""
    h, k = float(ndtri(pa)), float(ndtri(pb))
    target = p11 - pa * pb
    return float(brentq(lambda r: cov_above(h, k, r) - target, -0.999, 0.9999, xtol=1e-12))


@dataclass(frozen=True)
class LatentModel:
    accuracy: dict[str, float]  # model -> expected accuracy
    va: float  # image
    vb: float  # model x image
    vs: float  # seed (shared by the models)
    vms: float  # model x seed
    vsi: float  # seed x image (shared by the models)
    ve: float  # model x seed x image
    n_images: int = 10_000  # the test set's size
    sim_images: int = 250  # images drawn per simulated test set (their deviation rescaled to n_images)

    @property
    def total(self) -> float:
        return self.va + self.vb + self.vs + self.vms + self.vsi + self.ve

    def mean(self, model: str) -> float:
        return self.accuracy[model]

    def _x(self, model: str) -> float:
        return float(ndtri(self.accuracy[model]))

    def scaled(self, factor: float) -> "LatentModel":
        """Every variance but the image effect's (common to all models) times ``factor``; the accuracies
        kept (mu re-solved)."""
        return replace(self, vb=self.vb * factor, vs=self.vs * factor, vms=self.vms * factor,
                       vsi=self.vsi * factor, ve=self.ve * factor)

    def with_means(self, accuracy: dict[str, float]) -> "LatentModel":
        return replace(self, accuracy=dict(accuracy))

    def _c(self, a: str, b: str, r: float) -> float:
        return cov_above(self._x(a), self._x(b), r / self.total)

    def _seed_var(self, m: str) -> float:
        """E[Var(acc_ms | the test set)]."""
        p, n = self.accuracy[m], self.n_images
        return p * (1 - p) / n + (1 - 1 / n) * self._c(m, m, self.vs + self.vms) - self._c(m, m, self.va + self.vb) / n

    def _seed_cov(self, a: str, b: str) -> float:
        """E[Cov(acc_as, acc_bs | the test set)] of two models at one seed."""
        n = self.n_images
        return (self._c(a, b, self.va + self.vsi) / n + (1 - 1 / n) * self._c(a, b, self.vs)
                - self._c(a, b, self.va) / n)

    def moments(self, a: str, b: str) -> tuple[float, float]:
        """(s^2, V_sh) of the comparison ``a`` - ``b`` (seed s of a against seed s of b): Var(effect over k
        seeds) = s^2 / k + V_sh."""
        n = self.n_images
        v_sh = (self._c(a, a, self.va + self.vb) + self._c(b, b, self.va + self.vb) - 2 * self._c(a, b, self.va)) / n
        return self._seed_var(a) + self._seed_var(b) - 2 * self._seed_cov(a, b), v_sh

    def draw(self, rng: np.random.Generator, models: list[str], families: int, seeds: int) -> np.ndarray:
        """Per-seed accuracies, shape (families, models, seeds), each family on its own test set.

        Exact: the latent effects of every model, seed and drawn image, and so the means, variances and
        covariances (across models, seeds and test sets) of the accuracies on a test set of ``n_images``.
        Approximate: the test set is ``sim_images`` drawn images; a model's accuracy at a seed is its
        expectation given the seed effects plus the deviation of these images' mean from it, scaled by
        sqrt(sim_images / n_images) (the full set's covariance; the skewness of a mean over sim_images
        images, larger than the full set's), the images' Bernoulli outcomes given all effects drawn as one
        normal with their exact variance."""
        k = self.sim_images
        if families > 1 and families * len(models) * seeds * k > 4_000_000:  # bound the memory
            half = families // 2
            return np.concatenate([self.draw(rng, models, half, seeds), self.draw(rng, models, families - half, seeds)])
        shape = (families, len(models))
        mu = np.array([self._x(m) * np.sqrt(self.total) for m in models])[None, :, None]
        seed = (rng.normal(0, np.sqrt(self.vs), (families, 1, seeds))
                + rng.normal(0, np.sqrt(self.vms), shape + (seeds,)))
        image = rng.normal(0, np.sqrt(self.va), (families, 1, k)) + rng.normal(0, np.sqrt(self.vb), shape + (k,))
        seed_image = rng.normal(0, np.sqrt(self.vsi), (families, 1, seeds, k))
        q = ndtr(((mu + image)[:, :, None, :] + seed[..., None] + seed_image) / np.sqrt(self.ve))
        expected = ndtr((mu + seed) / np.sqrt(self.va + self.vb + self.vsi + self.ve))
        mean_q = q.mean(-1)
        bernoulli = rng.standard_normal(mean_q.shape) * np.sqrt((q * (1 - q)).sum(-1)) / k
        return expected + np.sqrt(k / self.n_images) * (mean_q + bernoulli - expected)


def estimate(correct: dict[str, np.ndarray]) -> LatentModel:
    """Fit the components (scaled to V = 1) to per-image outcomes, ``correct[model]`` a (seeds, images) 0/1
    array on one shared test set, seed s of every model trained with one seed: mu from each model's accuracy;
    va + vb, va and va + vsi from the tetrachoric correlations of one image across two seeds of a model, two
    models at different seeds and two models at one seed (each averaged over the pairs); vs + vms and vs
    from the between-seed variances and cross-model covariances of the accuracies, less their image parts
    (pooled); ve the rest. A component estimated below 0 is set to 0."""
    models = sorted(correct)
    y = {m: np.asarray(correct[m], dtype=np.float64) for m in models}
    k, n = y[models[0]].shape
    acc = {m: float(y[m].mean()) for m in models}
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    rate = lambda u, v, same: float(np.mean([np.mean(u[s] * v[t]) for s in range(k) for t in range(k)
                                             if (s == t) == same]))
    vab = float(np.mean([tetrachoric(acc[m], acc[m], rate(y[m], y[m], False)) for m in models]))
    va = float(np.mean([tetrachoric(acc[a], acc[b], rate(y[a], y[b], False)) for a, b in pairs]))
    vsi = max(0.0, float(np.mean([tetrachoric(acc[a], acc[b], rate(y[a], y[b], True)) for a, b in pairs])) - va)
    per_seed = {m: y[m].mean(1) for m in models}
    var_seed = float(np.mean([per_seed[m].var(ddof=1) for m in models]))
    cov_seed = float(np.mean([np.cov(per_seed[a], per_seed[b])[0, 1] for a, b in pairs]))
    trial = lambda vs, vms: LatentModel(acc, va, max(vab - va, 0.0), vs, vms, vsi, 1.0, n)
    vs = _solve(lambda v: float(np.mean([trial(v, 0.0)._seed_cov(a, b) for a, b in pairs])) - cov_seed)
    vms = _solve(lambda v: float(np.mean([trial(vs, v)._seed_var(m) for m in models])) - var_seed)
    rest = 1.0 - vab - vsi - vs - vms
    return LatentModel(acc, va, max(vab - va, 0.0), vs, vms, vsi, rest, n)


def _solve(excess: Callable[[float], float]) -> float:
    """The root in [0, 0.5] of an increasing ``excess``; 0 where it is already positive at 0."""
    return 0.0 if excess(0.0) >= 0 else float(brentq(excess, 0.0, 0.5, xtol=1e-14))
