"""Spatial sensitivity of a claim: paired per-transform differences from the cells' ``per_transform`` info."""

import itertools

import numpy as np
import pytest

from robustbench_leak.report.claim_set import ClaimSet
from robustbench_leak.report.claims import evaluate_claims
from robustbench_leak.report.claims_md import to_markdown, write_figures
from robustbench_leak.report.spatial_sensitivity import sensitivity, transform_table
from robustbench_leak.store import StoreWriter

GRID = list(itertools.product((-2, 0, 2), (-2, 0, 2), (-30.0, -10.0, 0.0, 10.0, 30.0)))  # tx, ty, rot


def per_transform(acc_fn, seed):
    tx, ty, rot = (list(v) for v in zip(*GRID))
    return {"tx": tx, "ty": ty, "rot": rot, "accuracy": [acc_fn(x, y, r) + 0.01 * seed for x, y, r in GRID]}


def acc_a(x, y, r):  # A is better under negative rotations, worse under positive ones
    return 0.8 - abs(r) / 60 + (0.04 if r < 0 else -0.03 if r > 0 else 0.0)


def acc_b(x, y, r):
    return 0.8 - abs(r) / 60


def test_sensitivity_pairs_transforms_and_splits_rotation_directions():
    infos_a = {s: {"mode": "global", "per_transform": per_transform(acc_a, s)} for s in (0, 1, 2)}
    infos_b = {s: {"mode": "global", "per_transform": per_transform(acc_b, 0)} for s in (0, 1, 2)}
    sens = sensitivity(infos_a, infos_b)
    assert sens.source == "per_transform" and sens.seeds == [0, 1, 2] and len(sens.table) == len(GRID)
    # A's seed offsets are +0, +0.01, +0.02: the mean over seeds adds 0.01
    want = np.mean([acc_a(*t) - acc_b(*t) for t in GRID]) + 0.01
    assert sens.grid_a - sens.grid_b == pytest.approx(want)
    assert sens.grid_effect_per_seed == pytest.approx([want - 0.01, want, want + 0.01])
    assert sens.by_direction["-"][2] == pytest.approx(0.05) and sens.by_direction["+"][2] == pytest.approx(-0.02)
    assert sens.by_direction["0"][2] == pytest.approx(0.01)
    assert sens.by_rotation == pytest.approx({-30.0: 0.05, -10.0: 0.05, 0.0: 0.01, 10.0: -0.02, 30.0: -0.02})
    assert len(sens.top) == 5 and set(sens.top.rot) == {30.0}  # strongest: +30 deg, where A is weakest too


def test_old_grid_info_is_read_and_missing_info_gives_none():
    grid = [{"shift_rows": 1, "shift_cols": -1, "rotation_deg": 10.0, "accuracy": 0.5}]
    frame, source = transform_table({"grid": grid})
    assert source == "grid" and frame.iloc[0].tolist() == [-1.0, 1.0, 10.0, 0.5]  # tx = cols, ty = rows
    assert transform_table({"mode": "global"}) is None
    assert sensitivity({0: {"mode": "global"}}, {0: {"mode": "global"}}) is None


def _store_with_spatial(tmp_path, with_grid: bool):
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n")
    rows = []
    rng = np.random.default_rng(0)
    for model, fn in (("a", acc_a), ("b", acc_b)):
        for seed in (0, 1, 2):
            correct = rng.random(200) < (0.3 if model == "a" else 0.2)
            info = {"mode": "global", **({"per_transform": per_transform(fn, seed)} if with_grid else {})}
            key = f"{model}-{seed}"
            s.record_cell(key, "eval", {"attack": {"kind": "spatial"}}, "r", "cpu", "t", 1.0, {"n": 200},
                          {"label": np.zeros(200, int), "clean_pred": np.zeros(200, int),
                           "adv_pred": np.where(correct, 0, 1)}, info)
            rows.append({"cell_key": key, "kind": "eval", "train_key": key, "model": model, "arch": "x",
                         "dataset": "d", "seed": seed, "attack": "spatial"})
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()


CLAIMS = ClaimSet.model_validate({"description": "d", "config": "x.yaml", "claims": [
    {"title": "a beats b under the spatial attack", "kind": "directional",
     "comparisons": [{"a": "a", "b": "b", "attack": "spatial", "metric": "correct"}]}]})


def test_report_shows_sensitivity_with_heatmap(tmp_path):
    _store_with_spatial(tmp_path, with_grid=True)
    claims, _ = evaluate_claims(tmp_path, CLAIMS)
    written = write_figures(claims, tmp_path / "plots")
    assert len(written) == 1 and written[0].stat().st_size > 0
    md = to_markdown(claims, base=tmp_path)
    assert "per rotation, averaged over the shifts: -30°: +4.00, -10°: +4.00, +0°: +0.00, +10°: -3.00" in md
    assert "averaged over the grid" in md and "negative rotations only" in md and "positive rotations only" in md
    assert "](plots/spatial_diff_spatial_a_vs_b.png)" in md


def test_report_says_sensitivity_is_unavailable(tmp_path):
    _store_with_spatial(tmp_path, with_grid=False)
    claims, _ = evaluate_claims(tmp_path, CLAIMS)
    md = to_markdown(claims)
    assert "to the transform: not available for this run" in md
