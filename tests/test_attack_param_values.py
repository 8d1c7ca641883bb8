"""Attack parameters are refused when the attack is built, not when it runs: NaN passes every range
comparison and infinity every lower bound, so non-finite numbers are refused by name for every registered
attack; ART attacks' values are checked by ART's own constructor up front."""

from __future__ import annotations

import math

import pytest

from robustbench_leak.attacks import base
from robustbench_leak.attacks.art_any import ArtEvasion


def _float_params():
    base._ensure_loaded()
    for (kind, engine), cls in sorted(base._ATTACKS.items()):
        if cls is ArtEvasion:
            continue
        for name, default in cls.defaults.items():
            if isinstance(default, float):
                yield pytest.param(cls, name, id=f"{kind}-{engine}-{name}")


@pytest.mark.parametrize("cls, name", list(_float_params()))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_by_name(cls, name, value):
    with pytest.raises(ValueError, match=rf"parameter '{name}' must be a finite number.*got {value}"):
        cls.check_params({name: value})


@pytest.mark.parametrize("params, expected", [
    ({"name": "FastGradientMethod", "eps": -1.0}, "refuses its parameters.*eps.*nonnegative"),
    ({"name": "ProjectedGradientDescent", "eps": math.nan}, "parameter 'eps' must be a finite number"),
    ({"name": "DeepFool", "epsilon": -0.5}, "refuses its parameters.*overshoot"),
    ({"name": "DecisionTreeAttack"}, "refuses its parameters.*requires an estimator"),
])
def test_art_attack_values_are_checked_before_anything_runs(params, expected):
    with pytest.raises(ValueError, match=expected):
        ArtEvasion.check_params(params)


def test_art_attacks_keep_valid_values_and_an_infinite_norm():
    checked = ArtEvasion.check_params({"name": "FastGradientMethod", "norm": math.inf, "eps": 0.1})
    assert checked["norm"] == math.inf and checked["eps"] == 0.1
    assert ArtEvasion.check_params({"name": "ProjectedGradientDescent", "eps": 0.03, "max_iter": 5})["max_iter"] == 5
