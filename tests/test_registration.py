"""Pre-registration that cannot drift: runs store each claim's definition hash when they start; the report
prints it, and a claim changed after the run is post hoc with the change named, whatever its YAML says."""

import json
import sqlite3
import subprocess

import numpy as np
import pytest
from conftest import REPO
from report_data import add_model

from robustbench_leak.report.claim_set import ClaimSet, claim_set_names, load_claim_set
from robustbench_leak.report.claims import evaluate_claims
from robustbench_leak.report.claims_md import to_markdown
from robustbench_leak.report.registration import record, records_for_config
from robustbench_leak.store import StoreWriter

N = 200


def _set(b: str = "base", role: str = "primary") -> ClaimSet:
    return ClaimSet.model_validate({"description": "t", "config": "t.yaml", "claims": [
        {"title": "better", "kind": "directional", "role": role,
         "declared": {"commit": "abc1234", "date": "2999-01-01T00:00:00Z"},
         "comparisons": [{"a": "good", "b": b, "attack": "clean", "metric": "correct"}]}], "name": "t"})


def _store(tmp_path, stored: ClaimSet | None):
    rng = np.random.default_rng(0)
    s = StoreWriter(tmp_path / "results.sqlite")
    s.start_run("r", config_name="t", config_yaml="name: t\n",
                claims=json.dumps([record(stored)]) if stored else None)
    rows = []
    for seed in range(3):
        base = rng.random(N) < 0.7
        rows += [add_model(s, "r", "base", seed, "clean", base), add_model(s, "r", "other", seed, "clean", base),
                 add_model(s, "r", "good", seed, "clean", base | (rng.random(N) < 0.3))]
    s.add_run_cells("r", rows)
    s.finish_run("r")
    s.close()
    return tmp_path


def test_stored_hash_equal_is_registered_whatever_the_declared_date(tmp_path):
    run = _store(tmp_path, _set())
    claims, _ = evaluate_claims(run, _set())
    reg = claims[0].registration
    assert reg.status == "registered" and not claims[0].post_hoc  # the stored hash decides, not the YAML date
    assert f"`{reg.sha256[:12]}`" in to_markdown(claims) and reg.sha256 in to_markdown(claims)


@pytest.mark.parametrize("changed, field", [(_set(b="other"), "comparisons"), (_set(role="secondary"), "role")])
def test_a_claim_edited_after_the_run_is_post_hoc_and_names_the_change(tmp_path, changed, field):
    run = _store(tmp_path, _set())
    claims, _ = evaluate_claims(run, changed)
    assert claims[0].post_hoc and field in claims[0].registration.changed
    assert f"changed since the run started" in to_markdown(claims)


def test_runs_that_predate_the_record_fall_back_to_the_declared_commit_date(tmp_path):
    claims, _ = evaluate_claims(_store(tmp_path, None), _set())
    assert claims[0].post_hoc and "predates stored hashes" in claims[0].registration.how


def test_a_run_stores_the_claim_sets_of_its_config():
    records = records_for_config("configs/paper-fashion-mnist.yaml")
    assert [r["claim_set"] for r in records] == ["paper"]
    assert len(records[0]["claims"]) == len(load_claim_set("paper").claims)
    assert all(len(c["sha256"]) == 64 for c in records[0]["claims"])


def test_a_run_of_a_config_that_answers_one_claim_stores_its_claim_set():
    """The AutoAttack config answers one claim of the paper set: its runs store the set's hashes too."""
    records = records_for_config("configs/paper-fashion-mnist-autoattack.yaml")
    assert [r["claim_set"] for r in records] == ["paper"]
    assert records_for_config("configs/quickstart.yaml") == []


