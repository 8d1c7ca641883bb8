"""The sequential seed design (rbleak run --until-decided): O'Brien-Fleming boundaries on the information
fraction, Holm's graph across the family, non-binding futility; its family-wise error, power and expected
seeds on simulated stores with the closed-form standard error: accuracies as 0/1 outcomes of a latent model
(image, model x image, seed and seed x image effects) fitted to the published store, and per-model normal
parts at its variance components (docs/sequential-simulation.json, written by scripts/sequential-simulation.py)."""

import json
import math

import pytest
from conftest import REPO
import numpy as np
from scipy import stats as sps
from scipy.special import ndtri

from robustbench_leak import sequential
from robustbench_leak.report.latent_sim import LatentModel, estimate
from robustbench_leak.report.sequential_sim import NormalModel, analytic_single, scenarios, simulate, single

MEASURED = json.loads((REPO / "docs" / "sequential-simulation.json").read_text())
FAMILIES = 2000


def test_obf_boundaries_match_the_published_table():
    """Five equally spaced looks, one-sided 0.025 (Jennison and Turnbull's table for the Lan-DeMets OBF
    spending function), and one look is the fixed-sample z."""
    c = sequential.boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.025)
    assert c == pytest.approx((4.877, 3.357, 2.680, 2.290, 2.031), abs=0.005)
    assert sequential.boundaries((1.0,), 0.025)[0] == pytest.approx(sps.norm.isf(0.025))


def test_the_floor_caps_the_information():
    """With a shared test set the information fraction at 5 seeds is far above 5 / 30."""
    t = sequential.fractions_for([5, 30], 30, 1e-5, 1e-6)
    assert t[0] > 5 / 30 + 0.2 and t[-1] == 1.0


NORMAL = NormalModel(MEASURED["effects"], MEASURED["sigma2"], MEASURED["tau2"])
LATENT = LatentModel(**MEASURED["latent"]["components"])
COMPARISONS = tuple(tuple(c) for c in MEASURED["comparisons"])
DIRECTIONAL = [c for c in COMPARISONS if c[2] is None]


@pytest.mark.parametrize("generator, index", [("latent", i) for i in range(7)] + [("normal", i) for i in range(7)])
def test_family_wise_error_at_most_alpha(generator, index):
    """Global null, partial nulls and the observed effects (x0.5, x1, x2), per-seed accuracies from the latent
    0/1-outcome model fitted to the published store (and from per-model normal parts): the Clopper-Pearson
    upper bound of the family-wise error over 2,000 families is at most 0.06."""
    sc = scenarios(LATENT if generator == "latent" else NORMAL, COMPARISONS)[index]
    r = simulate(sc, FAMILIES, seed=index)
    assert sps.beta.ppf(0.975, r["errors"] + 1, r["n"] - r["errors"]) <= 0.06, (generator, sc.name, r)


@pytest.mark.parametrize("generator, pair, scale", [(g, p, s) for g in ("latent", "normal")
                                                     for p, s in [(1, 1.0), (0, 2.0), (1, 2.0)]])
def test_power_and_expected_seeds_match_the_analytic_values(generator, pair, scale):
    """One comparison at its observed effect and the variance components x1, x2: simulated power and mean
    seeds within 3 simulation SE of the numerical integration at the closed-form s^2 and V_sh."""
    a, b, _ = DIRECTIONAL[pair]
    sc = single(LATENT if generator == "latent" else NORMAL, a, b, scale)
    sim, exact = simulate(sc, FAMILIES, seed=int(50 + 10 * pair + scale)), analytic_single(sc)
    p = exact["power"]
    assert abs(sim["power"][0] - p) <= 3 * math.sqrt(max(p * (1 - p), 1e-4) / FAMILIES) + 1e-3, (sim, exact)
    assert abs(sim["expected_seeds"] - exact["expected_seeds"]) <= 3 * sim["seeds_sd"] / math.sqrt(FAMILIES) + 0.05


def test_latent_draws_have_the_closed_form_moments():
    """The simulated per-seed accuracies of a pair: mean difference, variance of one seed's difference
    (s^2 + V_sh) and of the 30-seed mean (s^2 / 30 + V_sh) within 4 simulation SE of the closed form."""
    a, b, _ = DIRECTIONAL[1]
    n = 4000
    x = LATENT.draw(np.random.default_rng(7), [a, b], n, 30)
    d = x[:, 0] - x[:, 1]
    s2, v_sh = LATENT.moments(a, b)
    assert abs(d.mean() - (LATENT.mean(a) - LATENT.mean(b))) <= 4 * math.sqrt((s2 + v_sh) / (30 * n))
    for observed, expected in ((d[:, 0].var(), s2 + v_sh), (d.mean(1).var(), s2 / 30 + v_sh)):
        assert abs(observed / expected - 1) <= 4 * math.sqrt(2 / (n - 1)), (observed, expected)


