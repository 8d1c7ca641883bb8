"""Attack strength: AttackBench optimality, passes per image and budgets, gradient-masking checks."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustbench_leak.attacks import attack_class, build_attack
from robustbench_leak.attacks.masking import MaskingSettings, run_checks
from robustbench_leak.attacks.native_deepfool import deepfool_batch, iterations_within
from robustbench_leak.attacks.optimality import PassCounter, curve_area, minimum_share, optimality
from robustbench_leak.config.schema import MaskingCfg, ResolvedAttack
from robustbench_leak.config.training import TrainSettings
from robustbench_leak.data import load_dataset
from robustbench_leak.models import Normalized, create_model
from robustbench_leak.run.training import train_model
from robustbench_leak.run.tasks import RunContext

CPU = torch.device("cpu")
INF = np.inf


def test_optimality_matches_a_hand_computed_example():
    # 4 images, the last misclassified; per image best: 1, 1, 3 (max_dist 3), misclassified adds nothing
    correct = np.array([True, True, True, False])
    norms = {"a": np.array([1.0, 2.0, INF, 0.5]), "b": np.array([2.0, 1.0, 3.0, 0.1]),
             "c": np.array([1.0, 1.0, 3.0, 9.0])}
    # best area (1 + 1 + 3) / 4 = 1.25; clean accuracy x max_dist = 0.75 x 3 = 2.25
    # a: (1 + 2 + min(inf, 3)) / 4 = 1.5 -> 1 - 0.25 / 1.0 = 0.75; b: (2 + 1 + 3) / 4 = 1.5 -> 0.75; c: best -> 1
    opt = optimality(norms, correct)
    assert opt == pytest.approx({"a": 0.75, "b": 0.75, "c": 1.0})
    # shares over the 3 fooled clean-correct images; ties go to the first attack in order
    # image 1: a (tie with c), 2: b (tie with c), 3: b (tie with c)
    assert minimum_share(norms, correct) == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})


def test_curve_area_is_the_exact_area_under_the_step_curve():
    rng = np.random.default_rng(0)
    norms = np.where(rng.random(50) < 0.2, INF, rng.exponential(1.0, 50))
    correct = rng.random(50) < 0.8
    max_dist = 2.0
    eps = (np.arange(100_000) + 0.5) * max_dist / 100_000  # midpoints of a fine grid
    curve = (correct[None, :] & (norms[None, :] > eps[:, None])).mean(axis=1)
    assert curve_area(norms, correct, max_dist) == pytest.approx(curve.mean() * max_dist, rel=1e-3)


def test_optimality_of_an_attack_that_fools_nothing_is_zero_and_nan_without_any_minimum():
    correct = np.array([True, True])
    assert optimality({"a": np.array([1.0, 2.0]), "z": np.array([INF, INF])}, correct) == pytest.approx(
        {"a": 1.0, "z": 0.0})
    assert np.isnan(optimality({"z": np.array([INF, INF])}, correct)["z"])


@pytest.fixture(scope="module")
def tiny():
    """A small CNN trained on synthetic gratings (1-2 s; most test images correct), and 16 test images."""
    data = load_dataset("synthetic", n_train=512, n_test=16)
    torch.manual_seed(0)
    model = Normalized(create_model("tomen_cnn", 10, 1, n_layers=3, width=8, kernel_size=5), data.mean, data.std)
    train_model(model, data, TrainSettings(lr=0.1, epochs=3, batch_size=32), 0, CPU, progress=False)
    return model.eval().requires_grad_(False), data.test_x, data.test_y


def test_pass_counter_counts_rows_of_forward_and_backward_passes(tiny):
    model, x, _ = tiny
    counter = PassCounter(model)
    with torch.no_grad():
        counter(x)
    adv = x.clone().requires_grad_(True)
    out = counter(adv)
    torch.autograd.grad(out[:, 0].sum(), adv, retain_graph=True)
    torch.autograd.grad(out[:, 1].sum(), adv)
    assert (counter.forward_rows, counter.backward_rows) == (2 * len(x), 2 * len(x))


@pytest.mark.parametrize("kind, params, budget", [("ddn", {"steps": 12}, 21), ("fmn", {"steps": 12}, 16),
                                                  ("deepfool", {"nb_grads": 10}, 30),
                                                  ("minnorm", {"ddn_steps": 12, "fmn_steps": 12}, 23),
                                                  ("superdeepfool", {}, 30)])
def test_every_minimum_norm_attack_respects_its_budget(tiny, kind, params, budget):
    model, x, y = tiny
    free = build_attack(kind, **params).run(model, x, y, CPU, progress=False).metrics
    capped = build_attack(kind, **params, budget=budget).run(model, x, y, CPU, progress=False).metrics
    members = [k for k in capped if k.startswith("passes_")] or ["passes"]
    for key in members:  # minnorm: every member within the budget; the others: the attack itself
        assert 0 < capped[key] <= budget
    assert free["passes"] > capped["passes"]  # the budget binds here


def test_deepfool_iterations_within_a_budget():
    # clean forward 1, first iteration 9 backward + 2 forward = 11, later (keep 2) 2 + 2 = 4
    assert iterations_within(50, 12, k=10, keep_candidates=2) == 1
    assert iterations_within(50, 12 + 4 * 3, k=10, keep_candidates=2) == 4
    assert iterations_within(50, 11, k=10, keep_candidates=None) == 0
    assert iterations_within(3, None, k=10, keep_candidates=None) == 3


def test_deepfool_budget_counted_exactly(tiny):
    model, x, _ = tiny
    counter = PassCounter(model)
    _, iters = deepfool_batch(counter, x, nb_grads=10, max_iter=50, overshoot=0.02, budget=23)
    assert counter.passes <= 23 * len(x) and int(iters.max()) == 2  # 1 + 11 + 11


@pytest.mark.parametrize("kind", ["deepfool", "ddn", "fmn", "minnorm", "superdeepfool"])
def test_a_null_budget_leaves_cache_keys_unchanged(kind):
    cls = attack_class(kind)
    params = cls.check_params({})
    spec = ResolvedAttack(label=kind, kind=kind, engine=cls.engine, n_samples=10, params=params, preset=kind).spec()
    assert "budget" not in spec["params"]
    with_budget = ResolvedAttack(label=kind, kind=kind, engine=cls.engine, n_samples=10,
                                 params=cls.check_params({"budget": 100}), preset=kind).spec()
    assert with_budget["params"]["budget"] == 100


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "many"])
def test_a_bad_budget_is_refused_when_the_attack_is_built(bad):
    with pytest.raises(ValueError, match="parameter 'budget' must be an integer >= 1"):
        build_attack("ddn", budget=bad)


class Quantised(nn.Module):
    """``model`` behind input quantisation to 2 levels: gradients are zero almost everywhere (masked)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x))


