"""Native DDN, FMN (L2 and L-inf) and SuperDeepFool against adv-lib 0.2.8 (independent code) on the same small model and
inputs, and SuperDeepFool against DeepFool. adv-lib imports visdom only for its optional plotting, so a stub
stands in; with ``RBLEAK_REQUIRE_ADV_LIB=1`` (the CI) a missing adv-lib fails these tests instead of skipping."""

import importlib
import os
import sys
import types

import numpy as np
import pytest
import torch

from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_minnorm import DEEPFOOL_EXACT
from robustbench_leak.runtime import predict

CPU = torch.device("cpu")
N_IMAGES, STEPS = 32, 100


@pytest.fixture(scope="module")
def adv_lib():
    sys.modules.setdefault("visdom", types.ModuleType("visdom"))
    try:
        return importlib.import_module("adv_lib.attacks")
    except ImportError as exc:
        if os.environ.get("RBLEAK_REQUIRE_ADV_LIB") == "1":
            pytest.fail(f"RBLEAK_REQUIRE_ADV_LIB=1 but adv-lib does not import ({exc}); "
                        "pip install --no-deps adv-lib==0.2.8")
        pytest.skip("adv-lib is not installed (pip install --no-deps adv-lib==0.2.8)")


@pytest.fixture(scope="module")
def setup(small_windowed_cnn):
    return small_windowed_cnn


def _outcome(model, x, clean, adv) -> tuple[np.ndarray, np.ndarray]:
    return (adv - x).flatten(1).norm(dim=1).numpy(), predict(model, adv, CPU).numpy() != clean.numpy()


def _native(kind, setup, **params):
    model, x, y, _ = setup
    res = build_attack(kind, batch_size=N_IMAGES, **params).run(model, x, y, CPU, progress=False)
    return res.samples["l2"], res.samples["adv_pred"] != res.samples["clean_pred"]


def test_fmn_equals_adv_lib_at_identical_settings(setup, adv_lib):
    """adv-lib's L2 projection rescales to epsilon exactly (``projection: sphere``); it starts at the clean image
    and has no bound mask. At those settings the two loops give the same examples."""
    model, x, _, clean = setup
    ref_l2, ref_fooled = _outcome(model, x, clean, adv_lib.fmn(model, x, clean, norm=2, steps=STEPS))
    l2, fooled = _native("fmn", setup, steps=STEPS, bound_mask=False, projection="sphere", start="clean")
    assert ref_fooled.mean() > 0.9
    np.testing.assert_array_equal(fooled, ref_fooled)
    np.testing.assert_allclose(l2[fooled], ref_l2[fooled], rtol=1e-4)


def test_fmn_linf_equals_adv_lib_at_identical_settings(setup, adv_lib):
    """adv-lib's L-inf FMN (clean start, no bound mask): the same images fooled with the same L-inf norms."""
    model, x, _, clean = setup
    ref = adv_lib.fmn(model, x, clean, norm=float("inf"), steps=STEPS)
    ref_linf = (ref - x).flatten(1).abs().amax(dim=1).numpy()
    ref_fooled = predict(model, ref, CPU).numpy() != clean.numpy()
    res = build_attack("fmn-linf", batch_size=N_IMAGES, steps=STEPS, bound_mask=False, start="clean").run(
        model, x, setup[2], CPU, progress=False)
    fooled = res.samples["adv_pred"] != res.samples["clean_pred"]
    assert ref_fooled.mean() > 0.9
    np.testing.assert_array_equal(fooled, ref_fooled)
    np.testing.assert_allclose(res.samples["linf"][fooled], ref_linf[fooled], rtol=1e-4)


def test_superdeepfool_equals_adv_lib(setup, adv_lib):
    model, x, _, clean = setup
    ref_l2, ref_fooled = _outcome(model, x, clean, adv_lib.sdf(model, x, clean))
    l2, fooled = _native("superdeepfool", setup)
    assert ref_fooled.mean() > 0.9
    np.testing.assert_array_equal(fooled, ref_fooled)
    np.testing.assert_allclose(l2[fooled], ref_l2[fooled], rtol=1e-4)


def test_ddn_agrees_with_adv_lib(setup, adv_lib):
    """adv-lib's DDN quantises each iterate to 256 levels (its default); success and median norm within 2%."""
    model, x, _, clean = setup
    ref_l2, ref_fooled = _outcome(model, x, clean, adv_lib.ddn(model, x, clean, steps=STEPS))
    l2, fooled = _native("ddn", setup, steps=STEPS)
    assert ref_fooled.mean() > 0.9
    assert fooled.mean() == pytest.approx(ref_fooled.mean(), abs=0.02)
    assert np.median(l2[fooled]) == pytest.approx(np.median(ref_l2[ref_fooled]), rel=0.02)


def test_superdeepfool_never_larger_than_deepfool(setup):
    """On every image both fool, SuperDeepFool's perturbation is no longer than DeepFool's (deepfool-exact)."""
    sdf_l2, sdf_fooled = _native("superdeepfool", setup)
    df_l2, df_fooled = _native("deepfool", setup, **DEEPFOOL_EXACT)
    both = sdf_fooled & df_fooled
    assert both.mean() > 0.9 and np.all(sdf_fooled[df_fooled])
    assert np.all(sdf_l2[both] <= df_l2[both] * (1 + 1e-6))
    assert np.median(sdf_l2[both] / df_l2[both]) < 1.0