def test_the_fit_recovers_the_components_of_a_simulated_store():
    """A store of 0/1 outcomes drawn from the fitted latent model (6 models, 5 seeds, 10,000 images, every
    effect drawn): the fit gives back the image and seed x image variances and each comparison's s^2 and
    V_sh within 20%."""
    rng = np.random.default_rng(3)
    models = sorted(LATENT.accuracy)
    k, n, sd = 5, LATENT.n_images, np.sqrt(LATENT.total)
    image = rng.normal(0, np.sqrt(LATENT.va), n)
    seed = rng.normal(0, np.sqrt(LATENT.vs), (k, 1))
    seed_image = rng.normal(0, np.sqrt(LATENT.vsi), (k, n))
    correct = {}
    for m in models:
        z = (ndtri(LATENT.accuracy[m]) * sd + image + rng.normal(0, np.sqrt(LATENT.vb), n) + seed
             + rng.normal(0, np.sqrt(LATENT.vms), (k, 1)) + seed_image + rng.normal(0, np.sqrt(LATENT.ve), (k, n)))
        correct[m] = (z > 0).astype(np.float64)
    fit = estimate(correct)
    assert fit.va == pytest.approx(LATENT.va, abs=0.01) and fit.vsi == pytest.approx(LATENT.vsi, abs=0.002)
    for a, b, _ in COMPARISONS:
        for got, true in zip(fit.moments(a, b), LATENT.moments(a, b)):
            assert got == pytest.approx(true, rel=0.2), (a, b)


def test_holm_graph_recycles_the_level_of_a_decided_comparison():
    fam = sequential.Family(3, 0.05, futility=0.0)
    comps = [sequential.Comparison(10.0, 1.0), sequential.Comparison(2.3, 1.0), sequential.Comparison(0.0, 1.0)]
    look = fam.look(30, comps, [1.0] * 3, final=True)
    assert look.decided[0] == "supports" and look.decided[2] == "open"
    assert look.levels[1] == pytest.approx(0.05 / 3 + 0.05 / 3 / 2)  # its level plus half of the first's
    # 2.3 > z_{1 - 0.025 / 3} alone? no (2.39); after recycling (0.025 / 2 per side ... 2.24): yes
    assert look.decided[1] == "supports"


SEQ_CONFIG = """
name: seq
device: cpu
seeds: [0, 1]
datasets:
  - name: synthetic
    n_train: 256
    n_test: 64
training: {optimizer: sgd, lr: 0.1, epochs: 1, batch_size: 64, schedule: cosine}
models:
  - name: small-3x3
    arch: tomen_cnn
    options: {n_layers: 2, width: 4, kernel_size: 3, window: none}
  - name: small-7x7-hamming
    arch: tomen_cnn
    options: {n_layers: 2, width: 4, kernel_size: 7, window: hamming}
attacks:
  - clean
"""

SEQ_CLAIMS = """
description: t
config: seq.yaml
claims:
  - title: windowed beats 3x3
    kind: directional
    comparisons: [{a: small-7x7-hamming, b: small-3x3, attack: clean, metric: correct}]
"""


def test_until_decided_adds_seeds_records_each_look_and_the_report_prints_them(tmp_path, monkeypatch, capsys):
    from robustbench_leak.cli import main
    from robustbench_leak.report.sequential_looks import stored_looks
    from robustbench_leak.store import StoreReader

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG)
    (tmp_path / "claims.yaml").write_text(SEQ_CLAIMS)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "seq.yaml"), "--out", str(out), "--quiet", "--until-decided",
                 str(tmp_path / "claims.yaml"), "--seed-batch", "1", "--max-seeds", "3"]) == 0
    looks = stored_looks(out)
    assert [look["seeds"] for look in looks][0] == 2 and looks[-1]["reason"]
    assert looks[-1]["seeds"] == 3 or looks[-1]["decided"][0] != "open"
    with StoreReader(out) as store:
        runs = store.runs()
    assert json.loads(runs.claims.iloc[0])[0]["claim_set"] == "claims"  # the named set's hash, at the start
    capsys.readouterr()
    assert main(["claims", str(out), "--claims", str(tmp_path / "claims.yaml")]) == 0
    report = capsys.readouterr().out
    assert "### Sequential looks" in report and f"Stopped after look {len(looks)}" in report
    assert "hash stored when the run started" in report


