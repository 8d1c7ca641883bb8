"""ART adapters: DeepFool against the analytic answer on a linear model, the spatial grid on both axes."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustbench_leak.attacks import attack_class, build_attack
from robustbench_leak.metrics import perturbation_metrics

CPU = torch.device("cpu")


class BarDetector(nn.Module):
    """Class 0 while a bright bar sits at rows (or columns) 13-15, class 1 once it has moved away.

    Only a shift across the bar moves it out of its band, so each detector is fooled by translation
    along exactly one image axis.
    """

    def __init__(self, axis: str) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        profile = x.mean(dim=(1, 3)) if self.axis == "rows" else x.mean(dim=(1, 2))
        inside = profile[:, 13:16].sum(1)
        outside = profile.sum(1) - inside
        score = inside - outside
        return torch.stack([score, -score], dim=1)


def bar_images(axis: str, n: int = 4) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    if axis == "rows":
        x[:, :, 13:16, :] = 1.0
    else:
        x[:, :, :, 13:16] = 1.0
    return x


@pytest.mark.parametrize("axis", ["rows", "cols"])
def test_fixed_spatial_grid_translates_along_both_axes(axis):
    model = BarDetector(axis).eval()
    x, y = bar_images(axis), torch.zeros(4, dtype=torch.long)
    assert (model(x).argmax(1) == 0).all()
    attack = build_attack("spatial", "art", max_translation=10.0, num_translations=3, max_rotation=0.0,
                          num_rotations=1, fix_channels_first=True)
    result = attack.run(model, x, y, CPU, progress=False)
    m = result.metrics
    assert m["clean_accuracy"] == 1.0
    assert m["robust_accuracy"] == 0.0 and m["fooling_rate"] == 1.0
    # 10% of 28 px = 3 px (rounded), along the axis that fools this detector
    moved, still = ("shift_rows", "shift_cols") if axis == "rows" else ("shift_cols", "shift_rows")
    assert abs(m[moved]) == 3.0
    assert m["rotation_deg"] == 0.0
    assert (result.samples["adv_pred"] == 1).all()


def test_art_as_is_never_shifts_vertically():
    """The defect: on NCHW input ART sizes the row shift from C=1, so round(1 * 10 / 100) = 0 px."""
    model = BarDetector("rows").eval()
    x, y = bar_images("rows"), torch.zeros(4, dtype=torch.long)
    attack = build_attack("spatial", "art", max_translation=10.0, num_translations=3, max_rotation=0.0,
                          num_rotations=1, fix_channels_first=False)
    m = attack.run(model, x, y, CPU, progress=False).metrics
    assert m["shift_rows"] == 0.0 and m["fooling_rate"] == 0.0 and m["robust_accuracy"] == 1.0
    # while the horizontal axis is searched correctly even as-is
    m_cols = attack_class("spatial", "art")(max_translation=10.0, num_translations=3, max_rotation=0.0,
                                            num_rotations=1, fix_channels_first=False).run(
        BarDetector("cols").eval(), bar_images("cols"), y, CPU, progress=False).metrics
    assert abs(m_cols["shift_cols"]) == 3.0 and m_cols["robust_accuracy"] == 0.0


def test_spatial_rotation_is_searched():
    """A detector of the horizontal bar is fooled by rotating it, with no translation allowed."""
    model = BarDetector("rows").eval()
    x, y = bar_images("rows"), torch.zeros(4, dtype=torch.long)
    m = build_attack("spatial", "art", max_translation=0.0, num_translations=1, max_rotation=60.0,
                     num_rotations=3).run(model, x, y, CPU, progress=False).metrics
    assert abs(m["rotation_deg"]) == 60.0 and m["shift_rows"] == 0.0 and m["shift_cols"] == 0.0
    assert m["robust_accuracy"] == 0.0


def test_deepfool_matches_analytic_minimum_on_linear_model():
    """For an affine classifier DeepFool's answer is exact: min_k |f_k - f_c| / ||w_k - w_c||, times (1 + overshoot)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval().requires_grad_(False)
    x = 0.4 + 0.2 * torch.rand(12, 3, 8, 8)
    logits = model(x)
    pred = logits.argmax(1)
    w = model[1].weight
    expected = []
    for i in range(len(x)):
        c = pred[i]
        d = [(logits[i, c] - logits[i, k]).abs() / (w[k] - w[c]).norm() for k in range(5) if k != c]
        expected.append(float(min(d)))
    overshoot = 0.02
    result = build_attack("deepfool", "art", max_iter=50, overshoot=overshoot, nb_grads=5, batch_size=12).run(
        model, x, pred, CPU, progress=False)
    l2 = result.samples["l2"]
    np.testing.assert_allclose(l2, (1 + overshoot) * np.array(expected), rtol=0.02)
    assert result.metrics["success_rate"] == 1.0
    assert (result.samples["adv_pred"] != pred.numpy()).all()  # re-checked with our own forward pass


