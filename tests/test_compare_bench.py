"""Paired tests from a real run's per-sample records, stored CIs and flags, the fit split, and the bench."""

import json
import sqlite3

import pytest
import torch

from robustbench_leak.attacks import build_attack
from robustbench_leak.config import load_config
from robustbench_leak.data import load_dataset
from robustbench_leak.report.compare import compare_models
from robustbench_leak.run.cells import fit_split
from robustbench_leak.pipeline import run_config
from conftest import stored_info


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import TINY_CONFIG

    root = tmp_path_factory.mktemp("run")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    out = root / "out"
    run_config(load_config(cfg), out, progress=False, log=lambda line: None)
    return cfg, out


def test_stored_metrics_carry_bootstrap_intervals(finished_run):
    _, out = finished_run
    rows = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT rc.attack, m.metric, m.value, m.lo, m.hi FROM metrics m JOIN run_cells rc ON rc.cell_key = m.cell_key").fetchall()
    with_ci = {(a, m): (v, lo, hi) for a, m, v, lo, hi in rows if lo is not None}
    for key in [("clean", "accuracy"), ("deepfool", "rho_mean"), ("deepfool", "success_rate"),
                ("spatial", "robust_accuracy")]:
        assert key in with_ci, key
    for (attack, metric), (v, lo, hi) in with_ci.items():
        assert lo <= v + 1e-12 and v <= hi + 1e-12, (attack, metric, lo, v, hi)


def test_sanity_metric_and_no_flags_for_honest_models(finished_run):
    _, out = finished_run
    con = sqlite3.connect(out / "results.sqlite")
    pgd = [v for (v,) in con.execute("SELECT value FROM metrics WHERE metric = 'sanity_pgd_success'")]
    assert len(pgd) == 2 and all(v >= 0.99 for v in pgd)
    infos = [stored_info(i) for (i,) in con.execute("SELECT info FROM cells WHERE kind = 'eval'")]
    assert not any(i.get("flags") for i in infos)


def test_compare_pairs_the_same_images(finished_run):
    _, out = finished_run
    records = compare_models(out, "small-3x3", "small-7x7-hamming")
    assert {r["attack"] for r in records} == {"clean", "deepfool", "spatial"}
    df = next(r for r in records if r["attack"] == "deepfool")
    c = df["correctness"]
    assert c["n"] == 16 and 0 <= c["p_value"] <= 1
    assert c["only_a_correct"] + c["only_b_correct"] <= 16
    assert "rho" in df and df["rho"]["n"] <= 16
    assert "rho" not in next(r for r in records if r["attack"] == "clean")
    with pytest.raises(ValueError, match="no model 'nope'"):
        compare_models(out, "small-3x3", "nope")
    with pytest.raises(ValueError, match="both 'small-3x3'; compare two different models"):
        compare_models(out, "small-3x3", "small-3x3")
    with pytest.raises(ValueError, match="--attack: 'deepfol' is not an attack label .*did you mean 'deepfool'"):
        compare_models(out, "small-3x3", "small-7x7-hamming", "deepfol")


def test_compare_counts_robust_accuracy_as_the_leaderboard_does(finished_run):
    """A per-example attack's accuracy in compare is the stored robust_accuracy (a misclassified clean image the
    attack moved to its true class is not robust); a global transform and clean count their own accuracy."""
    import robustbench_leak as rb

    _, out = finished_run
    metrics = rb.load_results(out).metrics
    stored = {"clean": "accuracy", "deepfool": "robust_accuracy", "spatial": "robust_accuracy"}
    for r in compare_models(out, "small-3x3", "small-7x7-hamming"):
        for side, model in (("a", "small-3x3"), ("b", "small-7x7-hamming")):
            row = metrics[(metrics.model == model) & (metrics.attack == r["attack"]) & (metrics.seed == r["seed"])
                          & (metrics.metric == stored[r["attack"]])]
            assert r["correctness"][f"accuracy_{side}"] == pytest.approx(row.value.item()), (r["attack"], model)