@pytest.mark.parametrize("extra", [[], ["--publish-weights"]])  # the weights folder is not made either
def test_until_decided_refuses_a_claim_set_naming_a_model_the_config_lacks(tmp_path, capsys, extra):
    from robustbench_leak.cli import main

    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG)
    (tmp_path / "claims.yaml").write_text(SEQ_CLAIMS.replace("small-3x3", "small-5x5"))
    assert main(["run", str(tmp_path / "seq.yaml"), "--out", str(tmp_path / "o"), "--until-decided",
                 str(tmp_path / "claims.yaml"), *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "small-5x5" in err[0] and "claims.0.comparisons.0.b" in err[0]
    assert not (tmp_path / "o").exists()


def test_until_decided_leaves_a_claim_answered_by_another_config_to_that_config(tmp_path):
    """The paper set's AutoAttack claim names its own config: `--until-decided paper` on the protocol config
    must not refuse it (the looks read the protocol's cells), while a claim of this config is still checked."""
    from robustbench_leak.config import load_config
    from robustbench_leak.sequential_run import check_claim_set

    assert check_claim_set(load_config(REPO / "configs" / "paper-fashion-mnist.yaml"), "paper").name == "paper"
    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG)
    elsewhere = SEQ_CLAIMS + """  - title: under AutoAttack
    kind: directional
    role: exploratory
    config: other.yaml
    comparisons: [{a: small-7x7-hamming, b: small-3x3, attack: autoattack-linf, metric: correct}]
"""
    (tmp_path / "claims.yaml").write_text(elsewhere)
    assert len(check_claim_set(load_config(tmp_path / "seq.yaml"), str(tmp_path / "claims.yaml")).claims) == 2
    (tmp_path / "mine.yaml").write_text(elsewhere.replace("config: other.yaml", "config: seq.yaml"))
    with pytest.raises(ValueError, match=r"claims\.1\.comparisons\.0\.attack: 'autoattack-linf' is not in"):
        check_claim_set(load_config(tmp_path / "seq.yaml"), str(tmp_path / "mine.yaml"))


def test_a_look_goes_on_past_failed_cells_no_primary_comparison_reads(tmp_path):
    """Cells that cannot be computed here (e.g. of a GPU-trained model whose weights are absent) do not stop
    the look when no primary comparison reads them; a failed primary cell does."""
    from robustbench_leak.config import load_config
    from robustbench_leak.report.claim_set import load_claim_set
    from robustbench_leak.run.driver import CellsFailed
    from robustbench_leak.run.executor import Job, Outcome
    from robustbench_leak.run.plan import plan
    from robustbench_leak.sequential_run import _unless_primary

    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG.replace("attacks:\n  - clean",
                                                          "attacks:\n  - clean\n  - {preset: deepfool, n_samples: 8}"))
    (tmp_path / "claims.yaml").write_text(SEQ_CLAIMS)
    _, evals = plan(load_config(tmp_path / "seq.yaml"))
    claim_set = load_claim_set(str(tmp_path / "claims.yaml"))

    def failed(attack):
        return CellsFailed(tmp_path, [Outcome(Job(e.key, "eval", e), "failed", error="x")
                                      for e in evals if e.attack_label == attack], len(evals))

    lines: list[str] = []
    _unless_primary(failed("deepfool"), claim_set, lines.append)
    assert len(lines) == 1 and "no primary comparison reads" in lines[0] and "deepfool" in lines[0]
    with pytest.raises(CellsFailed):
        _unless_primary(failed("clean"), claim_set, lines.append)