def _masking(model, x, y, **params):
    attack = build_attack("minnorm", ddn_steps=20, fmn_steps=20, **params)
    result = attack.run(model, x, y, CPU, progress=False)
    return attack, result, attack.check_masking(model, x, y, result, CPU, MaskingSettings())


@pytest.fixture(scope="module")
def normal(tiny):
    return _masking(*tiny)


def test_masking_checks_clear_on_a_normal_model(normal):
    _, result, flags = normal
    checks = result.info["masking"]["checks"]
    assert set(checks) == {"unbounded_success", "more_steps", "black_box", "pgd_to_zero"}
    assert flags == [] and all(c["passed"] for c in checks.values()) and result.metrics["masking_failed"] == 0
    assert checks["black_box"]["median_ratio"] < 1  # the white-box minimum is well below the black-box one
    acc = checks["pgd_to_zero"]["accuracy"]
    assert acc[-1] == 0 and acc[0] > 0  # PGD at the ensemble's median norm leaves some images; at 8x none


def test_masking_checks_trip_on_a_masked_model(tiny):
    model, x, y = tiny
    _, result, flags = _masking(Quantised(model).eval(), x, y, budget=60)  # DeepFool stalls: cap its iterations
    checks = result.info["masking"]["checks"]
    assert not checks["black_box"]["passed"] and not checks["pgd_to_zero"]["passed"]
    assert not checks["unbounded_success"]["passed"] and result.metrics["masking_failed"] >= 3
    assert any("black-box search" in f for f in flags)
    assert any("L2 PGD" in f for f in flags)