@pytest.mark.parametrize("other_stored", [True, False])
def test_a_claim_answered_by_another_folder_is_judged_against_that_folders_stored_hashes(tmp_path, other_stored):
    """A claim answered by another config's folder (``--with``) is pre-registered by the hash that folder's
    first run stored, not by the main run's (which may not hold it); without one, by the declared date."""
    cs = ClaimSet.model_validate({"description": "t", "config": "t.yaml", "name": "t", "claims": [
        {"title": "here", "kind": "directional", "role": "primary",
         "comparisons": [{"a": "good", "b": "base", "attack": "clean", "metric": "correct"}]},
        {"title": "there", "kind": "directional", "role": "exploratory", "config": "o.yaml",
         "declared": {"commit": "abc1234", "date": "2999-01-01T00:00:00Z"},
         "comparisons": [{"a": "good", "b": "base", "attack": "clean", "metric": "correct"}]}]})
    main = _store(tmp_path / "main", None)
    other = tmp_path / "other"
    rng = np.random.default_rng(1)
    s = StoreWriter(other / "results.sqlite")
    s.start_run("o", config_name="o", config_path="configs/o.yaml", config_yaml="name: o\n",
                claims=json.dumps([record(cs)]) if other_stored else None)
    rows = []
    for seed in range(3):
        base = rng.random(N) < 0.7
        rows += [add_model(s, "o", "base", seed, "clean", base),
                 add_model(s, "o", "good", seed, "clean", base | (rng.random(N) < 0.3))]
    s.add_run_cells("o", rows)
    s.finish_run("o")
    s.close()
    with sqlite3.connect(other / "results.sqlite") as db:  # add_model's cells carry no real start time
        db.execute("UPDATE cells SET started_at = '2026-12-07T06:00:00+00:00'")
    claims, _ = evaluate_claims(main, cs, others=[other])
    here, there = claims[0].registration, claims[1].registration
    assert here.status == "post hoc" and "predates stored hashes" in here.how  # the main run stored none
    if other_stored:
        assert there.status == "registered" and "hash stored when the run started" in there.how
    else:
        assert there.status == "post hoc" and "predates stored hashes" in there.how


def test_declared_is_the_last_commit_that_changed_each_definition():
    """Each shipped claim's ``declared`` names the last commit that changed its definition (claim set or
    rules), that commit's date and the fields it changed, recomputed from git."""
    from claim_history import history

    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "--git-dir"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "robustbench_leak/report"],
                           capture_output=True, text=True).stdout
    for name in claim_set_names():
        path = f"robustbench_leak/report/claim_sets/{name}.yaml"
        if path in dirty or "verdict_rules.yaml" in dirty:
            pytest.skip(f"{path} or the rules have uncommitted changes: commit them, then update declared")
        found = {h["title"]: h for h in history(path)}
        for claim in load_claim_set(name).claims:
            h = found[claim.title]
            assert claim.declared is not None, (name, claim.title)
            assert h["commit"].startswith(claim.declared.commit), (name, claim.title, h)
            assert h["date"].replace("Z", "+00:00") == claim.declared.date.isoformat(), (name, claim.title)
            assert h["changed"] == list(claim.declared.changed), (name, claim.title, h["changed"])


def test_a_later_run_s_stored_hash_is_printed_but_does_not_pre_register(tmp_path):
    """Seeds added by a later run that stored hashes: the first run still decides (post hoc by date)."""
    run = _store(tmp_path, None)
    s = StoreWriter(run / "results.sqlite")
    s.start_run("r2", config_name="t", config_yaml="name: t\n", claims=json.dumps([record(_set())]))
    with s.transaction() as c:  # the second run plans the same cells
        c.execute("INSERT INTO run_cells SELECT 'r2', cell_key, kind, train_key, model, arch, dataset, seed, attack "
                  "FROM run_cells WHERE run_id = 'r'")
    s.finish_run("r2")
    s.close()
    claims, _ = evaluate_claims(run, _set())
    reg = claims[0].registration
    assert claims[0].post_hoc and f"stored `{reg.sha256[:12]}`, equal to it" in reg.how