def test_a_sequential_run_stopped_between_looks_resumes_its_design(tmp_path, monkeypatch):
    """Stopped by its time limit before its second look and run again, a sequential run takes up the stored
    looks (fractions, levels, states) instead of taking look 1 anew: its looks equal an uninterrupted run's."""
    from robustbench_leak.config import load_config
    from robustbench_leak.pipeline import run_config
    from robustbench_leak.report.sequential_looks import stored_looks
    from robustbench_leak.run.deadline import TimeLimitReached
    from robustbench_leak.sequential_run import run_until_decided

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG)
    # an equivalence claim with a generous margin on near-identical models stays open for a few looks
    (tmp_path / "claims.yaml").write_text(SEQ_CLAIMS.replace("directional", "equivalence"))
    config, claims = load_config(tmp_path / "seq.yaml"), str(tmp_path / "claims.yaml")

    def run(step, where, claim_sets):
        return run_config(step, where, progress=False, claim_sets=claim_sets, formats=())

    run_until_decided(config, tmp_path / "whole", claims, 1, 4, run, lambda line: None)
    whole = stored_looks(tmp_path / "whole")
    assert len(whole) >= 2, "the design must take a second look for this test to mean anything"

    calls: list[int] = []

    def stops_before_the_second_look(step, where, claim_sets):
        calls.append(len(step.run.seeds))
        if len(calls) == 2:
            raise TimeLimitReached("--time-limit")
        return run(step, where, claim_sets)

    with pytest.raises(TimeLimitReached):
        run_until_decided(config, tmp_path / "resumed", claims, 1, 4, stops_before_the_second_look, lambda line: None)
    assert len(stored_looks(tmp_path / "resumed")) == 1
    log: list[str] = []
    run_until_decided(config, tmp_path / "resumed", claims, 1, 4, run, log.append)
    assert "resuming the sequential design after look 1 at 2 seeds" in log[0]
    assert stored_looks(tmp_path / "resumed") == whole
    # other settings (here the cap) start a new design: its first look is at 2 seeds again
    run_until_decided(config, tmp_path / "resumed", claims, 1, 5, run, log.append)
    assert stored_looks(tmp_path / "resumed")[0]["seeds"] == 2 and stored_looks(tmp_path / "resumed")[0]["cap"] == 5


def _recorded_design(tmp_path, monkeypatch, claims_text):
    """A config with clean and a 3-step DeepFool, its claim set, the list of (seeds, attacks) each run step was
    given, and the recording runner."""
    from robustbench_leak.config import load_config
    from robustbench_leak.pipeline import run_config

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG.replace(
        "attacks:\n  - clean", "attacks:\n  - clean\n  - {preset: deepfool, n_samples: 8, params: {max_iter: 3}}"))
    (tmp_path / "claims.yaml").write_text(claims_text)
    calls: list[tuple[int, list[str]]] = []

    def run(step, where, claim_sets):
        calls.append((len(step.run.seeds), [a.label for a in step.attacks]))
        return run_config(step, where, progress=False, claim_sets=claim_sets, formats=())

    return load_config(tmp_path / "seq.yaml"), str(tmp_path / "claims.yaml"), calls, run


def test_a_look_runs_the_cells_it_reads_first_and_every_seed_gets_the_whole_protocol(tmp_path, monkeypatch):
    """Before each look only the primary comparisons' models and attacks run for its seeds; after it, the rest
    of the protocol for the same seeds. A finished design run again completes its cells and takes no look."""
    from robustbench_leak.report.sequential_looks import stored_looks
    from robustbench_leak.sequential_run import run_until_decided

    config, claims, calls, run = _recorded_design(tmp_path, monkeypatch, SEQ_CLAIMS)
    out = tmp_path / "out"

    run_until_decided(config, out, claims, 1, 3, run, lambda line: None)
    looks = stored_looks(out)
    assert calls[:2] == [(2, ["clean"]), (2, ["clean", "deepfool"])]
    assert calls == [(look["seeds"], attacks) for look in looks for attacks in (["clean"], ["clean", "deepfool"])]
    import robustbench_leak as rb

    results = rb.load_results(out).metrics
    done = set(zip(results.attack, results.seed))
    assert {("deepfool", s) for s in range(looks[-1]["seeds"])} <= done
    calls.clear()
    lines: list[str] = []
    run_until_decided(config, out, claims, 1, 3, run, lines.append)
    assert calls == [(looks[-1]["seeds"], ["clean", "deepfool"])] and "stopped at look" in lines[0]
    assert stored_looks(out) == looks


