"""Claims report: effects, joint-bootstrap CIs, paired tests and verdicts from stored per-sample results."""

import numpy as np
import pytest

from robustbench_leak.report.claims import (compare, coverage_lines, directional_verdict, equivalence_verdict,
                                            evaluate_claims, to_markdown)
from robustbench_leak.store import Store

N = 400


def add_model(store: Store, run_id: str, model: str, seed: int, attack: str, correct: np.ndarray,
              rho: np.ndarray | None = None) -> dict:
    label = np.zeros(N, dtype=int)
    pred = np.where(correct, 0, 1)
    key = f"{model}-{seed}-{attack}"
    samples = {"label": label, "clean_pred": pred if attack == "clean" else np.zeros(N, dtype=int), "adv_pred": pred}
    if rho is not None:
        samples.update(l2=rho, rho=rho)
    store.record_cell(key, "eval", {"attack": {"kind": attack}}, run_id, "cpu", "t", 1.0, {"n": N}, samples)
    return {"cell_key": key, "kind": "eval", "train_key": f"{model}-{seed}", "model": model, "arch": "x",
            "dataset": "d", "seed": seed, "attack": attack}


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    s = Store(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\ndescription: CPU-scale protocol, width 4\n")
    rows = []
    for seed in (0, 1):
        good = rng.random(N) < 0.9  # ~90% correct
        rows.append(add_model(s, "r", "better", seed, "clean", good))
        rows.append(add_model(s, "r", "worse", seed, "clean", good & (rng.random(N) < 0.8)))  # strictly fewer
        rows.append(add_model(s, "r", "twin", seed, "clean", good))  # identical correctness
        base = rng.random(N) * 0.1 + 0.05
        rows.append(add_model(s, "r", "better", seed, "deepfool", np.ones(N, bool), base * 1.2))
        rows.append(add_model(s, "r", "worse", seed, "deepfool", np.ones(N, bool), base))
    s.add_run_cells("r", rows)
    s.finish_run("r")
    yield s
    s.close()


def test_directional_effect_ci_and_test(store):
    c = compare(store, "r", "better", "worse", "clean", "correct")
    assert c.n_seeds == 2 and c.effect > 0.1
    assert c.ci[0] > 0 and c.ci[0] <= c.effect <= c.ci[1]
    assert c.test["only_b_correct"] == 0 and c.test["p_value"] < 1e-6
    assert directional_verdict([c]) == "reproduced"
    reverse = compare(store, "r", "worse", "better", "clean", "correct")
    assert reverse.effect == pytest.approx(-c.effect) and directional_verdict([reverse]) == "not reproduced"


def test_rho_uses_wilcoxon(store):
    c = compare(store, "r", "better", "worse", "deepfool", "rho")
    assert c.test["test"].startswith("Wilcoxon") and c.test["p_value"] < 1e-6
    assert c.effect == pytest.approx(0.2 * c.mean_b, rel=1e-6)  # rho is 1.2x on every image


def test_equivalence(store):
    same = compare(store, "r", "twin", "better", "clean", "correct")
    assert same.effect == 0 and same.ci == (0.0, 0.0)
    assert equivalence_verdict([same]) == "reproduced"
    different = compare(store, "r", "worse", "better", "clean", "correct")
    assert equivalence_verdict([different]) == "not reproduced"
    assert directional_verdict([same]) == "inconclusive"


def test_evaluate_claims_marks_missing_models(store, tmp_path):
    claims, _ = evaluate_claims(tmp_path, [("A beats B", "directional", [("better", "worse", "clean", "correct")]),
                                           ("needs absent models", "directional",
                                            [("cnn-7x7-hamming", "cnn-3x3", "clean", "correct")])])
    assert [c.verdict for c in claims] == ["reproduced", "not evaluated"]
    md = to_markdown(claims)
    assert "Verdict: reproduced" in md and "missing from the store: cnn-7x7-hamming vs cnn-3x3" in md


def test_coverage_names_complete_and_missing_seeds(store, tmp_path):
    line = coverage_lines(tmp_path)[0]
    assert "every planned cell finished" in line and "better: seeds 0, 1 complete" in line
    # a planned cell that never ran makes the run incomplete, and says which seed and how much is missing
    store.add_run_cells("r", [{"cell_key": "absent", "kind": "eval", "train_key": "worse-2", "model": "worse",
                               "arch": "x", "dataset": "d", "seed": 2, "attack": "clean"}])
    line = coverage_lines(tmp_path)[0]
    assert "incomplete run" in line and "worse: seeds 0, 1 complete; incomplete: 2 (0/1)" in line


def test_claims_cli_preamble(store, tmp_path):
    from robustbench_leak.cli import main

    pre = tmp_path / "pre.md"
    pre.write_text("# Report\n\nprotocol text\n")
    out = tmp_path / "REPORT.md"
    main(["claims", str(tmp_path), "--preamble", str(pre), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Report\n\nprotocol text\n\n## Claims") and "coverage" in text
    # the run's protocol is stated under every claim table (and the summary)
    assert text.count("_Protocol: CPU-scale protocol, width 4._") == 1 + text.count("| A vs B |")
    with pytest.raises(SystemExit, match="preamble"):
        main(["claims", str(tmp_path), "--preamble", str(tmp_path / "nope.md")])



def test_claim_sets_match_their_configs(store, tmp_path, capsys):
    """Each claim set asks about exactly the models (and attacks) of the config it was written for."""
    from pathlib import Path

    from robustbench_leak.cli import main
    from robustbench_leak.config import load_config
    from robustbench_leak.report.claims import CLAIM_SETS

    configs = Path(__file__).parents[1] / "configs"
    for claim_set, config in [("paper", "paper-fashion-mnist.yaml"), ("depth-sweep", "paper-depth-sweep.yaml"),
                              ("subsampled", "paper-mnist14.yaml")]:
        config = load_config(configs / config)
        used = {m for _, _, pairs in CLAIM_SETS[claim_set] for a, b, _, _ in pairs for m in (a, b)}
        # every model is asked about, and every model asked about exists
        assert used == {m.name for m in config.run.models}, claim_set
        attacks = {attack for _, _, pairs in CLAIM_SETS[claim_set] for _, _, attack, _ in pairs}
        assert attacks <= {a.label for a in config.attacks}, claim_set
    main(["claims", str(tmp_path), "--claims", "depth-sweep"])  # this store has none of those models
    out = capsys.readouterr().out
    assert out.count("**Verdict: not evaluated**") == len(CLAIM_SETS["depth-sweep"]) == 10
    assert "missing from the store: hamming-d16 vs plain-d16 on deepfool" in out
    with pytest.raises(SystemExit):
        main(["claims", str(tmp_path), "--claims", "nope"])
