"""Metrics computed from per-sample results, so any of them can be recomputed from the store."""

from __future__ import annotations

import numpy as np

# what attacks/optimality.py stores per member of the minimum-norm ensemble
STRENGTH_MEMBERS = ("deepfool", "ddn", "fmn", "superdeepfool")
STRENGTH_DOCS = {
    **{f"optimality_{m}": (f"AttackBench's optimality of the member {m}: 1 - (area - best) / (clean accuracy x max_dist "
                           "- best), the areas under the robust-accuracy-vs-L2 step curves of the member and of the "
                           "per-image best over the members, up to the largest best norm (1: it found every minimum)")
       for m in STRENGTH_MEMBERS},
    **{f"minimum_share_{m}": (f"share of the fooled clean-correct images on which the member {m} found the smallest "
                              "perturbation (ties go to the first member)") for m in STRENGTH_MEMBERS},
    **{f"rho_median_{m}": (f"median rho of the member {m} alone over clean-correct images (an image it did not fool "
                           "counts as infinite)") for m in STRENGTH_MEMBERS},
    **{f"rho_mean_{m}": f"mean rho of the member {m} alone over the clean-correct images it fooled"
       for m in STRENGTH_MEMBERS},
    **{f"passes_{m}": f"forward plus backward passes per image of the member {m}" for m in STRENGTH_MEMBERS},
}

# --- issue 33 part 4 (L-inf minimum norm): metric docs to move next to their attacks at merge ------------------
# the members of the minnorm-linf ensemble, in pick order (attacks/native_minnorm_linf.py maps each to its engine)
LINF_STRENGTH_MEMBERS = ("deepfool_linf", "fmn_linf")
LINF_DOCS = {
    "linf_median": "median L-inf norm of the perturbation over clean-correct images (an L-inf minimum-norm attack)",
    "converged_fmn_linf": ("FMN-Linf's convergence signal in the minnorm-linf ensemble: median relative fall of the "
                           "best L-inf norm over the last 10% of its steps (above 1% flags the cell)"),
    **{f"optimality_{m}": (f"AttackBench's optimality of the member {m} against the per-image best L-inf norm of the "
                           "minnorm-linf members (1: it found every minimum)") for m in LINF_STRENGTH_MEMBERS},
    **{f"minimum_share_{m}": (f"share of the fooled clean-correct images on which the member {m} found the smallest "
                              "L-inf perturbation (ties go to the first member)") for m in LINF_STRENGTH_MEMBERS},
    **{f"rho_median_{m}": (f"median of ||x_adv - x||_inf / ||x||_inf of the member {m} alone over clean-correct "
                           "images (an image it did not fool counts as infinite)") for m in LINF_STRENGTH_MEMBERS},
    **{f"rho_mean_{m}": (f"mean ||x_adv - x||_inf / ||x||_inf of the member {m} alone over the clean-correct images "
                         "it fooled") for m in LINF_STRENGTH_MEMBERS},
    **{f"passes_{m}": f"forward plus backward passes per image of the member {m}" for m in LINF_STRENGTH_MEMBERS},
    **{f"overestimate_{m}": (f"median over clean-correct images {m} fooled of its L-inf norm / the minnorm-linf "
                             "ensemble's (1 = it always found the smallest)") for m in LINF_STRENGTH_MEMBERS},
    **{f"success_{m}": f"success rate of the minnorm-linf member {m} alone (clean-correct images)"
       for m in LINF_STRENGTH_MEMBERS},
}
# --- end of the issue 33 part 4 block ------------------------------------------------------------------------------

# column legend: metric name -> definition (shown under every leaderboard)
METRIC_DOCS = {
    "accuracy": "top-1 accuracy on the evaluated test images",
    "clean_accuracy": "top-1 accuracy on the attacked images before the attack",
    "robust_accuracy": ("accuracy after the attack over ALL attacked images (unconditional, as RobustBench); DeepFool attacks "
                        "the model's own prediction, so it can move a misclassified image into its true class"),
    "robust_accuracy_conditional": ("accuracy after the attack over the clean-correct images only "
                                    "(conditional, as ART's adversarial_accuracy); equals 1 - success_rate"),
    "success_rate": "fraction of clean-correct images whose prediction the attack changed",
    "worst_of_grid_accuracy": "fraction of images classified correctly under EVERY transform of the grid (per-example worst case)",
    "fit_fooling_rate": "fooling rate of the chosen global transform on the fitting split it was chosen on",
    "sanity_pgd_success": "success of an unbounded L-inf PGD (eps=1, 20 steps, no random start) on the clean-correct images; below 99% flags gradient masking",
    "rho_mean": "mean of ||x_adv - x||_2 / ||x||_2 over clean-correct images (DeepFool's rho_adv; higher = more robust)",
    "rho_median": "median of the same ratio over clean-correct images",
    "l2_median": "median L2 norm of the perturbation over clean-correct images",
    "fooling_rate": "fraction of images whose prediction the chosen transform changed (ART's fooling rate)",
    "shift_rows": "vertical shift in pixels of the chosen global transform",
    "shift_cols": "horizontal shift in pixels of the chosen global transform",
    "rotation_deg": "rotation in degrees of the chosen global transform",
    "n": "number of images evaluated",
    "converged_ddn": ("DDN's convergence signal: median relative fall of the best adversarial norm over the last 10% of "
                      "its steps (above 1% flags the cell)"),
    "converged_fmn": ("FMN's convergence signal: median relative fall of the best adversarial norm over the last 10% of "
                      "its steps (above 1% flags the cell)"),
    **{f"overestimate_{m}": (f"median over clean-correct images {m} fooled of its L2 norm / the minnorm ensemble's "
                             "(1 = it always found the smallest)") for m in STRENGTH_MEMBERS},
    **{f"success_{m}": f"success rate of the ensemble member {m} alone (clean-correct images)"
       for m in STRENGTH_MEMBERS},
    "passes": ("forward plus backward passes through the model per attacked image (the ensemble: its members' sum; "
               "the re-check of the examples not counted)"),
    **STRENGTH_DOCS,
    **LINF_DOCS,  # issue 33 part 4
    "masking_failed": ("gradient-masking checks of the minnorm cell that failed (attacks/masking.py: unbounded success, "
                       "more steps, black-box search, PGD to zero; 0 = all clear)"),
}


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(pred == y)) if len(y) else float("nan")


def flat_l2(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.reshape(len(a), -1).astype(np.float64), axis=1)


def flat_linf(a: np.ndarray) -> np.ndarray:
    return np.abs(a.reshape(len(a), -1).astype(np.float64)).max(axis=1, initial=0.0)


def linf_median(linf: np.ndarray, correct: np.ndarray) -> float:
    """Median L-inf norm of the perturbation over clean-correct images (NaN when there is none)."""
    return float(np.median(np.asarray(linf, np.float64)[correct])) if np.any(correct) else float("nan")


def prediction_metrics(y: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray) -> dict[str, float]:
    correct = clean_pred == y
    return {
        "n": float(len(y)),
        "clean_accuracy": accuracy(clean_pred, y),
        "robust_accuracy": accuracy(adv_pred, y),
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
