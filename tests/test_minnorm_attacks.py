"""DDN and FMN against Foolbox 3 on the same model and inputs; the minnorm ensemble; convergence flags.
adv-lib's references are in test_minnorm_references.py."""

from pathlib import Path

import eagerpy as ep
import foolbox as fb
import numpy as np
import pytest
import torch
import yaml
from foolbox.devutils import atleast_kd, flatten

from robustbench_leak.attacks import attack_class, build_attack
from robustbench_leak.attacks.native_minnorm import DEEPFOOL_EXACT
from robustbench_leak.attacks.norm_results import CONVERGENCE_TOLERANCE, convergence_signal, tail_snapshot_step
from robustbench_leak.run.cells import sanity_checks
from robustbench_leak.runtime import predict

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent
N_IMAGES, STEPS = 32, 100  # the references converge in 100 steps on this model (checked via converged_*)


class ProjectingL2FMN(fb.attacks.L2FMNAttack):
    """Foolbox's L2 FMN with its projection corrected: 3.3.4 computes ``min(1, norms / norms)``, always 1."""

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon: ep.Tensor) -> ep.Tensor:
        norms = ep.maximum(flatten(x - x0).norms.l2(axis=-1), 1e-12)
        return x0 + (x - x0) * atleast_kd(ep.minimum(1, epsilon / norms), x.ndim)


@pytest.fixture(scope="module")
def setup(small_windowed_cnn):
    return small_windowed_cnn


FMN_AS_FOOLBOX = {"bound_mask": False, "start": "clean", "projection": "ball"}  # the paper's loop, no starting point


@pytest.fixture(scope="module")
def native(setup):
    model, x, y, _ = setup
    return {kind: build_attack(kind, steps=STEPS, batch_size=32, **params).run(model, x, y, CPU, progress=False)
            for kind, params in (("ddn", {}), ("fmn", FMN_AS_FOOLBOX))}


def _foolbox(attack, model, x, clean) -> tuple[np.ndarray, np.ndarray]:
    """Foolbox's examples' norms and fooled mask; it attacks the clean prediction, as the native engines do."""
    adv = attack.run(fb.PyTorchModel(model, bounds=(0, 1)), x, fb.criteria.Misclassification(clean))
    return (adv - x).flatten(1).norm(dim=1).numpy(), predict(model, adv, CPU).numpy() != clean.numpy()


@pytest.mark.parametrize("kind, reference", [("ddn", fb.attacks.DDNAttack(steps=STEPS)),
                                             ("fmn", ProjectingL2FMN(steps=STEPS))])
def test_native_engines_agree_with_foolbox(setup, native, kind, reference):
    model, x, _, clean = setup
    ref_l2, ref_fooled = _foolbox(reference, model, x, clean)
    s = native[kind].samples
    fooled = s["adv_pred"] != s["clean_pred"]
    assert ref_fooled.mean() > 0.9  # the comparison is about real adversarial examples
    np.testing.assert_array_equal(fooled, ref_fooled)  # the same images fooled
    assert np.median(s["l2"][fooled]) == pytest.approx(np.median(ref_l2[ref_fooled]), rel=0.05)
    assert native[kind].metrics[f"converged_{kind}"] < CONVERGENCE_TOLERANCE  # converged: the steps suffice
    assert "flags" not in native[kind].info
    assert np.isfinite(s["hf_share"][fooled]).all() and np.isnan(s["hf_share"][~fooled]).all()


def test_minnorm_is_the_per_image_minimum_over_its_members(setup, native):
    model, x, y, _ = setup
    ens = build_attack("minnorm", ddn_steps=STEPS, fmn_steps=STEPS, batch_size=32).run(model, x, y, CPU,
                                                                                      progress=False)
    members = {"ddn": native["ddn"],
               "deepfool": build_attack("deepfool", "native", batch_size=32, **DEEPFOOL_EXACT).run(
                   model, x, y, CPU, progress=False),
               "fmn": build_attack("fmn", steps=STEPS, batch_size=32).run(model, x, y, CPU, progress=False),
               "superdeepfool": build_attack("superdeepfool", batch_size=32).run(model, x, y, CPU, progress=False)}
    e = ens.samples
    ens_fooled = e["adv_pred"] != e["clean_pred"]
    union = np.zeros(len(y), bool)
    for name, res in members.items():
        s = res.samples
        fooled = s["adv_pred"] != s["clean_pred"]
        union |= fooled
        assert np.all(e["l2"][fooled] <= s["l2"][fooled] * (1 + 1e-6))
        correct = s["clean_pred"] == s["label"]
        ratio = np.median(s["l2"][fooled & correct] / e["l2"][fooled & correct])
        assert ens.metrics[f"overestimate_{name}"] == pytest.approx(ratio)
        assert ens.metrics[f"success_{name}"] == pytest.approx(res.metrics["success_rate"])
    np.testing.assert_array_equal(ens_fooled, union)  # success is the union of the members'
    assert ens.metrics["converged_ddn"] == pytest.approx(native["ddn"].metrics["converged_ddn"])
    assert ens.metrics["overestimate_deepfool"] > 1.0  # DDN/FMN beat DeepFool somewhere, as on real models
    assert sum(ens.info["smallest_by"].values()) == int(np.sum(ens_fooled & (e["clean_pred"] == e["label"])))
    assert ens.info["spectrum"]["n"] == sum(ens.info["smallest_by"][m] for m in members)