def test_a_run_stopped_after_a_look_completes_that_looks_seeds_before_adding_any(tmp_path, monkeypatch):
    """Stopped after look 1 but before the rest of the protocol for its seeds, the resumed run first runs that
    rest, then the next look's primary cells: the cells run in the order of an uninterrupted run."""
    from robustbench_leak.report.sequential_looks import stored_looks
    from robustbench_leak.run.deadline import TimeLimitReached
    from robustbench_leak.sequential_run import run_until_decided

    config, claims, calls, run = _recorded_design(tmp_path, monkeypatch,
                                                  SEQ_CLAIMS.replace("directional", "equivalence"))

    run_until_decided(config, tmp_path / "whole", claims, 1, 4, run, lambda line: None)
    whole_calls, whole = list(calls), stored_looks(tmp_path / "whole")
    assert len(whole) >= 2, "the design must take a second look for this test to mean anything"

    calls.clear()

    def stops_after_the_first_look(step, where, claim_sets):
        if len(calls) == 1:  # the first look is stored; the rest of its seeds' protocol is next
            raise TimeLimitReached("--time-limit")
        return run(step, where, claim_sets)

    with pytest.raises(TimeLimitReached):
        run_until_decided(config, tmp_path / "resumed", claims, 1, 4, stops_after_the_first_look, lambda line: None)
    assert len(stored_looks(tmp_path / "resumed")) == 1 and calls == whole_calls[:1]
    run_until_decided(config, tmp_path / "resumed", claims, 1, 4, run, lambda line: None)
    assert calls == whole_calls
    assert stored_looks(tmp_path / "resumed") == whole


def test_end_design_stops_at_the_stored_look_completes_its_seeds_and_the_report_says_why(tmp_path, monkeypatch):
    """``--end-design REASON`` after look 1: the reason is stored on look 1 and printed by the report, the run
    completes look 1's seeds and takes no further look, and a later plain run stays stopped. With no stored
    look of the design it is refused before any cell runs."""
    from robustbench_leak.report.sequential_looks import looks_lines, stored_looks
    from robustbench_leak.run.deadline import TimeLimitReached
    from robustbench_leak.sequential_run import run_until_decided

    config, claims, calls, run = _recorded_design(tmp_path, monkeypatch,
                                                  SEQ_CLAIMS.replace("directional", "equivalence"))
    out = tmp_path / "out"

    with pytest.raises(ValueError, match="--end-design: .* holds no look"):
        run_until_decided(config, out, claims, 1, 4, run, lambda line: None, end_reason="folder limit")
    assert calls == []

    def stops_after_the_first_look(step, where, claim_sets):
        if len(calls) == 1:
            raise TimeLimitReached("--time-limit")
        return run(step, where, claim_sets)

    with pytest.raises(TimeLimitReached):
        run_until_decided(config, out, claims, 1, 4, stops_after_the_first_look, lambda line: None)
    first = stored_looks(out)
    assert len(first) == 1 and not first[0].get("reason")
    calls.clear()
    run_until_decided(config, out, claims, 1, 4, run, lambda line: None, end_reason="the folder limit of 45 MB")
    looks = stored_looks(out)
    assert len(looks) == 1 and "the folder limit of 45 MB" in looks[0]["reason"]
    assert {**looks[0], "reason": ""} == {**first[0], "reason": ""}
    assert calls == [(first[0]["seeds"], ["clean", "deepfool"])]
    assert any(line.startswith("Stopped after look 1") and "the folder limit of 45 MB" in line
               for line in looks_lines(looks))
    hostile = [{**looks[0], "reason": "<script>x</script> | *"}]
    assert any("&lt;script&gt;" in line and "\\|" in line for line in looks_lines(hostile))
    calls.clear()
    run_until_decided(config, out, claims, 1, 4, run, lambda line: None)
    assert stored_looks(out) == looks and calls == [(first[0]["seeds"], ["clean", "deepfool"])]


@pytest.mark.parametrize("extra, key", [(["--end-design", "folder limit"], "allowed only with --until-decided"),
                                        (["--until-decided", "CLAIMS", "--end-design", "a\nb"], "--end-design"),
                                        (["--until-decided", "CLAIMS", "--end-design", "x" * 301], "--end-design"),
                                        (["--until-decided", "CLAIMS", "--end-design", "ok"], "holds no look")])
def test_end_design_refuses_bad_use_in_one_line_before_any_work(tmp_path, capsys, extra, key):
    from robustbench_leak.cli import main

    (tmp_path / "seq.yaml").write_text(SEQ_CONFIG)
    (tmp_path / "claims.yaml").write_text(SEQ_CLAIMS)
    extra = [str(tmp_path / "claims.yaml") if x == "CLAIMS" else x for x in extra]
    try:  # argparse's own errors exit 2
        rc = main(["run", str(tmp_path / "seq.yaml"), "--out", str(tmp_path / "o"), *extra])
    except SystemExit as stop:
        rc = stop.code
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not (tmp_path / "o").exists()
