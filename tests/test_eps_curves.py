"""The robust-accuracy-vs-epsilon figure from a fabricated store: an L2 and an L-inf minimum-norm attack with
known per-image norms, and AutoAttack cells (found by kind and params) drawn as points on the L-inf axes."""

import numpy as np
import pytest
from report_data import make_run, three_models

from robustbench_leak.attacks import base as attacks_base
from robustbench_leak.attacks import find_attack
from robustbench_leak.report.eps_curves import curve_panels, point_frame
from robustbench_leak.report.leaderboard import build_table, write_outputs
from robustbench_leak.report.loader import load_runs
from robustbench_leak.store import StoreWriter

RUN_ID = "20260101T000000-aaaaaa"  # make_run's
LINF_SPEC = {"kind": "minnorm-linf", "engine": "native", "n_samples": 4, "params": {"fmn_steps": 50, "batch_size": 4}}
AA_SPEC = {"kind": "autoattack", "engine": "native", "n_samples": 4, "params": {"norm": "linf", "eps": 0.3}}
# an epsilon the attack chose (a per-dataset default) is read from the cell's info
AA_DEFAULT_SPEC = {**AA_SPEC, "params": {"norm": "l2", "eps": None}}
# image 0 and 1 fooled at L-inf 0.05 and 0.1, image 2 never fooled, image 3 misclassified (and fooled at 0.2)
LINF = np.array([0.05, 0.1, 0.3, 0.2])
AA_ACCURACY = {0: 0.25, 1: 0.5}  # by seed


class _AutoAttackStandIn(attacks_base.Attack):
    """The kind the AutoAttack engine registers, where this checkout has none yet: the figure must find its
    cells by kind and params alone."""

    kind, engine, description = "autoattack", "native", "AutoAttack (stand-in for the figure's test)"
    defaults = {"norm": "linf", "eps": 0.03}
    metrics = ("robust_accuracy",)

    def run(self, *args, **kwargs):
        raise NotImplementedError


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    if find_attack("autoattack", "native") is None:
        monkeypatch.setitem(attacks_base._ATTACKS, ("autoattack", "native"), _AutoAttackStandIn)
        monkeypatch.setitem(attacks_base.DEFAULT_ENGINE, "autoattack", "native")
    folder = make_run(tmp_path / "run", three_models()[:2], seeds=(0, 1))
    store = StoreWriter(folder / "results.sqlite")
    rows = []
    for model in ("cnn-3x3", "cnn-7x7"):
        for seed in (0, 1):
            tk = f"fake-{model}-{seed}"
            labels = np.arange(4)
            samples = {"label": labels, "clean_pred": np.array([0, 1, 2, 0]), "adv_pred": np.array([5, 5, 2, 5]),
                       "l2": LINF * 3, "rho": LINF, "linf": LINF * (1 + seed)}
            cells = {"minnorm-linf": (LINF_SPEC, {"robust_accuracy": 0.0, "linf_median": 0.1}, samples, None),
                     "autoattack": (AA_SPEC, {"robust_accuracy": AA_ACCURACY[seed]}, None, None),
                     "autoattack-l2": (AA_DEFAULT_SPEC, {"robust_accuracy": 0.5}, None, {"eps": 1.0})}
            for label, (spec, metrics, smp, info) in cells.items():
                key = f"{tk}-{label}"
                store.record_cell(key, "eval", {"train_key": tk, "attack": spec}, RUN_ID, "cpu", "t0", 1.0,
                                  metrics, smp, info=info)
                rows.append({"cell_key": key, "kind": "eval", "train_key": tk, "model": model, "arch": "tomen_cnn",
                             "dataset": "synthetic", "seed": seed, "attack": label})
    store.add_run_cells(RUN_ID, rows)
    store.close()
    return folder


def test_curves_per_norm_with_autoattack_points(run_dir):
    runs = load_runs([run_dir])
    table, _, _ = build_table([run_dir])
    points = point_frame(runs, table)
    linf = points[points.norm == "linf"]
    assert set(points.model) == {"cnn-3x3", "cnn-7x7"} and set(points.norm) == {"linf", "l2"}
    assert sorted(linf[linf.model == "cnn-3x3"].accuracy) == [0.25, 0.5] and set(linf.eps) == {0.3}
    assert set(points[points.norm == "l2"].eps) == {1.0}  # from the cell's info
    panels = {(norm, attack): (curves, pts) for norm, attack, _, curves, pts in curve_panels(runs, table)}
    assert set(panels) == {("l2", "deepfool"), ("linf", "minnorm-linf")}  # each attack on its own norm's axes
    assert set(panels[("l2", "deepfool")][1].eps) == {1.0}  # an L-inf AutoAttack point never lands on L2 axes
    curves, pts = panels[("linf", "minnorm-linf")]
    assert len(pts) == 4 and curves.budget.max() >= 0.3  # the axes reach AutoAttack's epsilon
    c = curves[(curves.model == "cnn-3x3") & (curves.seed == 0)].set_index("budget").accuracy
    # RobustBench's definition: image 3 (misclassified) is robust nowhere, image 2 (never fooled) everywhere
    for eps, expected in [(0.0, 0.75), (0.07, 0.5), (0.15, 0.25), (0.3, 0.25)]:
        assert c[c.index <= eps].iloc[-1] == expected, eps
    c1 = curves[(curves.model == "cnn-3x3") & (curves.seed == 1)].set_index("budget").accuracy
    assert c1[c1.index <= 0.07].iloc[-1] == 0.75  # seed 1's norms are twice seed 0's: its own linf column
    runs[0].specs.pop("minnorm-linf")  # no L-inf curve: AutoAttack's points get a panel of their own
    alone = [(norm, attack, len(pts)) for norm, attack, _, curves, pts in curve_panels(runs, table) if curves.empty]
    assert alone == [("linf", "autoattack", 4)]


def test_leaderboard_plots_include_robust_accuracy_vs_epsilon(run_dir, tmp_path):
    out = tmp_path / "out"
    written = write_outputs([run_dir], out, formats=("md", "html"))
    png, svg = out / "plots" / "robustness_curves.png", out / "plots" / "robustness_curves.svg"
    assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert "L2 budget ε" in text and "L-inf budget ε" in text and "AutoAttack (ε, robust accuracy)" in text
    html = (out / "leaderboard.html").read_text()
    assert "Robust accuracy vs ε" in html and "minnorm-linf" in html
    assert 'data-col="autoattack.robust_accuracy"' in html and 'data-col="autoattack-l2.robust_accuracy"' in html
