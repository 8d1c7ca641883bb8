"""Native engines against ART on the same model and inputs, and the other attacks and sanity checks."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter, rotate, shift

from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_spatial import Transform, art_grid, transform_images
from robustbench_leak.data import load_dataset
from robustbench_leak.runtime import predict

from conftest import train_small_windowed_cnn

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained():
    """``train_small_windowed_cnn`` on the synthetic gratings, and its 160 test images."""
    data = load_dataset("synthetic", n_train=512, n_test=160)
    return train_small_windowed_cnn(data), data


def test_native_deepfool_agrees_with_art(trained):
    model, data = trained
    x, y = data.test_x[:32], data.test_y[:32]
    params = {"max_iter": 10, "overshoot": 0.02, "nb_grads": 10}
    art = build_attack("deepfool", "art", batch_size=32, **params).run(model, x, y, CPU, progress=False)
    native = build_attack("deepfool", "native", batch_size=16, **params).run(model, x, y, CPU, progress=False)
    a, b = art.samples, native.samples
    fooled_a, fooled_b = a["adv_pred"] != a["clean_pred"], b["adv_pred"] != b["clean_pred"]
    assert fooled_a.mean() > 0.9  # the comparison is about real adversarial examples
    assert np.mean(fooled_a == fooled_b) >= 0.99
    rel = np.abs(a["l2"] - b["l2"]) / np.maximum(a["l2"], 1e-12)
    assert np.median(rel) < 0.05
    assert native.metrics["rho_mean"] == pytest.approx(art.metrics["rho_mean"], rel=0.05)


def test_native_deepfool_candidate_pruning_agrees_with_art(trained):
    """keep_candidates (the default preset's speed-up) against ART, and against the exact engine."""
    model, data = trained
    x, y = data.test_x[:48], data.test_y[:48]
    params = {"max_iter": 10, "overshoot": 0.02, "nb_grads": 10}
    art = build_attack("deepfool", "art", batch_size=48, **params).run(model, x, y, CPU, progress=False)
    exact = build_attack("deepfool", "native", **params).run(model, x, y, CPU, progress=False)
    for keep in (1, 2, 3):
        pruned = build_attack("deepfool", "native", keep_candidates=keep, **params).run(model, x, y, CPU,
                                                                                     progress=False)
        a, b = art.samples, pruned.samples
        assert np.mean((a["adv_pred"] != a["clean_pred"]) == (b["adv_pred"] != b["clean_pred"])) >= 0.99
        assert np.median(np.abs(a["l2"] - b["l2"]) / np.maximum(a["l2"], 1e-12)) < 0.05
    big = build_attack("deepfool", "native", keep_candidates=9, **params).run(model, x, y, CPU, progress=False)
    np.testing.assert_allclose(big.samples["l2"], exact.samples["l2"], rtol=1e-5)  # keeping all = exact
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(ValueError, match="keep_candidates"):
            build_attack("deepfool", "native", keep_candidates=bad)


def test_native_deepfool_iterate_mode_is_arts_loop(trained):
    """With stop_on: iterate the engine runs ART's loop step for step: the same norms to float precision."""
    model, data = trained
    x, y = data.test_x[:16], data.test_y[:16]
    params = {"max_iter": 10, "overshoot": 0.02, "nb_grads": 10}
    art = build_attack("deepfool", "art", batch_size=16, **params).run(model, x, y, CPU, progress=False)
    native = build_attack("deepfool", "native", stop_on="iterate", **params).run(model, x, y, CPU, progress=False)
    np.testing.assert_allclose(native.samples["l2"], art.samples["l2"], rtol=1e-4)
    np.testing.assert_array_equal(native.samples["adv_pred"], art.samples["adv_pred"])
    with pytest.raises(ValueError, match="stop_on"):
        build_attack("deepfool", "native", stop_on="never")


def test_native_deepfool_top_k_candidates(trained):
    """With fewer candidate classes the attack still fools, with norms no smaller than the all-class run."""
    model, data = trained
    x, y = data.test_x[:32], data.test_y[:32]
    full = build_attack("deepfool", "native", max_iter=20, nb_grads=10).run(model, x, y, CPU, progress=False)
    top3 = build_attack("deepfool", "native", max_iter=20, nb_grads=3).run(model, x, y, CPU, progress=False)
    assert top3.metrics["success_rate"] >= 0.9
    assert np.median(top3.samples["l2"] / full.samples["l2"]) >= 0.999  # a subset of boundaries is never closer


def test_transforms_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 20, 24)).astype(np.float32)
    for t in [Transform(3, -2, 0.0), Transform(-4, 5, 0.0), Transform(0, 0, 0.0)]:
        # integer shifts: scipy's cubic spline reproduces the pixels exactly, and so do we
        ref = np.clip(shift(x, [0, 0, t.shift_rows, t.shift_cols]), 0, 1)
        np.testing.assert_allclose(transform_images(torch.from_numpy(x), t).numpy(), ref, atol=1e-6)
    for t in [Transform(0, 0, 30.0), Transform(2, -3, -15.0), Transform(-1, 1, 90.0)]:
        # rotation: bilinear equals scipy's order-1 rotate with zero padding outside the grid
        ref = rotate(shift(x, [0, 0, t.shift_rows, t.shift_cols], order=1), t.rotation_deg, axes=(2, 3),
                     reshape=False, order=1, mode="grid-constant")
        got = transform_images(torch.from_numpy(x), t, "bilinear").numpy()
        np.testing.assert_allclose(got, np.clip(ref, 0, 1), atol=1e-5)


