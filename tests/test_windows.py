"""Window functions (robustbench_leak/nn/windows.py) against NumPy/SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import windows as sp_windows

from robustbench_leak.nn.windows import NORMALIZATIONS, WindowSpec, window_1d, window_names, window_params

LENGTHS = (1, 3, 7, 9)


def reference_1d(name: str, n: int, **params: float) -> np.ndarray:
    """The symmetric window as NumPy/SciPy compute it, written out independently of the package."""
    if name == "none":
        return np.ones(n)
    if name == "hamming":
        return np.hamming(n)
    if name == "hann":
        return np.hanning(n)
    if name == "blackman":
        return np.blackman(n)
    if name == "kaiser":
        return np.kaiser(n, params.get("beta", 14.0))
    if name == "tukey":
        return sp_windows.tukey(n, params.get("alpha", 0.5), sym=True)
    if name == "gaussian":
        return sp_windows.gaussian(n, params.get("sigma", 1.0), sym=True)
    raise AssertionError(f"test has no reference for window {name!r}")


def test_window_names_are_the_documented_set():
    assert set(window_names()) == {"none", "hamming", "hann", "blackman", "kaiser", "tukey", "gaussian"}


def test_window_params_defaults():
    assert window_params("kaiser") == {"beta": 14.0}
    assert window_params("tukey") == {"alpha": 0.5}
    assert window_params("gaussian") == {"sigma": 1.0}
    for name in ("none", "hamming", "hann", "blackman"):
        assert window_params(name) == {}
    # a copy: mutating it does not change the registry
    window_params("kaiser")["beta"] = 1.0
    assert window_params("kaiser") == {"beta": 14.0}


@pytest.mark.parametrize("name", window_names())
@pytest.mark.parametrize("n", LENGTHS)
def test_window_1d_matches_numpy_scipy_default_params(name, n):
    got = window_1d(name, n)
    ref = reference_1d(name, n)
    assert got.dtype == np.float64
    assert got.shape == (n,)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)
    # symmetric windows
    np.testing.assert_allclose(got, got[::-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,params", [
    ("kaiser", {"beta": 0.0}),
    ("kaiser", {"beta": 8.0}),
    ("tukey", {"alpha": 0.0}),
    ("tukey", {"alpha": 1.0}),
    ("tukey", {"alpha": 0.25}),
    ("gaussian", {"sigma": 0.5}),
    ("gaussian", {"sigma": 2.5}),
])
@pytest.mark.parametrize("n", LENGTHS)
def test_window_1d_matches_numpy_scipy_custom_params(name, params, n):
    np.testing.assert_allclose(window_1d(name, n, **params), reference_1d(name, n, **params), rtol=0, atol=1e-7)


def test_window_1d_custom_param_changes_the_window():
    # guards against a parameter being silently ignored
    assert not np.allclose(window_1d("kaiser", 7, beta=2.0), window_1d("kaiser", 7))
    assert not np.allclose(window_1d("gaussian", 7, sigma=3.0), window_1d("gaussian", 7))
    assert not np.allclose(window_1d("tukey", 7, alpha=0.9), window_1d("tukey", 7))


def test_window_1d_errors():
    with pytest.raises(ValueError, match="unknown window 'hammming'.*known windows: .*hamming"):
        window_1d("hammming", 3)
    with pytest.raises(ValueError, match=r"takes no parameter \['beta'\]"):
        window_1d("hamming", 3, beta=1.0)
    with pytest.raises(ValueError, match="allowed: beta"):
        window_1d("kaiser", 3, alpha=1.0)
    with pytest.raises(ValueError, match="length must be >= 1"):
        window_1d("hamming", 0)


def test_hamming_7_hand_values():
    # np.hamming(7)[n] = 0.54 - 0.46 cos(2 pi n / 6):
    # n=0: 0.54-0.46 = 0.08; n=1: 0.54-0.46*0.5 = 0.31; n=2: 0.54+0.46*0.5 = 0.77; n=3: 0.54+0.46 = 1
    np.testing.assert_allclose(window_1d("hamming", 7), [0.08, 0.31, 0.77, 1.0, 0.77, 0.31, 0.08], atol=1e-12)


@pytest.mark.parametrize("name", window_names())
@pytest.mark.parametrize("kh,kw", [(1, 1), (3, 3), (7, 7), (9, 9), (3, 5), (7, 1)])
def test_build_2d_official_is_outer_product(name, kh, kw):
    got = WindowSpec(name=name).build_2d(kh, kw)
    ref = np.outer(reference_1d(name, kh), reference_1d(name, kw))
    assert got.shape == (kh, kw)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


def test_build_2d_with_params_is_outer_product():
    spec = WindowSpec(name="kaiser", params={"beta": 6.0})
    np.testing.assert_allclose(spec.build_2d(7, 5), np.outer(np.kaiser(7, 6.0), np.kaiser(5, 6.0)), atol=1e-7)


@pytest.mark.parametrize("name", ["hamming", "hann", "kaiser", "tukey", "gaussian"])
@pytest.mark.parametrize("kh,kw", [(3, 3), (7, 7), (3, 5)])
def test_build_2d_sqrt_variant(name, kh, kw):
    got = WindowSpec(name=name, sqrt=True).build_2d(kh, kw)
    ref = np.sqrt(np.outer(reference_1d(name, kh), reference_1d(name, kw)))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


def test_build_2d_sqrt_blackman_is_finite():
    # np.blackman(n) ends are -1.39e-17: outer(w, w) has tiny negative entries that must not become NaN
    got = WindowSpec(name="blackman", sqrt=True).build_2d(7, 7)
    assert np.isfinite(got).all()
    ref = np.sqrt(np.clip(np.outer(np.blackman(7), np.blackman(7)), 0, None))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["hamming", "kaiser", "gaussian", "tukey"])
@pytest.mark.parametrize("sqrt", [False, True])
def test_build_2d_normalize_mean(name, sqrt):
    win = WindowSpec(name=name, sqrt=sqrt, normalize="mean").build_2d(7, 7)
    raw = WindowSpec(name=name, sqrt=sqrt).build_2d(7, 7)
    assert win.mean() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(win, raw / raw.mean(), atol=1e-12)


@pytest.mark.parametrize("name", ["hamming", "kaiser", "gaussian", "tukey"])
@pytest.mark.parametrize("sqrt", [False, True])
def test_build_2d_normalize_energy(name, sqrt):
    win = WindowSpec(name=name, sqrt=sqrt, normalize="energy").build_2d(7, 7)
    raw = WindowSpec(name=name, sqrt=sqrt).build_2d(7, 7)
    assert np.mean(win**2) == pytest.approx(1.0, abs=1e-12)
    # same shape as the raw window, only rescaled
    np.testing.assert_allclose(win / win.max(), raw / raw.max(), atol=1e-12)


def test_hamming_7_2d_corner_and_mean_hand_derived():
    win = WindowSpec(name="hamming").build_2d(7, 7)
    # corner = w[0]^2 = 0.08^2 = 0.0064; centre = w[3]^2 = 1
    assert win[0, 0] == pytest.approx(0.0064, abs=1e-12)
    assert win[0, -1] == pytest.approx(0.0064, abs=1e-12)
    assert win[3, 3] == pytest.approx(1.0, abs=1e-12)
    # mean of outer(w, w) = mean(w)^2; sum(w) = 2*(0.08+0.31+0.77)+1 = 3.32 -> (3.32/7)^2 = 0.224947...
    assert win.mean() == pytest.approx((3.32 / 7) ** 2, abs=1e-12)
    assert win.mean() == pytest.approx(0.225, abs=1e-3)


def test_none_window_is_ones():
    np.testing.assert_array_equal(WindowSpec().build_2d(3, 5), np.ones((3, 5)))
    assert WindowSpec().is_identity
    assert WindowSpec(name="none", normalize="none", sqrt=True).is_identity
    assert not WindowSpec(name="hamming").is_identity


# ---------------------------------------------------------------- parse


def test_parse_str():
    spec = WindowSpec.parse("hamming")
    assert spec == WindowSpec(name="hamming", sqrt=False, normalize="none", params={})
    np.testing.assert_allclose(spec.build_2d(3, 3), np.outer(np.hamming(3), np.hamming(3)), atol=1e-12)


def test_parse_none_and_spec_passthrough():
    assert WindowSpec.parse(None) == WindowSpec(name="none")
    spec = WindowSpec(name="kaiser", params={"beta": 3.0})
    assert WindowSpec.parse(spec) is spec


def test_parse_dict_full():
    spec = WindowSpec.parse({"name": "kaiser", "beta": 8, "sqrt": True, "normalize": "mean"})
    assert spec.name == "kaiser"
    assert spec.sqrt is True
    assert spec.normalize == "mean"
    assert spec.params == {"beta": 8.0}
    assert isinstance(spec.params["beta"], float)
    ref = np.sqrt(np.outer(np.kaiser(5, 8.0), np.kaiser(5, 8.0)))
    np.testing.assert_allclose(spec.build_2d(5, 5), ref / ref.mean(), atol=1e-12)


def test_parse_dict_minimal_and_does_not_mutate_input():
    d = {"name": "gaussian", "sigma": 2}
    spec = WindowSpec.parse(d)
    assert d == {"name": "gaussian", "sigma": 2}
    assert spec == WindowSpec(name="gaussian", params={"sigma": 2.0})


def test_to_dict_round_trip():
    spec = WindowSpec(name="tukey", sqrt=True, normalize="energy", params={"alpha": 0.3})
    assert spec.to_dict() == {"name": "tukey", "sqrt": True, "normalize": "energy", "alpha": 0.3}
    assert WindowSpec.parse(spec.to_dict()) == spec


def test_parse_errors():
    with pytest.raises(ValueError, match="unknown window 'hamm'"):
        WindowSpec.parse("hamm")
    with pytest.raises(ValueError, match="unknown window 'foo'"):
        WindowSpec.parse({"name": "foo"})
    with pytest.raises(ValueError, match="needs a 'name'"):
        WindowSpec.parse({"beta": 3})
    with pytest.raises(ValueError, match=r"takes no parameter \['sigma'\]"):
        WindowSpec.parse({"name": "kaiser", "sigma": 3})
    with pytest.raises(ValueError, match=r"takes no parameter \['beta'\].*allowed: none"):
        WindowSpec.parse({"name": "hamming", "beta": 3})
    with pytest.raises(ValueError, match="normalize must be one of"):
        WindowSpec.parse({"name": "hamming", "normalize": "l2"})
    with pytest.raises(ValueError, match="normalize must be one of"):
        WindowSpec(name="hamming", normalize="max")
    with pytest.raises(ValueError, match="a name or a mapping, got int"):
        WindowSpec.parse(3)


def test_normalizations_constant():
    assert NORMALIZATIONS == ("none", "mean", "energy")


# ---------------------------------------------------------------- label


@pytest.mark.parametrize("spec,text", [
    (WindowSpec(), "none"),
    (WindowSpec(name="hamming"), "hamming"),
    (WindowSpec(name="hamming", sqrt=True), "sqrt-hamming"),
    (WindowSpec(name="hann", normalize="energy"), "hann/energy"),
    (WindowSpec(name="kaiser", params={"beta": 8.0}), "kaiser(beta=8)"),
    (WindowSpec(name="kaiser", sqrt=True, normalize="mean", params={"beta": 8.0}), "sqrt-kaiser(beta=8)/mean"),
    (WindowSpec(name="gaussian", params={"sigma": 1.5}), "gaussian(sigma=1.5)"),
    (WindowSpec(name="tukey", params={"alpha": 0.25}), "tukey(alpha=0.25)"),
])
def test_label(spec, text):
    assert spec.label() == text


def test_label_from_parsed_dict():
    assert WindowSpec.parse({"name": "kaiser", "beta": 8, "sqrt": True, "normalize": "mean"}).label() \
        == "sqrt-kaiser(beta=8)/mean"
