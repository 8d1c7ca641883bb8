"""Metrics computed from per-sample results, so any of them can be recomputed from the store, and their
declarations: a ``Metric`` is declared once, next to the code that computes it (the shared ones here, an
attack's own in its ``metrics``), and legends, formats and ranking read the declaration."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping, MutableSet

import numpy as np

class Metric(str):
    """A metric's name (it is the string) with what every output needs to show and rank it: a one-line
    ``description`` (the leaderboard's legend), its ``unit``, whether it is a fraction shown as a percentage
    (``percent``) and which way is better (``higher_is_better``: the ranking's direction)."""

    description: str
    unit: str
    percent: bool
    higher_is_better: bool

    def __new__(cls, name: str, description: str, unit: str = "", percent: bool = False,
                higher_is_better: bool = True) -> "Metric":
        metric = super().__new__(cls, name)
        metric.description, metric.unit, metric.percent = description, unit, percent
        metric.higher_is_better = higher_is_better
        return metric

    @property
    def name(self) -> str:
        return str(self)

    def __reduce__(self) -> tuple:  # pickles (Ray, multiprocessing) with its fields
        return Metric, (str(self), self.description, self.unit, self.percent, self.higher_is_better)


_DECLARED: dict[str, Metric] = {}


def declare(*metrics: Metric) -> tuple[Metric, ...]:
    """Add metrics to the catalogue every output reads (``register_attack`` declares an attack's own).
    A name declared again must mean the same."""
    for m in metrics:
        known = _DECLARED.get(m)
        if known is not None and (known.description, known.unit, known.percent, known.higher_is_better) != (
                m.description, m.unit, m.percent, m.higher_is_better):
            raise ValueError(f"metric {m.name!r} declared twice with different meanings: {known.description!r} "
                             f"vs {m.description!r}")
        _DECLARED[m] = m
    return metrics


def metric_spec(name: str) -> Metric | None:
    """The declaration of metric ``name`` (None when nothing declared it)."""
    spec = _DECLARED.get(name)
    if spec is None and name in _EXTRA_DOCS:
        spec = Metric(name, _EXTRA_DOCS[name], percent=name in _EXTRA_PERCENT)
    return spec


def declared_metrics() -> dict[str, Metric]:
    return dict(_DECLARED)


_EXTRA_DOCS: dict[str, str] = {}  # entries written into METRIC_DOCS directly (the way before declarations)
_EXTRA_PERCENT: set[str] = set()


class _MetricDocs(MutableMapping):
    """``METRIC_DOCS``: metric name -> description, a view of the declarations. Entries set on it directly
    (code written before declarations existed) are kept beside them."""

    def __getitem__(self, name: str) -> str:
        if name in _DECLARED:
            return _DECLARED[name].description
        return _EXTRA_DOCS[name]

    def __setitem__(self, name: str, text: str) -> None:
        _EXTRA_DOCS[name] = text

    def __delitem__(self, name: str) -> None:
        del _EXTRA_DOCS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*_DECLARED, *_EXTRA_DOCS]))

    def __len__(self) -> int:
        return len(set(_DECLARED) | set(_EXTRA_DOCS))


class _PercentMetrics(MutableSet):
    """``PERCENT_METRICS``: the names of metrics shown as percentages, a view of the declarations; names added
    to it directly are kept beside them."""

    def __contains__(self, name: object) -> bool:
        spec = _DECLARED.get(name) if isinstance(name, str) else None
        return spec.percent if spec is not None else name in _EXTRA_PERCENT

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({m for m, spec in _DECLARED.items() if spec.percent} | _EXTRA_PERCENT))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def add(self, name: str) -> None:
        _EXTRA_PERCENT.add(name)

    def discard(self, name: str) -> None:
        _EXTRA_PERCENT.discard(name)

    def update(self, names: Iterable[str]) -> None:
        _EXTRA_PERCENT.update(names)


METRIC_DOCS: MutableMapping[str, str] = _MetricDocs()
PERCENT_METRICS: MutableSet[str] = _PercentMetrics()

# metrics computed here (prediction_metrics, perturbation_metrics) or reported by many attacks
ACCURACY = Metric("accuracy", "top-1 accuracy on the evaluated test images", percent=True)
N = Metric("n", "number of images evaluated", unit="images")
CLEAN_ACCURACY = Metric("clean_accuracy", "top-1 accuracy on the attacked images before the attack", percent=True)
ROBUST_ACCURACY = Metric("robust_accuracy", (
    "per-example attacks: fraction of ALL attacked images classified correctly both before and after the attack (a "
    "misclassified clean image counts as not robust, x_adv = x, as RobustBench and AutoAttack); global transforms "
    "applied to every image: accuracy under the transform"), percent=True)
ROBUST_ACCURACY_CONDITIONAL = Metric("robust_accuracy_conditional", (
    "accuracy after the attack over the clean-correct images only (conditional, as ART's adversarial_accuracy); "
    "equals 1 - success_rate"), percent=True)
SUCCESS_RATE = Metric("success_rate", "fraction of clean-correct images whose prediction the attack changed",
                      percent=True, higher_is_better=False)