def test_scipy_interpolation_is_arts_resampling():
    """interpolation: scipy gives ART's pixels exactly: scipy's default spline shift, then rotate, then clip."""
    rng = np.random.default_rng(1)
    x = rng.random((3, 2, 20, 24)).astype(np.float32)
    for t in [Transform(0, 0, 30.0), Transform(2, -3, -15.0), Transform(-1, 1, 10.0)]:
        ref = np.clip(rotate(shift(x, [0, 0, t.shift_rows, t.shift_cols]), t.rotation_deg, axes=(2, 3),
                             reshape=False), 0, 1)
        np.testing.assert_allclose(transform_images(torch.from_numpy(x), t, "scipy").numpy(), ref, atol=1e-6)


def test_native_scipy_spatial_equals_art_per_image(trained):
    """With ART's resampling the native engine's global attack is ART's: same transform, same predictions."""
    model, data = trained
    x, y = data.test_x[:40], data.test_y[:40]
    grid = dict(max_translation=10.0, num_translations=3, max_rotation=30.0, num_rotations=5)
    art = build_attack("spatial", "art", fix_channels_first=True, **grid).run(model, x, y, CPU, progress=False)
    native = build_attack("spatial", "native", mode="global", fit_on="attacked", interpolation="scipy",
                          **grid).run(model, x, y, CPU, progress=False)
    assert art.metrics["fooling_rate"] > 0
    for key in ("shift_rows", "shift_cols", "rotation_deg", "robust_accuracy"):
        assert native.metrics[key] == pytest.approx(art.metrics[key]), key
    np.testing.assert_array_equal(native.samples["adv_pred"], art.samples["adv_pred"])


def test_grid_matches_art_on_both_axes():
    grid = art_grid(28, 28, 10.0, 5, 30.0, 7)
    assert sorted({t.shift_rows for t in grid}) == [-3, -2, 0, 2, 3]  # np.round(-1.5) = -2
    assert {t.shift_rows for t in grid} == {t.shift_cols for t in grid}
    assert len(grid) == 5 * 5 * 7
    assert sorted({t.rotation_deg for t in grid}) == pytest.approx(np.linspace(-30, 30, 7).tolist())


@pytest.mark.parametrize("rotations", [(0.0, 1), (30.0, 3)])
def test_native_global_spatial_agrees_with_art(trained, rotations):
    model, data = trained
    x, y = data.test_x[:40], data.test_y[:40]
    max_rot, n_rot = rotations
    grid = dict(max_translation=10.0, num_translations=3, max_rotation=max_rot, num_rotations=n_rot)
    art = build_attack("spatial", "art", fix_channels_first=True, **grid).run(model, x, y, CPU, progress=False)
    native = build_attack("spatial", "native", mode="global", fit_on="attacked", **grid).run(
        model, x, y, CPU, progress=False)
    chosen = lambda m: (m["shift_rows"], m["shift_cols"], m["rotation_deg"])  # noqa: E731
    assert art.metrics["fooling_rate"] > 0  # the grid really changes predictions
    assert chosen(native.metrics) == chosen(art.metrics)
    assert abs(native.metrics["robust_accuracy"] - art.metrics["robust_accuracy"]) <= 0.005


