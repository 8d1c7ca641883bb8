"""DeepFool and SuperDeepFool on a linear classifier, where the minimal L2 perturbation is known exactly:
the distance to the nearest pairwise boundary, ``min_k |f_k - f_c| / ||w_k - w_c||``."""

import pytest
import torch
import torch.nn as nn

from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_deepfool import deepfool_batch
from robustbench_leak.attacks.native_minnorm import DEEPFOOL_EXACT
from robustbench_leak.attacks.native_superdeepfool import superdeepfool_batch

SEARCH_ITER = 10


@pytest.fixture(scope="module")
def linear():
    """Logits ``W (x - 0.5)`` on 4x4 images near mid-grey, so every nearest boundary point lies inside [0, 1]."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        model[1].bias.copy_(-model[1].weight.sum(1) * 0.5)
    model.eval().requires_grad_(False)
    x = (0.5 + 0.05 * torch.randn(64, 1, 4, 4)).clamp(0, 1)
    w, f = model[1].weight, model(x)
    c = f.argmax(1)
    dw = w[None, :, :] - w[c][:, None, :]  # (N, classes, D)
    dist = (f - f.gather(1, c[:, None])).abs() / dw.norm(dim=2)
    dist[torch.arange(len(x)), c] = float("inf")
    d, k = dist.min(1)
    rows = torch.arange(len(x))
    optimum = x.flatten(1) + d[:, None] * dw[rows, k] / dw[rows, k].norm(dim=1, keepdim=True)
    assert ((optimum > 0) & (optimum < 1)).all()  # the box never binds, so the linear answer is exact
    return model, x, c, d


def test_deepfool_is_exact_on_a_linear_model(linear):
    model, x, c, d = linear
    adv, iters = deepfool_batch(model, x, **DEEPFOOL_EXACT)
    assert (model(adv).argmax(1) != c).all() and (iters == 1).all()  # one step reaches the boundary
    norm = (adv - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(norm, d * (1 + DEEPFOOL_EXACT["overshoot"]), rtol=1e-4, atol=1e-6)


def test_superdeepfool_is_exact_on_a_linear_model_and_never_above_deepfool(linear):
    model, x, c, d = linear
    adv, _ = superdeepfool_batch(model, x, c, steps=100, df_steps=100, overshoot=0.02, search_iter=SEARCH_ITER)
    assert (model(adv).argmax(1) != c).all()
    norm = (adv - x).flatten(1).norm(dim=1)
    # the bisection stops within 2^-10 of the segment past the boundary; 1e-6 absolute both ways: float32
    # pixels near 0.5 round at 6e-8 each, which on a 0.014 distance is 1.5e-5 relative (seen on an Intel CPU)
    assert (norm >= d * (1 - 1e-5) - 1e-6).all() and (norm <= d * (1 + 1.02 * 2.0 ** -SEARCH_ITER) + 1e-6).all()
    df_norm = (deepfool_batch(model, x, **DEEPFOOL_EXACT)[0] - x).flatten(1).norm(dim=1)
    assert (norm <= df_norm * (1 + 1e-6)).all()


@pytest.mark.parametrize("bad", [{"steps": 0}, {"df_steps": 0}, {"overshoot": -0.1}, {"search_iter": -1}])
def test_superdeepfool_parameter_ranges(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_attack("superdeepfool", **bad)


def test_list_attacks_shows_superdeepfool_and_its_preset(capsys):
    from robustbench_leak.cli import main

    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("superdeepfool engine=native") for line in out.splitlines())
    assert "superdeepfool" in out.splitlines()[-1].split(": ", 1)[1].split(", ")  # the preset file
