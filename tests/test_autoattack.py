"""The native AutoAttack: parameters refused when built (one line each), per-dataset eps, RobustBench's robust
accuracy and the per-member record, the budget, the Square masking flag, FAB as a minimum-norm attack, and the
``autoattack`` preset through ``rb.evaluate`` to the leaderboard. The comparisons with torchattacks and ART are in
test_autoattack_references.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import train_one_conv, write_config

import robustbench_leak as rb
from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_autoattack import DATASET_EPS
from robustbench_leak.attacks.native_fab import fab_batch
from robustbench_leak.config import ConfigError, load_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    """A one-convolution network trained for a second on synthetic gratings, and 32 of its test images."""
    from robustbench_leak.data import load_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_dataset("synthetic", n_train=512, n_test=32)
    model = train_one_conv(data)
    yield model.eval().requires_grad_(False), data.test_x, data.test_y
    torch.set_num_threads(threads)


@pytest.mark.parametrize("params, message", [
    ({"eps": -0.1}, "parameter 'eps' must be a number > 0"),
    ({"eps": "big"}, "parameter 'eps' must be a number > 0"),
    ({"norm": "l1"}, "parameter 'norm' must be one of 'linf', 'l2'"),
    ({"members": ["apgd-ce"]}, "applies to version 'custom' only"),
    ({"version": "custom"}, "must be a non-empty list"),
    ({"version": "custom", "members": ["apgd-ce", "pgd"]}, "must list distinct members"),
    ({"p_init": 1.5}, "parameter 'p_init' must be > 0 and <= 1"),
    ({"n_iter": 0}, "parameter 'n_iter' must be >= 1"),
    ({"budget": 0}, "parameter 'budget' must be an integer >= 1"),
])
def test_bad_parameters_are_refused_when_built(params, message):
    with pytest.raises(ValueError, match=message) as info:
        build_attack("autoattack", **params)
    assert "\n" not in str(info.value)


def test_a_dataset_without_default_eps_fails_at_config_load(tmp_path):
    path = write_config(tmp_path / "aa.yaml", """
name: aa
datasets: [{name: synthetic, n_train: 64, n_test: 16}]
models: [{name: m, arch: tomen_cnn, options: {n_layers: 2, width: 4}}]
attacks: [autoattack]
""")
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.params: .*no default eps for dataset 'synthetic'") as info:
        load_config(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("classes, members, message", [
    (3, None, "member apgd-t needs at least 4 classes"),
    (2, "[apgd-dlr]", "member apgd-dlr needs at least 3 classes"),
    (3, "[apgd-ce, apgd-dlr, fab-t, square]", None),
    (2, "[apgd-ce, fab-t, square]", None),
])
def test_dlr_members_need_enough_classes_at_config_load(tmp_path, classes, members, message):
    """DLR divides by the gap to the 3rd largest logit (targeted: 3rd and 4th): too few classes fail in one line
    before any training, not as an IndexError in the cell."""
    version = "standard" if members is None else f"custom, members: {members}"
    path = write_config(tmp_path / "aa.yaml", f"""
name: aa
datasets: [{{name: synthetic, n_train: 64, n_test: 16, num_classes: {classes}}}]
models: [{{name: m, arch: tomen_cnn, options: {{n_layers: 2, width: 4}}}}]
attacks: [{{preset: autoattack, n_samples: 8, params: {{eps: 0.03, version: {version}}}}}]
""")
    if message is None:
        assert load_config(path).attacks[0].params["eps"] == 0.03
        return
    with pytest.raises(ConfigError, match=r"attacks\[0\]\.params: attack 'autoattack' " + message) as info:
        load_config(path)
    assert "\n" not in str(info.value) and f"got {classes} classes" in str(info.value)


@pytest.mark.parametrize("loss, classes", [("dlr", 2), ("dlr-targeted", 3)])
def test_apgd_refuses_a_dlr_loss_undefined_for_the_classes(loss, classes):
    from robustbench_leak.attacks.native_apgd import apgd_batch

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))
    x, y = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=f"needs at least {classes + 1} classes"):
        apgd_batch(model, x, y, norm="linf", eps=0.1, loss=loss, n_iter=2)


def test_art_autoattack_without_multiprocess_fails_at_config_load(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "multiprocess" else real(name, *a))
    path = write_config(tmp_path / "art.yaml", """
