"""Any ART evasion attack by class name, e.g. ``{name: ProjectedGradientDescent, eps: 0.03}``.

Parameters are checked against the ART class's constructor before anything runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..options import short
from ..metrics import L2_MEDIAN, LINF_MEDIAN, ROBUST_ACCURACY, SUCCESS_RATE, flat_l2, prediction_metrics
from ..runtime import predict
from .art import _quiet_art, art_classifier, num_classes_of
from .base import Attack, AttackResult, at_least, register_attack

# constructor arguments the adapter supplies itself
_SUPPLIED = {"estimator", "classifier", "self", "verbose"}
# optional packages an ART attack imports only when it runs: checked when the config is loaded instead
OPTIONAL_MODULES = {"AutoAttack": ("multiprocess", "or use the native 'autoattack' preset")}


def art_evasion_class(name: str) -> type:
    import art.attacks.evasion as evasion

    cls = getattr(evasion, name, None)
    if not isinstance(cls, type) or not hasattr(cls, "generate"):
        known = sorted(n for n in dir(evasion) if isinstance(getattr(evasion, n), type) and n[0].isupper()
                       and hasattr(getattr(evasion, n), "generate"))
        raise ValueError(f"ART has no evasion attack {name!r}; available: {', '.join(known)}")
    return cls


def _check_values(name: str, art_cls: type, params: dict[str, Any]) -> None:
    """``ValueError`` (one line) for values ART would refuse only when the attack runs: ART checks them in the
    constructor, so the attack is built once on a small stand-in classifier; NaN, which ART's range checks
    let through, and infinities other than a ``norm`` are refused here."""
    for key, value in params.items():
        if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and key != "norm")):
            raise ValueError(f"ART attack {name!r} parameter {key!r} must be a finite number, got {value}")
    _quiet_art()
    stand_in = art_classifier(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)), (1, 28, 28), 10,
                              torch.device("cpu"))
    kwargs = {"verbose": False} if "verbose" in inspect.signature(art_cls.__init__).parameters else {}
    try:
        art_cls(stand_in, **params, **kwargs)
    except Exception as exc:  # noqa: BLE001 - ART raises ValueError, TypeError, its own EstimatorError, ...
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        given = ", ".join(f"{k}={short(v)}" for k, v in params.items()) or "the defaults"
        raise ValueError(f"ART attack {name!r} refuses its parameters ({given}): {text}") from None


@register_attack
class ArtEvasion(Attack):
    kind = "art"
    engine = "art"
    description = "any ART evasion attack by class name (parameters passed to its constructor)"
    defaults = {"name": "FastGradientMethod", "batch_size": 128}
    ranges = {"batch_size": at_least(1)}
    metrics = (ROBUST_ACCURACY, SUCCESS_RATE, L2_MEDIAN, LINF_MEDIAN)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        name = params.pop("name", cls.defaults["name"])
        batch_size = params.pop("batch_size", cls.defaults["batch_size"])
        art_cls = art_evasion_class(name)
        if name in OPTIONAL_MODULES:
            module, alternative = OPTIONAL_MODULES[name]
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"ART attack {name!r} needs the optional package {module!r}, which is not installed "
                                 f"(pip install {module}), {alternative}")
        sig = inspect.signature(art_cls.__init__)
        allowed = [n for n, prm in sig.parameters.items()
                   if n not in _SUPPLIED and prm.kind is not inspect.Parameter.VAR_KEYWORD]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"ART attack {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(allowed)}")
        if "batch_size" in sig.parameters:
            params["batch_size"] = batch_size
        _check_values(name, art_cls, params)
        return {"name": name, "batch_size": batch_size, **params}

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            progress: bool = True, fit: tuple[torch.Tensor, torch.Tensor] | None = None,
            gen: torch.Generator | None = None) -> AttackResult:
        _quiet_art()
        params = dict(self.params)
        name = params.pop("name")
        art_cls = art_evasion_class(name)
        if "batch_size" not in inspect.signature(art_cls.__init__).parameters:
            params.pop("batch_size")
        clf = art_classifier(model, tuple(x.shape[1:]), num_classes_of(model, x, device), device)
        kwargs = {"verbose": progress} if "verbose" in inspect.signature(art_cls.__init__).parameters else {}
        attack = art_cls(clf, **params, **kwargs)
        if gen is not None:  # ART draws from NumPy's global generator and takes none: seed it from ``gen``
            np.random.seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        x_np = x.numpy().astype(np.float32)
        x_adv = attack.generate(x_np, y=y.numpy())  # untargeted attacks move away from the true label
        clean_pred = predict(model, x, device).numpy()
        adv_pred = predict(model, torch.from_numpy(x_adv.astype(np.float32)), device).numpy()
        labels = y.numpy()
        metrics = prediction_metrics(labels, clean_pred, adv_pred)
        delta = (x_adv - x_np).reshape(len(x_np), -1)
        l2 = flat_l2(delta)
        correct = clean_pred == labels
        metrics["l2_median"] = float(np.median(l2[correct])) if correct.any() else float("nan")
        metrics["linf_median"] = float(np.median(np.abs(delta).max(1)[correct])) if correct.any() else float("nan")
        return AttackResult(metrics, {"label": labels, "clean_pred": clean_pred, "adv_pred": adv_pred, "l2": l2})