def test_deepfool_metrics_on_small_cnn():
    from robustbench_leak.models import create_model

    torch.manual_seed(0)
    model = create_model("tomen_cnn", 10, 1, n_layers=3, width=4, kernel_size=3).eval().requires_grad_(False)
    x = torch.rand(8, 1, 28, 28)
    y = model(x).argmax(1)  # treat the model's own predictions as labels: all clean-correct
    result = build_attack("deepfool", "art", max_iter=30, batch_size=8).run(model, x, y, CPU, progress=False)
    m, s = result.metrics, result.samples
    assert m["clean_accuracy"] == 1.0
    fooled = s["adv_pred"] != y.numpy()
    assert m["success_rate"] == pytest.approx(fooled.mean())
    assert m["rho_mean"] == pytest.approx(s["rho"].mean()) and m["rho_median"] == pytest.approx(np.median(s["rho"]))
    assert (s["rho"] > 0).all()


def test_perturbation_metrics_use_clean_correct_only():
    x = np.ones((4, 1, 2, 2), dtype=np.float32)  # ||x|| = 2
    x_adv = x.copy()
    for i, d in enumerate([0.1, 0.2, 0.3, 0.4]):
        x_adv[i, 0, 0, 0] += d
    y = np.array([0, 0, 0, 0])
    clean = np.array([0, 0, 0, 1])  # last one misclassified before the attack
    adv = np.array([1, 1, 0, 0])  # third survives; the misclassified one moves into its true class
    m, s = perturbation_metrics(x, x_adv, y, clean, adv)
    assert m["clean_accuracy"] == 0.75
    # over all images, as RobustBench: image 3 survives; image 4, misclassified clean, is not robust (x_adv = x)
    assert m["robust_accuracy"] == 0.25
    assert m["success_rate"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(s["rho"], [0.05, 0.1, 0.15, 0.2], rtol=1e-6)
    assert m["rho_mean"] == pytest.approx(0.1) and m["rho_median"] == pytest.approx(0.1)


def test_attack_params_checked_up_front():
    with pytest.raises(ValueError, match="no parameter 'max_iters'"):
        build_attack("deepfool", "art", max_iters=3)
    with pytest.raises(ValueError, match="must be int"):
        build_attack("deepfool", "art", max_iter=2.5)
    with pytest.raises(KeyError, match="unknown attack"):
        build_attack("deepfoo")
    with pytest.raises(KeyError, match="no engine"):
        build_attack("deepfool", "fast")


def test_clean_accuracy():
    model = BarDetector("rows").eval()
    x = torch.cat([bar_images("rows", 3), bar_images("cols", 1)])
    y = torch.zeros(4, dtype=torch.long)
    result = build_attack("clean").run(model, x, y, CPU, progress=False)
    # the column-bar image has most of its mass outside rows 13-15 -> class 1
    assert result.metrics["accuracy"] == 0.75