name: art
datasets: [{name: synthetic, n_train: 64, n_test: 16}]
models: [{name: m, arch: tomen_cnn, options: {n_layers: 2, width: 4}}]
attacks: [{preset: fgsm-art, label: aa, params: {name: AutoAttack, eps: 0.0157, norm: inf}}]
""")
    with pytest.raises(ConfigError, match="needs the optional package 'multiprocess'") as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_standard_record_is_robustbench_robust_accuracy_per_member(tiny):
    model, x, y = tiny
    y = y.clone()
    y[:4] = (y[:4] + 1) % 10  # four images the model gets wrong: not robust, never attacked
    attack = build_attack("autoattack", norm="linf", eps=0.03, n_iter=10, n_queries=100)
    result = attack.run(model, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(0))
    m, s = result.metrics, result.samples
    correct = s["clean_pred"] == s["label"]
    assert not correct[:4].any()
    assert m["robust_accuracy"] == pytest.approx(np.mean(s["adv_pred"] == s["label"]))
    assert 0 < m["robust_accuracy"] < m["clean_accuracy"]
    members = ("apgd_ce", "apgd_t", "fab_t", "square")
    after = [m[f"robust_accuracy_after_{k}"] for k in members]
    assert after == sorted(after, reverse=True) and after[-1] == pytest.approx(m["robust_accuracy"])
    first = [m[f"broke_first_{k}"] for k in members]
    assert m["clean_accuracy"] - sum(first) == pytest.approx(m["robust_accuracy"])
    broken = s["broken_by"] != None  # noqa: E711 (an object array: elementwise)
    assert np.array_equal(broken, correct & (s["adv_pred"] != s["label"]))
    assert (s["linf"][broken] <= 0.03 + 1e-6).all() and (s["linf"][~broken] == 0).all()
    assert m["passes"] == pytest.approx(sum(m[f"passes_{k}"] for k in members)) and m["passes"] > 0


def test_budget_caps_each_members_passes(tiny):
    model, x, y = tiny
    result = build_attack("autoattack", norm="l2", eps=0.5, budget=40, n_queries=100).run(
        model, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(0))
    for k in ("apgd_ce", "apgd_t", "fab_t", "square"):
        assert result.metrics[f"passes_{k}"] <= 40


def test_rand_version_averages_gradients_over_draws(tiny):
    """EOT: 20 draws per step, so APGD-CE's passes per attacked image are about 20 times plain APGD-CE's."""
    model, x, y = tiny
    rand = build_attack("autoattack", norm="linf", eps=0.03, version="rand", n_iter=5).run(
        model, x, y, CPU, progress=False)
    plain = build_attack("autoattack", norm="linf", eps=0.03, version="custom", members=["apgd-ce"], n_iter=5).run(
        model, x, y, CPU, progress=False)
    assert rand.info["members"] == ["apgd-ce", "apgd-dlr"]
    assert rand.metrics["passes_apgd_ce"] > 10 * plain.metrics["passes_apgd_ce"]
    assert rand.metrics["robust_accuracy"] <= plain.metrics["robust_accuracy"] + 1 / len(x)


def test_square_breaking_what_gradients_could_not_is_flagged(tiny):
    """A model whose gradient is zero everywhere (a hard threshold in front): APGD and FAB break nothing,
    Square (scores only) does, and the cell is flagged."""
    model, x, y = tiny

    class Masked(nn.Module):
        def forward(self, z):
            return model(torch.round(z * 4) / 4)  # round's gradient is zero

    masked = Masked().eval()
    attack = build_attack("autoattack", norm="linf", eps=0.1, n_iter=5, n_queries=200, n_target_classes=2)
    result = attack.run(masked, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(0))
    from robustbench_leak.attacks.masking import MaskingSettings

    flags = attack.check_masking(masked, x, y, result, CPU, MaskingSettings(), gen=None)
    assert result.metrics["broke_first_square"] > 0
    assert flags and "Square (black-box) broke" in flags[0] and result.metrics["masking_failed"] == 1
    clean = build_attack("autoattack", norm="linf", eps=0.03, n_iter=10, n_queries=100)
    ok = clean.run(model, x, y, CPU, progress=False, gen=torch.Generator().manual_seed(0))
    assert clean.check_masking(model, x, y, ok, CPU, MaskingSettings()) == [] and ok.metrics["masking_failed"] == 0


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_untargeted_is_a_minimum_norm_attack(tiny, norm):
    """Without eps, FAB returns per image the smallest adversarial it found (every image fooled here), and more
    restarts never give a larger one; images it does not attack come back clean."""
    model, x, y = tiny
    with torch.no_grad():
        clean = model(x).argmax(1)
    adv = fab_batch(model, x, clean, norm=norm, n_iter=20, gen=torch.Generator().manual_seed(0))
    more = fab_batch(model, x, clean, norm=norm, n_iter=20, n_restarts=3, gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(adv).argmax(1) != clean).all() and (model(more).argmax(1) != clean).all()
    size = (lambda a: (a - x).flatten(1).abs().amax(1)) if norm == "linf" else (lambda a: (a - x).flatten(1).norm(dim=1))
    assert (size(more) <= size(adv) + 1e-6).all()
    wrong = (clean + 1) % 10
    assert torch.equal(fab_batch(model, x, wrong, norm=norm, n_iter=2), x)  # misclassified: not attacked


def test_fashion_mnist_default_eps_and_evaluate_by_preset_name(tmp_path):
    """``rb.evaluate(model, attacks=["autoattack"])`` on real Fashion-MNIST: the preset's eps null becomes the
    dataset's default; the leaderboard gets the robust accuracy, its interval and the per-member breakdown."""
    from robustbench_leak.data import DataMissingError, load_dataset
    from robustbench_leak.report.leaderboard import build_table

    try:
        data = load_dataset("fashion-mnist")
    except DataMissingError as exc:
        if os.environ.get("RBLEAK_REQUIRE_REAL_DATA") == "1":
            raise
        pytest.skip(f"real Fashion-MNIST not installed: {exc}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_one_conv(data, epochs=1, n_train=2560)
        df = rb.evaluate(model, attacks=["autoattack"], n_samples=6, out=tmp_path / "run", device="cpu")
    finally:
        torch.set_num_threads(threads)
    metrics = df.set_index("metric")
    assert {"robust_accuracy", "robust_accuracy_after_square", "broke_first_apgd_ce"} <= set(metrics.index)
    lo, hi = metrics.loc["robust_accuracy", ["lo", "hi"]]
    assert lo <= metrics.loc["robust_accuracy", "value"] <= hi
    samples = rb.load_results(tmp_path / "run").samples
    assert (samples.linf.dropna() <= DATASET_EPS["fashion-mnist"]["linf"] + 1e-6).all()
    table, legend, _ = build_table([tmp_path / "run"])
    assert "autoattack.robust_accuracy" in table.columns and "autoattack.broke_first_fab_t" in table.columns
    assert "FAB-T" in legend["autoattack.broke_first_fab_t"]