RHO_MEAN = Metric("rho_mean", ("mean of ||x_adv - x||_2 / ||x||_2 over clean-correct images (DeepFool's rho_adv; "
                               "higher = more robust)"), unit="ratio")
RHO_MEDIAN = Metric("rho_median", "median of the same ratio over clean-correct images", unit="ratio")
L2_MEDIAN = Metric("l2_median", "median L2 norm of the perturbation over clean-correct images", unit="L2")
LINF_MEDIAN = Metric("linf_median", "median L-inf norm of the perturbation over clean-correct images", unit="L-inf")
PASSES = Metric("passes", ("forward plus backward passes through the model per attacked image (the ensemble: its "
                           "members' sum; the re-check of the examples not counted)"), unit="passes/image",
                higher_is_better=False)
SANITY_PGD_SUCCESS = Metric("sanity_pgd_success", (
    "success of an unbounded L-inf PGD (eps=1, 20 steps, no random start) on the clean-correct images; below 99% "
    "flags gradient masking"), percent=True)
declare(ACCURACY, N, CLEAN_ACCURACY, ROBUST_ACCURACY, ROBUST_ACCURACY_CONDITIONAL, SUCCESS_RATE, RHO_MEAN, RHO_MEDIAN,
        L2_MEDIAN, LINF_MEDIAN, PASSES, SANITY_PGD_SUCCESS)
# the minimum-norm attacks' first columns
MIN_NORM_METRICS = (SUCCESS_RATE, RHO_MEAN, RHO_MEDIAN, ROBUST_ACCURACY)


# which definition of robust_accuracy a cell uses (Attack.per_example), shown in the legend of its column
ROBUST_ACCURACY_DOCS = {
    True: ("fraction of ALL attacked images classified correctly both before and after the attack: a per-example "
           "attack, so a misclassified clean image counts as not robust (x_adv = x, as RobustBench and AutoAttack)"),
    False: ("accuracy on ALL images under the transform: one global transform (or corruption) applied to every "
            "image, so a misclassified clean image that the transform moves into its true class counts as correct"),
}


def robust_correct(y: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, per_example: bool) -> np.ndarray:
    """Per image: robust under the attack. A per-example attack leaves a misclassified clean image as it is
    (x_adv = x), so only clean-correct images can count; a global transform counts its own accuracy."""
    robust = adv_pred == y
    return robust & (clean_pred == y) if per_example else robust


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(pred == y)) if len(y) else float("nan")


def flat_l2(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.reshape(len(a), -1).astype(np.float64), axis=1)


def flat_linf(a: np.ndarray) -> np.ndarray:
    return np.abs(a.reshape(len(a), -1).astype(np.float64)).max(axis=1, initial=0.0)


def linf_median(linf: np.ndarray, correct: np.ndarray) -> float:
    """Median L-inf norm of the perturbation over clean-correct images (NaN when there is none)."""
    return float(np.median(np.asarray(linf, np.float64)[correct])) if np.any(correct) else float("nan")


def prediction_metrics(y: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray,
                       per_example: bool = True) -> dict[str, float]:
    correct = clean_pred == y
    robust = robust_correct(y, clean_pred, adv_pred, per_example)
    return {
        "n": float(len(y)),
        "clean_accuracy": accuracy(clean_pred, y),
        "robust_accuracy": float(np.mean(robust)) if len(y) else float("nan"),
        "success_rate": float(np.mean(adv_pred[correct] != y[correct])) if correct.any() else float("nan"),
        "robust_accuracy_conditional": (float(np.mean(adv_pred[correct] == y[correct])) if correct.any()
                                        else float("nan")),
    }


def perturbation_metrics(x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, clean_pred: np.ndarray,
                         adv_pred: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of a minimum-norm attack (DeepFool) and the per-sample arrays behind them."""
    l2 = flat_l2(x_adv - x)
    rho = l2 / np.maximum(flat_l2(x), 1e-12)
    correct = clean_pred == y
    metrics = prediction_metrics(y, clean_pred, adv_pred)
    if correct.any():
        metrics.update(rho_mean=float(rho[correct].mean()), rho_median=float(np.median(rho[correct])),
                       l2_median=float(np.median(l2[correct])))
    else:
        metrics.update(rho_mean=float("nan"), rho_median=float("nan"), l2_median=float("nan"))
    samples = {"label": y, "clean_pred": clean_pred, "adv_pred": adv_pred, "l2": l2, "rho": rho}
    return metrics, samples


def robustness_curve(label: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, l2: np.ndarray,
                     budgets: np.ndarray) -> np.ndarray:
    """Accuracy under a norm budget, from a minimum-norm attack's per-sample results (``l2``: the per-image
    norms, L2 or L-inf; the budgets are in the same norm).

    An image counts as correct at budget eps when it is clean-correct and the attack needed more than
    eps to flip it (or never flipped it). Over all images, so the curve starts at clean accuracy.
    """
    correct = clean_pred == label
    flipped = adv_pred != clean_pred
    needed = np.where(flipped, l2, np.inf)
    return np.array([float(np.mean(correct & (needed > eps))) for eps in np.asarray(budgets, dtype=float)])
