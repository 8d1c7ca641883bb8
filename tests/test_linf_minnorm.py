"""The L-inf minimum-norm attacks: FMN-Linf and DeepFool-Linf against Foolbox 3, the minnorm-linf ensemble,
and a minnorm-linf cell through the runner (per-image L-inf norms stored, the robust-accuracy-vs-epsilon
figure drawn from them)."""

import foolbox as fb
import numpy as np
import pytest
import torch
import yaml
from test_minnorm_attacks import MINNORM_CONFIG, REPO

from robustbench_leak.attacks import attack_class, build_attack
from robustbench_leak.attacks.native_minnorm_linf import FAB_STEPS, MEMBERS, fab_linf_engine
from robustbench_leak.metrics import METRIC_DOCS, flat_linf
from robustbench_leak.runtime import predict

CPU = torch.device("cpu")
STEPS = 100


@pytest.fixture(scope="module")
def setup(small_windowed_cnn):
    return small_windowed_cnn


def _foolbox_linf(attack, model, x, clean) -> tuple[np.ndarray, np.ndarray]:
    adv = attack.run(fb.PyTorchModel(model, bounds=(0, 1)), x, fb.criteria.Misclassification(clean))
    return flat_linf((adv - x).numpy()), predict(model, adv, CPU).numpy() != clean.numpy()


def _native(kind, setup, **params):
    model, x, y, _ = setup
    res = build_attack(kind, batch_size=len(x), **params).run(model, x, y, CPU, progress=False)
    return res, res.samples["adv_pred"] != res.samples["clean_pred"]


def test_fmn_linf_equals_foolbox(setup):
    """Foolbox's L-inf FMN (its L-inf projection is right, unlike its L2 one) at the paper's loop: same examples."""
    model, x, _, clean = setup
    ref_linf, ref_fooled = _foolbox_linf(fb.attacks.LInfFMNAttack(steps=STEPS), model, x, clean)
    res, fooled = _native("fmn-linf", setup, steps=STEPS, bound_mask=False, start="clean")
    assert ref_fooled.mean() > 0.9
    np.testing.assert_array_equal(fooled, ref_fooled)
    # 100 float32 steps in two op orders: CPUs' kernels differ by up to 2e-4 relative on one image in 32
    np.testing.assert_allclose(res.samples["linf"][fooled], ref_linf[fooled], rtol=1e-3)
    assert res.metrics["linf_median"] == pytest.approx(np.median(res.samples["linf"]))


def test_deepfool_linf_agrees_with_foolbox(setup):
    """Foolbox takes its gradients at the overshot point, DeepFool (ART's loop) at the iterate: the same images
    fooled, median L-inf norm within 3%."""
    model, x, _, clean = setup
    ref_linf, ref_fooled = _foolbox_linf(fb.attacks.LinfDeepFoolAttack(steps=50, candidates=10, overshoot=0.02),
                                         model, x, clean)
    res, fooled = _native("deepfool-linf", setup)
    assert ref_fooled.mean() > 0.9
    np.testing.assert_array_equal(fooled, ref_fooled)
    assert np.median(res.samples["linf"][fooled]) == pytest.approx(np.median(ref_linf[ref_fooled]), rel=0.03)


def test_minnorm_linf_picks_the_smallest_member(setup):
    model, x, y, _ = setup
    res, fooled = _native("minnorm-linf", setup, fmn_steps=30)
    members = {"deepfool_linf": _native("deepfool-linf", setup, keep_candidates=None)[0],
               "fmn_linf": _native("fmn-linf", setup, steps=30)[0]}
    per_member = [np.where(r.samples["adv_pred"] != r.samples["clean_pred"], r.samples["linf"], np.inf)
                  for r in members.values()]
    clean = torch.from_numpy(res.samples["clean_pred"])
    fab = fab_linf_engine(model, x, clean, n_iter=FAB_STEPS, budget=None)[0]  # the third member, run alone
    with torch.no_grad():
        fab_fooled = (model(fab).argmax(1) != clean).numpy()
    per_member.append(np.where(fab_fooled, (fab - x).flatten(1).abs().amax(1).numpy(), np.inf))
    per_member = np.stack(per_member)
    m = res.metrics
    np.testing.assert_allclose(res.samples["linf"][fooled], per_member.min(axis=0)[fooled], rtol=1e-6)
    assert fooled.mean() == m["success_rate"] == 1.0
    best = max(MEMBERS, key=lambda k: m[f"minimum_share_{k}"])
    assert m[f"optimality_{best}"] > m[f"optimality_{min(MEMBERS, key=lambda k: m[f'minimum_share_{k}'])}"]
    assert sum(m[f"minimum_share_{k}"] for k in MEMBERS) == pytest.approx(1.0)
    assert m["passes"] == pytest.approx(sum(m[f"passes_{k}"] for k in MEMBERS))
    assert np.isfinite(m["converged_fmn_linf"])


def test_members_and_presets_are_declared():
    """The legend documents every member's metrics, and every L-inf preset builds an L-inf minimum-norm attack."""
    cls = attack_class("minnorm-linf")
    assert all(metric in METRIC_DOCS for metric in (*cls.metrics, *cls.declares))
    assert {f"passes_{m}" for m in MEMBERS} <= set(cls.declares)  # every member's metrics follow from its name
    for name in ("deepfool-linf", "fmn-linf", "minnorm-linf"):
        preset = yaml.safe_load((REPO / "attacks" / f"{name}.yaml").read_text())
        attack = build_attack(preset["attack"], preset["engine"], **preset["params"])
        assert attack.minimum_norm and attack.norm == "linf"


@pytest.mark.parametrize("kind, bad", [("fmn-linf", {"projection": "ball"}), ("fmn-linf", {"steps": 0}),
                                       ("minnorm-linf", {"fmn_steps": 0}), ("deepfool-linf", {"stop_on": "x"})])
def test_parameter_checks(kind, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_attack(kind, **bad)


def test_minnorm_linf_cell_through_the_runner(tmp_path, monkeypatch):
    """A stored minnorm-linf cell holds per-image L-inf norms, gets the sanity checks, and its leaderboard draws
    the L-inf robust-accuracy curve."""
    from robustbench_leak.cli import main
    from robustbench_leak.store import STORE_NAME, StoreReader

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    config = tmp_path / "linf.yaml"
    config.write_text(MINNORM_CONFIG.replace("preset: minnorm", "preset: minnorm-linf").replace(
        "{ddn_steps: 3, fmn_steps: 3, batch_size: 12}", "{fmn_steps: 20, batch_size: 12}"))
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    with StoreReader(tmp_path / "out" / STORE_NAME) as store:
        samples = store.newest_samples()
        metrics = set(store.newest_results().metric)
    assert len(samples) == 12 and samples.linf.notna().all() and (samples.linf <= samples.l2 + 1e-9).all()
    assert {"sanity_pgd_success", "linf_median", "optimality_fmn_linf", "passes_deepfool_linf"} <= metrics
    assert (tmp_path / "out" / "plots" / "robustness_curves.png").is_file()
    assert "L-inf budget" in (tmp_path / "out" / "plots" / "robustness_curves.svg").read_text()
