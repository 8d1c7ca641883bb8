"""Robust accuracy as RobustBench defines it (issue 29.1): a per-example attack cannot make a misclassified
clean image robust; a global transform keeps the accuracy under the transform. The same definition in the
metric, its bootstrap interval, the legend, the migration of stored cells and the published leaderboards."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from robustbench_leak.attacks.base import attack_class, list_attacks
from robustbench_leak.metrics import ROBUST_ACCURACY_DOCS, prediction_metrics, robust_correct
from robustbench_leak.stats import metric_intervals
from robustbench_leak.store import StoreWriter
from robustbench_leak.store.migrations import fix_robust_accuracy

# 10 images: 6 clean-correct (2 of them fooled), 4 misclassified clean (3 "repaired" by the attack)
Y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
CLEAN = np.array([0, 1, 2, 3, 4, 5, 0, 0, 0, 0])
ADV = np.array([0, 1, 2, 3, 9, 9, 6, 7, 8, 0])


def test_per_example_attacks_count_a_misclassified_clean_image_as_not_robust():
    m = prediction_metrics(Y, CLEAN, ADV)
    assert m["robust_accuracy"] == pytest.approx(4 / 10)
    assert m["robust_accuracy"] <= m["clean_accuracy"]
    assert m["robust_accuracy"] == pytest.approx(m["clean_accuracy"] * (1 - m["success_rate"]))
    assert prediction_metrics(Y, CLEAN, ADV, per_example=False)["robust_accuracy"] == pytest.approx(7 / 10)


def test_a_repairing_attack_with_full_success_has_zero_robust_accuracy():
    adv = np.where(CLEAN == Y, (Y + 1) % 10, Y)  # fools every clean-correct image, repairs every other
    m = prediction_metrics(Y, CLEAN, adv)
    assert m["success_rate"] == 1.0 and m["robust_accuracy"] == 0.0
    lo, hi = metric_intervals({"label": Y, "clean_pred": CLEAN, "adv_pred": adv}, m)["robust_accuracy"]
    assert lo == hi == 0.0


@pytest.mark.parametrize("per_example", [True, False])
def test_intervals_follow_the_metric_definition(per_example):
    samples = {"label": Y, "clean_pred": CLEAN, "adv_pred": ADV}
    m = prediction_metrics(Y, CLEAN, ADV, per_example=per_example)
    lo, hi = metric_intervals(samples, m, per_example=per_example)["robust_accuracy"]
    assert lo <= m["robust_accuracy"] <= hi
    other, _ = metric_intervals(samples, m, per_example=not per_example)["robust_accuracy"]
    assert other != lo  # the two definitions differ on these images


def test_every_attack_says_which_definition_it_uses():
    global_ = {(c.kind, c.engine) for c in list_attacks() if not c.per_example(c.defaults)}
    assert global_ == {("spatial", "native"), ("spatial", "art"), ("lowpass", "native"), ("highpass", "native")}
    spatial = attack_class("spatial", "native")
    assert spatial.per_example({"mode": "worst_of_grid"}) and spatial.per_example({"mode": "worst_of_k"})
    for c in list_attacks():
        if "robust_accuracy" in c.metrics and c.minimum_norm:
            assert c.per_example(c.defaults), c


def test_native_spatial_worst_case_modes_use_the_per_example_definition():
    import torch
    import torch.nn as nn

    class Constant(nn.Module):  # always predicts class 1
        def forward(self, x):
            return torch.tensor([0.0, 1.0]).expand(len(x), 2)

    x, y = torch.rand(6, 1, 8, 8), torch.tensor([1, 1, 1, 0, 0, 0])
    spatial = attack_class("spatial", "native")
    for mode, expected in (("worst_of_grid", 0.5), ("global", 0.5)):
        # even grid counts: the identity is not in the grid, yet a misclassified clean image stays not robust
        attack = spatial(mode=mode, fit_on="attacked", num_translations=2, num_rotations=2, interpolation="nearest")
        r = attack.run(Constant(), x, y, torch.device("cpu"), progress=False)
        assert r.metrics["robust_accuracy"] == pytest.approx(expected)
        assert r.metrics["worst_of_grid_accuracy"] == pytest.approx(0.5)


def _store_with_cells(path):
    store = StoreWriter(path / "results.sqlite")
    store.start_run("r1")
    specs = {"deep": {"kind": "deepfool", "engine": "native", "params": {}, "n_samples": None},
             "spat": {"kind": "spatial", "engine": "native", "params": {"mode": "global"}, "n_samples": None}}
    samples = {"label": Y, "clean_pred": CLEAN, "adv_pred": ADV, "l2": np.ones(10), "rho": np.ones(10)}
    old = float(np.mean(ADV == Y))  # what earlier versions stored for both
    for key, attack in specs.items():
        store.record_cell(key, "eval", {"attack": attack, "train_key": "t"}, "r1", "cpu", "now", 1.0,
                          metrics={"robust_accuracy": old, "success_rate": 0.5},
                          samples=samples, intervals={"robust_accuracy": (0.4, 0.9)})
    store.record_cell("t", "train", {"seed": 3}, "r1", "cpu", "now", 1.0)
    store.close()
    return path / "results.sqlite"


def _rows(file):
    with sqlite3.connect(file) as c:
        return {(k, m): (v, lo, hi) for k, m, v, lo, hi in c.execute("SELECT * FROM metrics")}, \
            sorted(r[0] for r in c.execute("SELECT cell_key FROM cells"))


def test_migration_corrects_per_example_cells_once_and_keeps_keys(tmp_path):
    file = _store_with_cells(tmp_path)
    before, keys = _rows(file)
    summary = fix_robust_accuracy(tmp_path)
    after, keys_after = _rows(file)
    assert keys_after == keys and summary["cells_changed"] == 1 and not summary["already_applied"]
    value, lo, hi = after[("deep", "robust_accuracy")]
    expected = float(np.mean(robust_correct(Y, CLEAN, ADV, True)))
    assert value == pytest.approx(expected) and lo <= value <= hi
    samples = {"label": Y, "clean_pred": CLEAN, "adv_pred": ADV}
    assert (lo, hi) == metric_intervals(samples, {"robust_accuracy": value}, seed=3)["robust_accuracy"]
    assert after[("spat", "robust_accuracy")] == before[("spat", "robust_accuracy")]  # a global transform
    assert after[("deep", "success_rate")] == before[("deep", "success_rate")]
    again = fix_robust_accuracy(tmp_path / "results.sqlite")
    assert again["already_applied"] and _rows(file)[0] == after
    forced = fix_robust_accuracy(tmp_path, force=True)  # recomputing again changes nothing
    assert forced["cells_changed"] == 0 and _rows(file)[0] == after
    assert not list(tmp_path.glob("*-wal")) and not list(tmp_path.glob("*-shm"))


def test_migration_refuses_a_foreign_file_untouched(tmp_path):
    bad = tmp_path / "results.sqlite"
    bad.write_bytes(b"not a database")
    with pytest.raises(ValueError, match="not an SQLite database"):
        fix_robust_accuracy(tmp_path)
    assert bad.read_bytes() == b"not a database"


PUBLISHED = sorted(p.parent for p in (REPO / "results").glob("*/leaderboard.csv"))


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_no_published_leaderboard_shows_robustness_a_full_success_attack_cannot_leave(folder):
    board = pd.read_csv(folder / "leaderboard.csv")
    meta = json.loads((folder / "leaderboard.meta.json").read_text())
    for col in [c for c in board.columns if c.endswith(".success_rate")]:
        label = col.rsplit(".", 1)[0]
        if f"{label}.robust_accuracy" in board:
            full = board[col] >= 1.0
            assert (board.loc[full, f"{label}.robust_accuracy"] == 0).all(), (folder.name, label)
            assert meta["columns"][f"{label}.robust_accuracy"].startswith(ROBUST_ACCURACY_DOCS[True][:40])
