"""Claims report: effects, image- and seed-level intervals, paired tests and verdicts from stored per-sample
results; claim sets as validated YAML."""

import json

import numpy as np
import pytest
import yaml
from report_data import add_model
from scipy import stats as sps

from robustbench_leak.report import verdicts
from robustbench_leak.report.claim_set import ClaimSet, claim_set_names, load_claim_set
from robustbench_leak.report.claims import Claim, compare, coverage_lines, evaluate_claims, rule
from robustbench_leak.report.claims_md import to_markdown, write_figures
from robustbench_leak.store import StoreWriter
from robustbench_leak.store.arrays import encode


def ruled(kind, *comps):
    claim = Claim("t", kind, list(comps))
    rule(claim)
    return claim.verdict


def claim_set(*claims):
    return ClaimSet.model_validate({"description": "test", "config": "x.yaml", "claims": [
        {"title": t, "kind": k, "comparisons": [{"a": a, "b": b, "attack": at, "metric": m} for a, b, at, m in pairs]}
        for t, k, pairs in claims]})

N = 400


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\ndescription: CPU-scale protocol, width 4\n")
    rows = []
    for seed in (0, 1, 2):
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


def test_directional_effect_intervals_and_tests(store):
    c = compare(store, "r", "better", "worse", "clean", "correct")
    assert c.n_seeds == 3 and c.effect > 0.1
    assert c.image_ci[0] > 0 and c.image_ci[0] <= c.effect <= c.image_ci[1]
    assert c.seed_ci[0] <= c.effect <= c.seed_ci[1]
    assert c.seed_test["p_value"] == pytest.approx(sps.ttest_1samp(c.per_seed, 0).pvalue)
    assert c.sign_flip["p_value"] == pytest.approx(0.25)  # 3 seeds, all positive: 2 of 8 sign patterns as extreme
    assert c.clustered["p_value"] < 1e-6 and c.clustered["exact"]
    assert ruled("directional", c) == "reproduced"  # per-seed effects ~0.18 to ~0.19: far from 0 at any level
    lo, hi = c.ruling.interval
    assert lo <= c.effect <= hi and c.ruling.level == pytest.approx(0.95) and c.se > 0
    reverse = compare(store, "r", "worse", "better", "clean", "correct")
    assert reverse.effect == pytest.approx(-c.effect) and ruled("directional", reverse) == "not reproduced"


def test_rho_effect(store):
    c = compare(store, "r", "better", "worse", "deepfool", "rho")
    assert not c.clustered["exact"] and c.clustered["p_value"] < 1e-3
    assert c.effect == pytest.approx(0.2 * c.mean_b, rel=1e-6)  # rho is 1.2x on every image


def test_equivalence(store):
    same = compare(store, "r", "twin", "better", "clean", "correct")
    assert same.effect == 0 and same.image_ci == (0.0, 0.0) and same.seed_ci == (0.0, 0.0)
    assert ruled("equivalence", same) == "reproduced"
    different = compare(store, "r", "worse", "better", "clean", "correct")
    assert ruled("equivalence", different) == "not reproduced"
    assert ruled("directional", same) == "inconclusive"


