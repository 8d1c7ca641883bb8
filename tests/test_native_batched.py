"""The native engines' device-friendly paths give today's answers: DeepFool's batched candidate gradients
against the per-candidate loop, the spatial grid's one-batch transforms against per-transform ones."""

import numpy as np
import pytest
import torch

from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_spatial import (
    GridEvaluator,
    Transform,
    _grid_predictions_per_transform,
    art_grid,
    grid_predictions,
    transform_images,
)
from robustbench_leak.config.training import TrainSettings
from robustbench_leak.data import load_dataset
from robustbench_leak.models import Normalized, create_model
from robustbench_leak.run.training import train_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained():
    data = load_dataset("synthetic", n_train=256, n_test=96, image_size=16)
    torch.manual_seed(0)
    model = Normalized(create_model("tomen_cnn", 10, 1, n_layers=2, width=8, kernel_size=5, window="hamming"),
                       data.mean, data.std)
    train_model(model, data, TrainSettings(lr=0.1, epochs=2, batch_size=32), 0, CPU, progress=False)
    return model.eval().requires_grad_(False), data


@pytest.mark.parametrize("keep", [None, 2])
def test_deepfool_batched_gradients_give_the_loops_examples(trained, keep):
    model, data = trained
    x, y = data.test_x[:40], data.test_y[:40]
    runs = {s: build_attack("deepfool", "native", max_iter=10, nb_grads=10, batch_size=16, keep_candidates=keep,
                            grad_strategy=s).run(model, x, y, CPU, progress=False) for s in ("loop", "batched")}
    loop, batched = runs["loop"].samples, runs["batched"].samples
    assert np.mean(loop["adv_pred"] != loop["clean_pred"]) > 0.9  # real adversarial examples
    np.testing.assert_array_equal(loop["adv_pred"], batched["adv_pred"])
    np.testing.assert_allclose(batched["l2"], loop["l2"], rtol=1e-4, atol=1e-6)
    assert runs["loop"].info == runs["batched"].info  # same iterations


def test_deepfool_grad_strategy_auto_is_the_loop_on_cpu_and_key_neutral(trained):
    model, data = trained
    x, y = data.test_x[:16], data.test_y[:16]
    auto = build_attack("deepfool", "native", max_iter=10).run(model, x, y, CPU, progress=False)
    loop = build_attack("deepfool", "native", max_iter=10, grad_strategy="loop").run(model, x, y, CPU,
                                                                                     progress=False)
    np.testing.assert_array_equal(auto.samples["l2"], loop.samples["l2"])  # bitwise
    from robustbench_leak.attacks import attack_class
    assert attack_class("deepfool", "native").key_neutral["grad_strategy"] == "auto"
    with pytest.raises(ValueError, match="parameter 'grad_strategy' must be one of"):
        build_attack("deepfool", "native", grad_strategy="vmap")


def test_grid_evaluator_images_are_transform_images_bitwise():
    torch.manual_seed(1)
    x = torch.rand(3, 2, 20, 14)
    grid = art_grid(20, 14, 10.0, 5, 30.0, 5) + [Transform(25, -3, 7.5)]  # a shift past the frame as well
    for mode in ("bicubic", "bilinear", "nearest"):
        got = GridEvaluator(grid, 20, 14, CPU, mode).images(x, 0, len(grid)).view(len(grid), 3, 2, 20, 14)
        for i, t in enumerate(grid):
            assert torch.equal(got[i], transform_images(x, t, mode)), (mode, t)


def test_grid_predictions_equal_the_per_transform_path(trained):
    model, data = trained
    x = data.test_x[:50]
    grid = art_grid(16, 16, 10.0, 5, 30.0, 7)
    for batch_size in (64, 512):  # several images per forward pass, and several transforms per pass
        new = grid_predictions(model, x, grid, CPU, batch_size, "bicubic")
        old = _grid_predictions_per_transform(model, x, grid, CPU, batch_size, "bicubic", False)
        assert torch.equal(new, old)


@pytest.mark.parametrize("mode", ["global", "worst_of_grid"])
def test_spatial_records_per_transform_accuracy_on_the_attacked_images(trained, mode):
    model, data = trained
    x, y = data.test_x[:40], data.test_y[:40]
    params = {"num_translations": 3, "num_rotations": 3, "mode": mode, "record_grid": False}
    fit = (data.test_x[40:], data.test_y[40:])
    result = build_attack("spatial", "native", **params).run(model, x, y, CPU, progress=False, fit=fit)
    per = result.info["per_transform"]
    grid = art_grid(16, 16, 10.0, 3, 30.0, 3)
    assert set(per) == {"tx", "ty", "rot", "accuracy"} and all(len(v) == len(grid) for v in per.values())
    for i in (0, len(grid) // 2, len(grid) - 1):  # each entry is that transform's accuracy on x
        t = grid[i]
        assert (per["tx"][i], per["ty"][i], per["rot"][i]) == (t.shift_cols, t.shift_rows, t.rotation_deg)
        pred = model(transform_images(x, t)).argmax(1)
        assert per["accuracy"][i] == pytest.approx(float((pred == y).float().mean()))
    assert result.info["grid_mean_accuracy"] == pytest.approx(np.mean(per["accuracy"]))