def test_fit_split_never_overlaps_the_attacked_images():
    data = load_dataset("synthetic", n_train=16, n_test=100)
    attack = build_attack("spatial", "native", mode="global")
    fx, fy = fit_split(attack, data, 60, 40)
    assert torch.equal(fx, data.test_x[60:]) and len(fy) == 40
    with pytest.raises(ValueError, match="overlap"):
        fit_split(attack, data, 61, 40)
    assert fit_split(build_attack("spatial", "native", mode="worst_of_grid"), data, 100, 40) is None
    assert fit_split(build_attack("deepfool", "native"), data, 100, 40) is None


def test_bench_reports_ratios(finished_run, tmp_path):
    from robustbench_leak.bench.attacks import run_bench

    cfg, _ = finished_run
    out = tmp_path / "bench.json"
    res = run_bench(out, str(cfg), "small-7x7-hamming", n_images=16, n_spatial=8, log=lambda line: None)
    saved = json.loads(out.read_text())
    assert saved["deepfool"]["native_vs_art"] == pytest.approx(res["deepfool"]["native_vs_art"])
    assert saved["deepfool"]["fooled_agreement"] >= 0.99
    assert saved["deepfool"]["median_relative_norm_difference"] < 0.05
    # the default engine (candidate pruning) and the exact one, both measured against the same ART run
    assert saved["deepfool"]["native_params"]["keep_candidates"] == 2
    assert "keep_candidates" not in saved["deepfool"]["native_exact_params"]
    assert saved["deepfool"]["native_exact_fooled_agreement"] >= 0.99
    assert saved["deepfool"]["native_exact_vs_art"] > 0
    sdf = saved["superdeepfool"]
    assert sdf["images_per_s"] > 0 and sdf["seconds_vs_deepfool"] > 0 and sdf["median_norm_vs_deepfool"] <= 1.0
    assert saved["spatial"]["n_transforms"] == 5 * 5 * 7 and saved["spatial"]["native_grid_evaluations_per_s"] > 0
    assert set(saved["targets"]) == {"deepfool_native_vs_art_at_least_20x", "deepfool_agreement_at_least_99pct",
                                     "deepfool_median_norm_difference_below_5pct", "spatial_grid_at_least_80pct_of_forward",
                                     "training_harness_at_least_0.9x_plain"}
    assert saved["provenance"]["versions"]["torch"]


def test_compare_does_not_count_a_misclassified_image_flipped_to_its_class(tmp_path):
    import numpy as np

    from robustbench_leak.store import StoreWriter

    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n")
    rows = []
    label = np.zeros(4, dtype=int)
    clean = {"a": np.array([1, 0, 0, 0]), "b": np.array([0, 0, 0, 0])}
    adv = {"a": np.array([0, 1, 0, 0]), "b": np.array([0, 0, 1, 1])}  # a's image 0: misclassified, moved to 0
    for m in ("a", "b"):
        for kind, spec in (("deepfool", {"kind": "deepfool", "engine": "native", "params": {}}),
                           ("spatial", {"kind": "spatial", "engine": "native", "params": {"mode": "global"}})):
            key = f"{m}-{kind}"
            s.record_cell(key, "eval", {"attack": spec}, "r", "cpu", "t", 1.0, {"n": 4},
                          {"label": label, "clean_pred": clean[m], "adv_pred": adv[m]})
            rows.append({"cell_key": key, "kind": "eval", "train_key": f"{m}-0", "model": m, "arch": "x",
                         "dataset": "d", "seed": 0, "attack": kind})
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()
    records = {r["attack"]: r["correctness"] for r in compare_models(tmp_path, "a", "b")}
    assert records["deepfool"]["accuracy_a"] == 0.5 and records["deepfool"]["accuracy_b"] == 0.5
    assert records["spatial"]["accuracy_a"] == 0.75  # one transform for all images: its own accuracy