def test_a_model_not_in_the_store_is_a_one_line_error_with_a_suggestion(store, tmp_path, capsys):
    """A typo in a claim set is an error naming the model and the closest one, not a 'not evaluated' claim."""
    from robustbench_leak.cli import main

    with pytest.raises(ValueError, match=r"claims\.1\.comparisons\.0\.b: model 'wrose' is not in .*did you mean "
                                         r"'worse'\?"):
        evaluate_claims(tmp_path, claim_set(("A beats B", "directional", [("better", "worse", "clean", "correct")]),
                                            ("typo", "directional", [("better", "wrose", "clean", "correct")])))
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"description": "d", "config": "x.yaml", "claims": [
        {"title": "t", "kind": "directional",
         "comparisons": [{"a": "betterr", "b": "worse", "attack": "clean", "metric": "correct"}]}]}))
    capsys.readouterr()
    assert main(["claims", str(tmp_path), "--claims", str(path)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: claims.0.comparisons.0.a: model 'betterr'" in err
    assert "did you mean 'better'?" in err
    with pytest.raises(ValueError, match="attack 'cleen' is not in .*did you mean 'clean'"):
        evaluate_claims(tmp_path, claim_set(("t", "directional", [("better", "worse", "cleen", "correct")])))


def test_coverage_names_complete_and_missing_seeds(store, tmp_path):
    line = coverage_lines(tmp_path)[0]
    assert "every planned cell finished" in line and "better: seeds 0, 1, 2 complete" in line
    # a planned cell that never ran makes the run incomplete, and says which seed and how much is missing
    store.add_run_cells("r", [{"cell_key": "absent", "kind": "eval", "train_key": "worse-3", "model": "worse",
                               "arch": "x", "dataset": "d", "seed": 3, "attack": "clean"}])
    line = coverage_lines(tmp_path)[0]
    assert "incomplete run" in line and "worse: seeds 0, 1, 2 complete; incomplete: 3 (0/1)" in line


def test_claims_cli_preamble(store, tmp_path):
    from robustbench_leak.cli import main

    pre = tmp_path / "pre.md"
    pre.write_text("# Report\n\nprotocol text\n")
    out = tmp_path / "REPORT.md"
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"description": "d", "config": "x.yaml", "claims": [
        {"title": "better beats worse", "kind": "directional",
         "comparisons": [{"a": "better", "b": "worse", "attack": "clean", "metric": "correct"}]}]}))
    main(["claims", str(tmp_path), "--claims", str(mine), "--preamble", str(pre), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Report\n\nprotocol text\n\n## Claims") and "coverage" in text
    # the run's protocol is stated under every claim table (and the summary)
    assert text.count("_Protocol: CPU-scale protocol, width 4._") == 1 + text.count("| A vs B |")
    assert main(["claims", str(tmp_path), "--preamble", str(tmp_path / "nope.md")]) == 2



def test_claim_sets_match_their_configs(store, tmp_path, capsys):
    """Each claim set asks about exactly the models (and attacks) of the config it was written for."""
    from pathlib import Path

    from robustbench_leak.cli import main
    from robustbench_leak.config import load_config

    configs = Path(__file__).parents[1] / "configs"
    assert claim_set_names() == ["depth-sweep", "paper", "subsampled"]
    for name in claim_set_names():
        cs = load_claim_set(name)
        config = load_config(configs / cs.config)
        used = {m for c in cs.claims for p in c.comparisons for m in (p.a, p.b)}
        # every model is asked about, and every model asked about exists
        assert used == {m.name for m in config.run.models}, name
        attacks = {p.attack for c in cs.claims if not c.config for p in c.comparisons}
        assert attacks <= {a.label for a in config.attacks}, name
        for claim in (c for c in cs.claims if c.config):  # answered by another config's cells: its labels, models
            other = load_config(configs / claim.config)
            assert {p.attack for p in claim.comparisons} <= {a.label for a in other.attacks}, claim.title
            assert {m for p in claim.comparisons for m in (p.a, p.b)} <= {m.name for m in other.run.models}
    capsys.readouterr()
    assert main(["claims", str(tmp_path), "--claims", "depth-sweep"]) != 0  # this store has none of those models
    assert "model 'hamming-d2' is not in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["claims", str(tmp_path), "--claims", "nope"])


def test_claims_list_and_yaml_path(store, tmp_path, capsys):
    from robustbench_leak.cli import main

    main(["claims", "--list"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == claim_set_names()
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"description": "d", "config": "x.yaml", "claims": [
        {"title": "better beats worse", "kind": "directional",
         "comparisons": [{"a": "better", "b": "worse", "attack": "clean", "metric": "correct"}]}]}))
    main(["claims", str(tmp_path), "--claims", str(path)])
    out = capsys.readouterr().out
    assert "**Verdict: reproduced**" in out and "Holm-adjusted" in out


@pytest.mark.parametrize("data, key", [
    ({"description": "d", "config": "x", "claims": [{"title": "t", "kind": "maybe", "comparisons": []}]},
     "claims.0.kind"),
    ({"description": "d", "config": "x", "claims": [{"title": "t", "kind": "directional",
                                                      "comparisons": [{"a": "x", "b": "y", "attack": "clean"}]}]},
     "claims.0.comparisons.0.metric"),
    ({"description": "d", "config": "x", "claims": [], "extra": 1}, "claims"),
    ({"description": "d", "config": "x", "claims": [{"title": "t", "kind": "directional", "comparisons": [
        {"a": "x", "b": "x", "attack": "clean", "metric": "correct"}]}]}, "claims.0.comparisons.0"),
])
def test_claim_set_errors_are_one_line(tmp_path, data, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError) as err:
        load_claim_set(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and "\n" not in str(err.value)


def test_flagged_cells_are_named(store, tmp_path):
    info = {"flags": ["gradient masking suspected"]}
    store.conn.execute("UPDATE cells SET info = ? WHERE cell_key = ?", (json.dumps(info), "better-1-deepfool"))
    store.conn.commit()
    claims, _ = evaluate_claims(tmp_path, claim_set(("rho", "directional", [("better", "worse", "deepfool", "rho")])))
    md = to_markdown(claims)
    assert "- deepfool: better seed 1: gradient masking suspected (used in better vs worse)" in md
    assert "Uses flagged cells: better seed 1: gradient masking suspected." in md


def test_low_frequency_question_from_stored_spectra(tmp_path):
    """The spectra question compares 1 - hf_share per image; stores without spectra say so instead."""
    rng = np.random.default_rng(1)
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n")
    rows = []
    for seed in (0, 1, 2):
        for model, centre in (("smooth", 0.2), ("rough", 0.5)):
            key = f"{model}-{seed}"
            hf = np.clip(centre + 0.05 * rng.standard_normal(N), 0, 1)
            hf[:10] = np.nan  # images the attack did not fool: no spectrum
            samples = {"label": np.zeros(N, int), "clean_pred": np.zeros(N, int), "adv_pred": np.ones(N, int),
                       "l2": np.full(N, 0.5), "rho": np.full(N, 0.05), "hf_share": hf, "centroid": hf / 2}
            freq = np.arange(15) / 28
            spectrum = {"freq": freq.tolist(), "mean": np.exp(-freq / centre).tolist(), "n": N - 10,
                        "lo": (0.9 * np.exp(-freq / centre)).tolist(), "hi": (1.1 * np.exp(-freq / centre)).tolist()}
            s.record_cell(key, "eval", {"attack": {"kind": "deepfool"}}, "r", "cpu", "t", 1.0, {"n": N}, samples,
                          info={"spectrum": spectrum})
            rows.append({"cell_key": key, "kind": "eval", "train_key": key, "model": model, "arch": "x",
                         "dataset": "d", "seed": seed, "attack": "deepfool"})
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()
    question = ("q", "directional", [("smooth", "rough", "deepfool", "low_freq_share")])
    claims, _ = evaluate_claims(tmp_path, claim_set(question))
    c = claims[0].comparisons[0]
    assert c.metric == "low_freq_share" and c.effect == pytest.approx(0.3, abs=0.02)
    assert c.n_images == N and claims[0].verdict == verdicts.REPRODUCED
    # the report shows both models' mean spectra, every seed, in one figure beside the comparison
    assert [len(v) for v in c.spectra.values()] == [3, 3]
    written = write_figures(claims, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["spectra_deepfool_smooth_vs_rough.png",
                                               "spectra_deepfool_smooth_vs_rough.svg"]
    assert "![mean perturbation spectra: smooth vs rough on deepfool](plots/spectra_deepfool_smooth_vs_rough.png)" \
        in to_markdown(claims, base=tmp_path)
    # a store whose cells hold no spectra (the published runs so far): not evaluated, with the reason
    s = StoreWriter(tmp_path / "results.sqlite")
    for (key,) in s.conn.execute("SELECT cell_key FROM sample_arrays").fetchall():
        arrays = s.sample_arrays(key)
        arrays.pop("hf_share")
        s.conn.execute("UPDATE sample_arrays SET n = ?, header = ?, data = ? WHERE cell_key = ?", (*encode(arrays), key))
    s.conn.commit()
    s.close()
    claims, _ = evaluate_claims(tmp_path, claim_set(question))
    assert claims[0].verdict == verdicts.NOT_EVALUATED and "no perturbation spectra stored" in claims[0].missing[0]


def test_claims_on_a_subset_of_seeds(store, tmp_path, capsys):
    """``--seeds``: the claims on fewer training seeds (what a smaller run would have said); seeds not in
    the run are refused in one line."""
    from robustbench_leak.cli import main

    full = compare(store, "r", "better", "worse", "clean", "correct")
    one = compare(store, "r", "better", "worse", "clean", "correct", only_seeds=[1])
    assert one.seeds == [1] and one.per_seed == [full.per_seed[1]]
    assert ruled("directional", one) == "inconclusive"  # one seed: no seed-level interval
    question = claim_set(("q", "directional", [("better", "worse", "clean", "correct")]))
    claims, _ = evaluate_claims(tmp_path, question, seeds=[0])
    assert claims[0].comparisons[0].seeds == [0]
    capsys.readouterr()
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(question.model_dump(exclude={"name", "source"}, exclude_none=True)))
    main(["claims", str(tmp_path), "--claims", str(path), "--seeds", "0,1"])
    out = capsys.readouterr().out
    assert "**exploratory: only seeds 0, 1**" in out and "every verdict below is exploratory" in out
    with pytest.raises(ValueError, match="seed 5 is not in"):
        evaluate_claims(tmp_path, question, seeds=[0, 5])
    capsys.readouterr()
    assert main(["claims", str(tmp_path), "--claims", "paper", "--seeds", "0,7"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rbleak: error: --seeds: seed 7 is not in")


def test_unconverged_cells_are_not_counted_and_failed_images_are_excluded_and_counted(tmp_path):
    """A comparison resting on a cell whose attack did not converge says so and does not count; images the
    attack failed on (still classified correctly) leave both models' rho means, and the report gives their
    number; an exploratory claim is answered, not reproduced."""
    rng = np.random.default_rng(1)
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n")
    rows = []
    for seed in (0, 1, 2):
        base = rng.random(N) * 0.1 + 0.05
        for model, scale, flags in (("a", 1.2, []), ("b", 1.0, ["FMN did not converge: still falling"] if seed == 1 else [])):
            adv = np.ones(N, dtype=int)
            adv[:5] = 0  # the attack failed on 5 images of each model
            key = f"{model}-{seed}"
            s.record_cell(key, "eval", {"attack": {"kind": "deepfool"}}, "r", "cpu", "t", 1.0, {"n": N},
                          {"label": np.zeros(N, dtype=int), "clean_pred": np.zeros(N, dtype=int), "adv_pred": adv,
                           "l2": base * scale, "rho": base * scale}, info={"flags": flags} if flags else None)
            rows.append({"cell_key": key, "kind": "eval", "train_key": key, "model": model, "arch": "x",
                         "dataset": "d", "seed": seed, "attack": "deepfool"})
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()
    data = {"description": "t", "config": "x.yaml", "claims": [
        {"title": "flagged", "kind": "directional", "comparisons": [{"a": "a", "b": "b", "attack": "deepfool", "metric": "rho"}]},
        {"title": "asked", "kind": "directional", "role": "exploratory",
         "comparisons": [{"a": "a", "b": "b", "attack": "deepfool", "metric": "rho"}]}]}
    claims, _ = evaluate_claims(tmp_path, ClaimSet.model_validate(data))
    c = claims[0].comparisons[0]
    assert c.not_counted == ["b seed 1: not converged"] and c.ruling is None
    assert claims[0].verdict == verdicts.NOT_EVALUATED
    assert c.attack_failed == {0: 5, 1: 5, 2: 5}
    md = to_markdown(claims)
    assert "**not counted**: it rests on cells whose attack did not converge (b seed 1)" in md
    assert "15 clean-correct images the attack failed on for A or B are excluded from both means" in md
    assert claims[1].verdict == verdicts.NOT_EVALUATED  # the same cells: not counted either


def test_models_with_more_seeds_than_others_compare_on_the_seeds_both_have(store, tmp_path):
    """A run adding seeds may be partway: a comparison reads the seeds both models finished, and says which."""
    rng = np.random.default_rng(5)
    rows = [add_model(store, "r", "better", 3, "clean", rng.random(N) < 0.9),
            add_model(store, "r", "twin", 3, "clean", rng.random(N) < 0.9),
            add_model(store, "r", "twin", 4, "clean", rng.random(N) < 0.9)]
    store.add_run_cells("r", rows)
    claims, _ = evaluate_claims(tmp_path, claim_set(("t", "directional", [("better", "worse", "clean", "correct"),
                                                                           ("twin", "better", "clean", "correct")])))
    assert [c.seeds for c in claims[0].comparisons] == [[0, 1, 2], [0, 1, 2, 3]]
    md = to_markdown(claims)
    assert "0, 1, 2 for better vs worse on clean | 0, 1, 2, 3 for twin vs better on clean" in md


def test_a_claim_answered_by_another_config_waits_for_its_cells(store, tmp_path):
    """A claim naming its own config (e.g. the AutoAttack cells of paper-fashion-mnist-autoattack.yaml) whose attack
    is not in the store yet: not evaluated, and not post hoc (no cell of it ran before it was declared); a typo in
    a claim without its own config is still a one-line error."""
    def claim_set(config):
        return ClaimSet.model_validate({"description": "d", "config": "x.yaml", "claims": [
            {"title": "t", "kind": "directional", "config": config,
             "declared": {"commit": "abcdef0", "date": "2026-12-07T04:00:00+00:00"},
             "comparisons": [{"a": "better", "b": "worse", "attack": "autoattack-linf", "metric": "correct"}]}]})

    claims, _ = evaluate_claims(tmp_path, claim_set("other.yaml"))
    assert claims[0].missing and not claims[0].comparisons and not claims[0].post_hoc
    with pytest.raises(ValueError, match="attack 'autoattack-linf' is not in"):
        evaluate_claims(tmp_path, claim_set(None))


def test_a_claim_naming_another_config_reads_the_folder_given_with(store, tmp_path):
    """`rbleak claims --with FOLDER`: the claim naming another config reads that config's folder (its cells and its
    first cell's start for the pre-registration check), the others read the run's; a folder whose run is of no
    config a claim names, or a second folder for one config, is a one-line error before anything is computed."""
    from robustbench_leak.report.claims_report import render

    def claim_set(config):
        return ClaimSet.model_validate({"description": "d", "config": "x.yaml", "claims": [
            {"title": "own", "kind": "directional",
             "comparisons": [{"a": "better", "b": "worse", "attack": "clean", "metric": "correct"}]},
            {"title": "aa", "kind": "directional", "config": config, "role": "exploratory",
             "declared": {"commit": "abcdef0", "date": "2000-01-01T00:00:00+00:00"},
             "comparisons": [{"a": "better", "b": "worse", "attack": "autoattack-linf", "metric": "correct"}]}]})

    rng = np.random.default_rng(3)
    other = tmp_path / "aa"
    other.mkdir()
    s = StoreWriter(other / "results.sqlite")
    s.start_run("o", config_name="other", config_path="configs/other.yaml",
                config_yaml="name: other\ndescription: the other protocol\n")
    rows = []
    for seed in (5, 6):
        good = rng.random(N) < 0.6
        rows.append(add_model(s, "o", "better", seed, "autoattack-linf", good))
        rows.append(add_model(s, "o", "worse", seed, "autoattack-linf", good & (rng.random(N) < 0.5)))
    s.add_run_cells("o", rows)
    s.finish_run("o")
    s.close()
    import sqlite3

    with sqlite3.connect(other / "results.sqlite") as db:  # add_model's cells carry no real start time
        db.execute("UPDATE cells SET started_at = '2026-12-07T06:00:00+00:00'")

    alone, _ = evaluate_claims(tmp_path, claim_set("other.yaml"))
    assert alone[1].missing and not alone[1].comparisons
    claims, _ = evaluate_claims(tmp_path, claim_set("other.yaml"), others=[other])
    assert claims[0].comparisons[0].seeds == [0, 1, 2]
    assert claims[1].comparisons[0].seeds == [5, 6] and claims[1].comparisons[0].effect > 0.2
    assert claims[1].verdict == "answered yes" and not claims[1].post_hoc
    text = render(tmp_path, claim_set("other.yaml"), others=[other], draw=False)
    assert f"the claims naming `configs/other.yaml` read `{other}`" in text
    assert "better: seeds 5, 6 complete" in text
    own, aa = text.split("#### Claim 2: aa")  # the claim's tables carry its own folder's protocol line
    assert "_Protocol: the other protocol._" in aa and "_Protocol: the other protocol._" not in own
    with pytest.raises(ValueError, match=r"^--with: .*aa: its run is of config 'other', which no claim of .* names"):
        evaluate_claims(tmp_path, claim_set("another.yaml"), others=[other])
    with pytest.raises(ValueError, match="already holds other.yaml's cells"):
        evaluate_claims(tmp_path, claim_set("other.yaml"), others=[other, other])
    with pytest.raises(ValueError, match=r"^--with: .*typo: no results store here"):
        evaluate_claims(tmp_path, claim_set("other.yaml"), others=[tmp_path / "typo"])


def test_cells_before_an_engine_fix_are_left_out_and_the_rest_judged(tmp_path):
    """Seeds whose minnorm cells predate the current engine version stay in the store but out of the
    comparison, which reads the current cells' seeds and says which it left out; with no current cell at
    all the comparison is not counted."""
    rng = np.random.default_rng(7)
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n")
    rows = []
    for seed in range(4):
        version = 1 if seed < 2 else 2
        for model, scale in (("a", 1.3), ("b", 1.0)):
            key = f"{model}-{seed}"
            rho = (rng.random(N) * 0.1 + 0.05) * scale
            s.record_cell(key, "eval", {"attack": {"kind": "minnorm", "engine": "native", "version": version}}, "r",
                          "cpu", "t", 1.0, {"n": N}, {"label": np.zeros(N, dtype=int), "clean_pred": np.zeros(N, dtype=int),
                                                       "adv_pred": np.ones(N, dtype=int), "l2": rho, "rho": rho})
            rows.append({"cell_key": key, "kind": "eval", "train_key": key, "model": model, "arch": "x",
                         "dataset": "d", "seed": seed, "attack": "minnorm"})
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()
    data = {"description": "t", "config": "x.yaml", "claims": [
        {"title": "q", "kind": "directional", "role": "exploratory",
         "comparisons": [{"a": "a", "b": "b", "attack": "minnorm", "metric": "rho"}]}]}
    claims, _ = evaluate_claims(tmp_path, ClaimSet.model_validate(data))
    c = claims[0].comparisons[0]
    assert c.seeds == [2, 3] and not c.not_counted
    assert any(f.startswith("seeds 0, 1 left out: their cells predate the fix") for f in c.flagged)
    claims, _ = evaluate_claims(tmp_path, ClaimSet.model_validate(data), seeds=[0, 1])
    assert claims[0].comparisons[0].not_counted  # only stale cells: not counted


def test_rho_of_an_attack_that_stores_none_is_an_error_not_a_verdict(store, tmp_path):
    """Clean cells hold no per-image rho: a claim asking for it names the claim and the metric to use."""
    with pytest.raises(ValueError, match=r"claim 't', better vs worse on clean \(rho\): .*no per-image rho stored"):
        evaluate_claims(tmp_path, claim_set(("t", "directional", [("better", "worse", "clean", "rho")])))


def test_claim_titles_are_escaped_in_the_markdown(store, tmp_path):
    """A title is free text: the verdict table keeps its columns, and HTML in it is shown, not rendered."""
    claims, _ = evaluate_claims(tmp_path, claim_set(("a | b <script>x</script> & c", "directional",
                                                  [("better", "worse", "clean", "correct")])))
    text = to_markdown(claims)
    row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert "a \\| b &lt;script&gt;x&lt;/script&gt; &amp; c" in row and "<script>" not in text
    header = next(line for line in text.splitlines() if line.startswith("| # |"))
    assert row.replace("\\|", "").count("|") == header.count("|")


@pytest.mark.parametrize("raw, expected", [
    (b"\xff\xfe not text", "not a UTF-8 text file"),
    (b"description: d\ndescription: e\nconfig: x\nclaims: []\n", "line 2: the key 'description' appears twice"),
    (b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [" + b", ".join([b"*a"] * 10) + b"]\nc: &c ["
     + b", ".join([b"*b"] * 10) + b"]\nd: &d [" + b", ".join([b"*c"] * 10) + b"]\ne: [" + b", ".join([b"*d"] * 10)
     + b"]\n", "aliases"),
    (b"claims: [\n", "malformed YAML"),
])
def test_hostile_claim_set_files_are_one_line_errors_naming_the_file(tmp_path, raw, expected):
    # a user's claim-set file is read as configs are: bounded, aliases not expanded past a limit, duplicate
    # keys refused (yaml.safe_load would keep the last silently), non-UTF-8 named
    path = tmp_path / "claims.yaml"
    path.write_bytes(raw)
    with pytest.raises(ValueError) as err:
        load_claim_set(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_a_claim_set_is_hashed_as_it_was_loaded(tmp_path):
    # pre-registration hashes the YAML that was validated, not the file re-read later (it may have changed)
    from robustbench_leak.report.registration import claim_set_data

    path = tmp_path / "claims.yaml"
    data = {"description": "d", "config": "x", "claims": [{"title": "t", "kind": "directional", "comparisons": [
        {"a": "p", "b": "q", "attack": "clean", "metric": "correct"}]}]}
    path.write_text(yaml.safe_dump(data))
    cs = load_claim_set(path)
    path.write_text(yaml.safe_dump({**data, "description": "changed after loading"}))
    assert claim_set_data(cs) == data