def test_spatial_modes_are_ordered(trained):
    model, data = trained
    x, y = data.test_x[:64], data.test_y[:64]
    fit = (data.test_x[-64:], data.test_y[-64:])
    grid = dict(max_translation=10.0, num_translations=3, max_rotation=30.0, num_rotations=3)
    glob = build_attack("spatial", "native", mode="global", **grid).run(model, x, y, CPU, progress=False, fit=fit)
    worst = build_attack("spatial", "native", mode="worst_of_grid", **grid).run(model, x, y, CPU, progress=False)
    k = build_attack("spatial", "native", mode="worst_of_k", k=5, **grid).run(model, x, y, CPU, progress=False)
    clean = glob.metrics["clean_accuracy"]
    assert worst.metrics["robust_accuracy"] <= glob.metrics["robust_accuracy"] <= clean
    assert worst.metrics["robust_accuracy"] <= k.metrics["robust_accuracy"] <= clean
    # the grid recorded for the heatmap holds one accuracy per transform, and the worst case follows from it
    cells = glob.info["grid"]
    assert len(cells) == 3 * 3 * 3 and all(0 <= c["accuracy"] <= 1 for c in cells)
    assert worst.metrics["robust_accuracy"] == pytest.approx(glob.metrics["worst_of_grid_accuracy"])
    assert min(c["accuracy"] for c in cells) >= worst.metrics["robust_accuracy"]
    with pytest.raises(ValueError, match="fitting split"):
        build_attack("spatial", "native", mode="global").run(model, x, y, CPU, progress=False)
    with pytest.raises(ValueError, match="mode"):
        build_attack("spatial", "native", mode="best")


def test_unbounded_pgd_fools_everything_and_zero_budget_nothing(trained):
    model, data = trained
    x, y = data.test_x[:32], data.test_y[:32]
    big = build_attack("pgd", norm="linf", eps=1.0, step_size=0.1, steps=20, random_start=False).run(
        model, x, y, CPU, progress=False)
    assert big.metrics["success_rate"] == 1.0
    zero = build_attack("pgd", norm="l2", eps=0.0, step_size=0.1, steps=3).run(model, x, y, CPU, progress=False)
    assert zero.metrics["robust_accuracy"] == zero.metrics["clean_accuracy"]
    l2 = build_attack("pgd", norm="l2", eps=0.5, step_size=0.1, steps=10).run(model, x, y, CPU, progress=False)
    assert (l2.samples["l2"] <= 0.5 + 1e-4).all()


def test_corruptions_match_scipy(trained):
    model, data = trained
    x, y = data.test_x[:40], data.test_y[:40]
    for sigma in (1.0, 4.0):
        low = build_attack("lowpass", sigma=sigma).run(model, x, y, CPU, progress=False)
        blurred = torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma)))
        np.testing.assert_array_equal(low.samples["adv_pred"], predict(model, blurred, CPU).numpy())
        high = build_attack("highpass", sigma=sigma).run(model, x, y, CPU, progress=False)
        np.testing.assert_array_equal(high.samples["adv_pred"], predict(model, x - blurred, CPU).numpy())
    # the synthetic classes are high-frequency gratings: a strong blur removes them
    strong = build_attack("lowpass", sigma=4.0).run(model, x, y, CPU, progress=False)
    assert strong.metrics["robust_accuracy"] < strong.metrics["clean_accuracy"]


def test_any_art_attack_by_name(trained):
    model, data = trained
    x, y = data.test_x[:32], data.test_y[:32]
    fgsm = build_attack("art", name="FastGradientMethod", eps=0.2, norm="inf").run(model, x, y, CPU, progress=False)
    assert fgsm.metrics["linf_median"] == pytest.approx(0.2, abs=1e-5)
    assert fgsm.metrics["robust_accuracy"] < fgsm.metrics["clean_accuracy"]
    with pytest.raises(ValueError, match="has no parameter 'epz'"):
        build_attack("art", name="FastGradientMethod", epz=0.2)
    with pytest.raises(ValueError, match="no evasion attack 'Nope'"):
        build_attack("art", name="Nope")


class Quantized(nn.Module):
    """Rounds its input to 8 levels before the network: zero gradient everywhere (masked)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 7) / 7)


def test_sanity_checks_flag_masked_gradients(trained):
    from robustbench_leak.run.cells import sanity_checks

    model, data = trained
    masked = Quantized(model).eval()
    x, y = data.test_x[:32], data.test_y[:32]
    y = predict(masked, x, CPU)  # every image clean-correct for the masked model
    result = build_attack("deepfool", "native", max_iter=5).run(masked, x, y, CPU, progress=False)
    flags = sanity_checks("deepfool", masked, x, y, result, CPU, seed=0)
    assert any("unbounded PGD" in f for f in flags)
    assert any("still classified correctly" in f for f in flags)
    assert result.metrics["sanity_pgd_success"] < 0.99
    honest = build_attack("deepfool", "native", max_iter=30).run(model, x, predict(model, x, CPU), CPU, progress=False)
    assert sanity_checks("deepfool", model, x, predict(model, x, CPU), honest, CPU, seed=0) == []