def test_more_steps_check_trips_when_fewer_steps_do_better(tiny, normal):
    model, x, y = tiny
    _, result, _ = normal
    full = result.transient["member_norms"]
    shrunk = {m: np.where(np.isfinite(v), v * 0.5, v) for m, v in full.items() if m in ("ddn", "fmn")}
    record, flags = run_checks(model, x, y, result.samples, result.metrics["success_rate"], full,
                               lambda *_: shrunk, {"ddn": 20, "fmn": 20}, CPU, MaskingSettings())
    assert not record["checks"]["more_steps"]["passed"] and record["checks"]["more_steps"]["value"] > 1.9
    assert any("more steps should never hurt" in f for f in flags)


def test_masking_settings_match_the_config_entry():
    # the attacks' own settings and the config's masking: entry must stay the same fields with the same defaults
    assert dataclasses.asdict(MaskingSettings()) == MaskingCfg().model_dump()


def test_masking_config_entry(tmp_path):
    from robustbench_leak.config import ConfigError, load_config
    from robustbench_leak.run.plan import plan

    base = ("name: m\nseeds: [0]\ndatasets: [{name: synthetic, n_train: 32, n_test: 8}]\n"
            "models: [{name: a, arch: tomen_cnn, options: {n_layers: 2, width: 4}}]\n"
            "attacks: [clean, {preset: minnorm, n_samples: 8}]\n")
    keys = {}
    for name, extra in [("default", ""), ("explicit", "masking: {images: 16}\n"), ("off", "masking: false\n"),
                        ("more", "masking: {images: 32, directions: 8}\n")]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(base + extra)
        cfg = load_config(path)
        _, evals = plan(cfg)
        keys[name] = [e.key for e in evals]
        if name == "off":
            assert cfg.run.masking.enabled is False and evals[1].masking["enabled"] is False
    assert keys["default"] == keys["explicit"]  # the defaults, written or not, keep the stored cells' keys
    assert keys["off"][0] == keys["default"][0] and keys["off"][1] != keys["default"][1]  # only minnorm's key
    assert keys["more"][1] not in (keys["default"][1], keys["off"][1])
    path = tmp_path / "bad.yaml"
    path.write_text(base + "masking: {images: 0}\n")
    with pytest.raises(ConfigError, match="masking.images"):
        load_config(path)


@pytest.mark.parametrize("masking", ["", "masking: false\n"])
def test_eval_cell_runs_the_masking_checks_unless_turned_off(tmp_path, masking):
    from robustbench_leak.config import load_config
    from robustbench_leak.run.cells import eval_cell, train_cell
    from robustbench_leak.run.plan import plan

    path = tmp_path / "c.yaml"
    path.write_text("name: m\nseeds: [0]\ndatasets: [{name: synthetic, n_train: 64, n_test: 8}]\n"
                    "models: [{name: a, arch: tomen_cnn, options: {n_layers: 2, width: 4}}]\ntraining: {epochs: 1}\n"
                    "attacks: [{preset: minnorm, n_samples: 8, params: {ddn_steps: 4, fmn_steps: 4, budget: 30}}]\n"
                    + masking)
    trains, evals = plan(load_config(path))
    ctx = RunContext(device_name="cpu", cache_dir=str(tmp_path / "cache"), progress=False)
    _, weights = train_cell(trains[0], ctx, record=False)
    cell = eval_cell(evals[0], ctx, weights)["cell"]
    if masking:
        assert "masking" not in cell["info"] and "masking_failed" not in cell["metrics"]
    else:
        checks = cell["info"]["masking"]["checks"]
        assert cell["metrics"]["masking_failed"] == sum(not c["passed"] for c in checks.values())
        failed = [c for name, c in checks.items() if not c["passed"] and name != "unbounded_success"]
        assert len([f for f in cell["info"].get("flags", []) if f.startswith("gradient masking check")]) == len(failed)