def test_unconverged_run_is_flagged_and_sanity_checked(setup):
    model, x, y, _ = setup
    short = build_attack("ddn", steps=4).run(model, x[:16], y[:16], CPU, progress=False)
    assert short.metrics["converged_ddn"] > CONVERGENCE_TOLERANCE
    assert any("DDN did not converge" in f for f in short.info["flags"])
    # the runner keeps the attack's flag and adds the DeepFool sanity checks to every minimum-norm attack
    flags = sanity_checks("ddn", model, x[:16], y[:16], short, CPU, seed=0)
    assert flags[0] == short.info["flags"][0] and "sanity_pgd_success" in short.metrics
    assert any("still classified" in f for f in flags)  # 4 steps leave images unfooled
    assert [k for k in ("deepfool", "ddn", "fmn", "minnorm", "superdeepfool", "spatial", "pgd")
            if attack_class(k).minimum_norm] == ["deepfool", "ddn", "fmn", "minnorm", "superdeepfool"]
    assert attack_class("deepfool", "art").minimum_norm


def test_convergence_signal():
    final = np.array([1.0, 2.0, np.inf, 1.0])
    before = np.array([1.0, 2.2, np.inf, np.inf])  # 0, 10%, never fooled (left out), fooled late (inf)
    assert convergence_signal(before, final) == pytest.approx(0.1)
    assert np.isnan(convergence_signal(np.full(2, np.inf), np.full(2, np.inf)))
    assert tail_snapshot_step(200) == 179 and tail_snapshot_step(5) == 3 and tail_snapshot_step(1) == -1


@pytest.mark.parametrize("kind, bad", [("ddn", {"gamma": 1.0}), ("ddn", {"steps": 0}), ("ddn", {"init_epsilon": 0.0}),
                                       ("fmn", {"gamma_final": 0.0}), ("fmn", {"alpha_init": -1.0}),
                                       ("fmn", {"projection": "cube"}), ("fmn", {"start": "ddn"}),
                                       ("fmn", {"binary_search_steps": -1}),
                                       ("minnorm", {"ddn_steps": 0}), ("minnorm", {"batch_size": 0})])
def test_parameter_ranges(kind, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_attack(kind, **bad)


def test_presets_build_and_minnorm_runs_deepfool_exact():
    for name in ("ddn", "fmn", "minnorm", "superdeepfool"):
        preset = yaml.safe_load((REPO / "attacks" / f"{name}.yaml").read_text())
        assert build_attack(preset["attack"], preset["engine"], **preset["params"]).minimum_norm
    exact = yaml.safe_load((REPO / "attacks" / "deepfool-exact.yaml").read_text())["params"]
    assert DEEPFOOL_EXACT == {k: v for k, v in exact.items() if k != "batch_size"}


MINNORM_CONFIG = """
name: tiny-minnorm
device: cpu
seeds: [0]
datasets:
  - name: synthetic
    n_train: 256
    n_test: 16
training: {optimizer: sgd, lr: 0.1, epochs: 2, batch_size: 32, schedule: cosine}
models:
  - name: small-5x5
    arch: tomen_cnn
    options: {n_layers: 3, width: 8, kernel_size: 5, window: hamming}
attacks:
  - preset: minnorm
    n_samples: 12
    params: {ddn_steps: 3, fmn_steps: 3, batch_size: 12}
"""


def test_minnorm_cell_through_the_runner(tmp_path, monkeypatch):
    """A stored minnorm cell: spectra per sample, the mean spectrum and the convergence flag in its info."""
    from robustbench_leak.cli import main
    from robustbench_leak.store import STORE_NAME, StoreWriter

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    config = tmp_path / "minnorm.yaml"
    config.write_text(MINNORM_CONFIG)
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    store = StoreWriter(tmp_path / "out" / STORE_NAME)
    try:
        run_id = store.latest_run()["run_id"]
        cells = store.eval_cells(run_id)
        assert len(cells) == 1
        info = store.cell_info(cells.cell_key[0])
        samples = store.samples(cells.cell_key[0])
        metrics = set(store.results(run_id).metric)
    finally:
        store.close()
    assert any("did not converge" in f for f in info["flags"])  # 3 steps: the attack's own flag survives
    assert {"sanity_pgd_success", "overestimate_deepfool", "converged_fmn", "rho_mean"} <= metrics
    fooled = samples.adv_pred != samples.clean_pred
    assert samples.hf_share[fooled].notna().all() and samples.hf_share[~fooled].isna().all()
    assert set(info["spectrum"]) >= {"freq", "mean", "lo", "hi", "n"} and info["member_seconds"].keys() == {
        "deepfool", "ddn", "fmn", "superdeepfool"}