def test_strength_command_and_leaderboard_columns(tmp_path, capsys):
    """A tiny run with a minnorm cell: ``rbleak strength`` prints one row per member, the leaderboard has the
    optimality and minimum-share columns, and the masking checks are summarised."""
    import pandas as pd

    from robustbench_leak.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("name: m\nseeds: [0]\ndatasets: [{name: synthetic, n_train: 64, n_test: 8}]\n"
                    "models: [{name: a, arch: tomen_cnn, options: {n_layers: 2, width: 4}}]\ntraining: {epochs: 1}\n"
                    "attacks: [{preset: minnorm, n_samples: 8, params: {ddn_steps: 4, fmn_steps: 4, budget: 30}}]\n"
                    f"cache_dir: {tmp_path / 'cache'}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert {"minnorm.optimality_fmn", "minnorm.minimum_share_ddn", "minnorm.passes"} <= set(board.columns)
    capsys.readouterr()
    assert main(["strength", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| a |")]
    assert [r.split("|")[2].strip() for r in rows] == ["ddn", "deepfool", "fmn", "superdeepfool"]
    assert "Gradient-masking checks" in out


def test_strength_table_says_when_cells_predate_it():
    from robustbench_leak.report.attack_strength import strength_frame, strength_markdown

    assert "stored per-member strength" in strength_markdown(strength_frame([]))


def test_strength_of_runs_without_an_ensemble_says_so(tmp_path):
    """A run with no minnorm cell is not told to rerun cells it never had."""
    from robustbench_leak.config import load_config
    from robustbench_leak.pipeline import run_config
    from robustbench_leak.report.attack_strength import strength_report

    (tmp_path / "c.yaml").write_text("""
name: c
device: cpu
datasets: [{name: synthetic, n_train: 32, n_test: 16}]
training: {epochs: 1, batch_size: 16}
models: [{name: m, arch: tomen_cnn, options: {n_layers: 2, width: 4}}]
attacks: [clean]
""")
    run_config(load_config(tmp_path / "c.yaml"), tmp_path / "out", progress=False, formats=(), log=lambda line: None)
    text = strength_report([tmp_path / "out"])
    assert text.startswith("No minimum-norm ensemble (minnorm, minnorm-linf) cells in these runs") and "rerun" not in text


def test_masking_summary_names_the_cells_and_checks_that_ran():
    """The summary counts every cell that ran checks (minnorm and autoattack alike) and names the checks those
    cells ran, not a fixed list; a failed check is listed with its cell."""
    from types import SimpleNamespace

    import pandas as pd

    from robustbench_leak.report.attack_strength import masking_lines

    def cell(attack, checks, seed=0):
        info = {"masking": {"checks": {n: {"passed": ok} for n, ok in checks.items()}, "seconds": 1.0},
                "attack_seconds": 10.0}
        return {"model": "a", "attack": attack, "seed": seed, "info": info}

    minnorm = {"unbounded_success": True, "more_steps": True, "black_box": True, "pgd_to_zero": True}
    run = SimpleNamespace(label="r", cells=pd.DataFrame([cell("minnorm", minnorm), cell("minnorm", minnorm, 1),
                                                         {"model": "a", "attack": "clean", "seed": 0, "info": None}]))
    assert masking_lines([run]) == [
        "Gradient-masking checks: all clear in the 2 minnorm cells that ran them (unbounded success, more steps, "
        "black-box search, PGD to zero; docs/attack-strength.md). The checks took 2.0 s, 10% of the 20.0 s the "
        "attacks took in those cells."]
    run.cells = pd.DataFrame([cell("minnorm", minnorm), cell("autoattack-linf", {"square_after_gradient": False})])
    head, *failed = masking_lines([run])
    assert head.startswith("Gradient-masking checks failed in 1 of the 2 cells (1 minnorm, 1 autoattack-linf)")
    assert "Square after the gradient members" in head
    assert failed == ["- a / autoattack-linf / seed 0 (r): failed square_after_gradient"]
