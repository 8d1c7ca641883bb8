"""``rbleak run`` end to end on a tiny synthetic config: outputs, checkpoint reuse, resume, early failure."""

import json
import sqlite3

import pandas as pd
import pytest
from conftest import stored_info

from robustbench_leak.cli import main
from robustbench_leak.config import load_config
from robustbench_leak.pipeline import run_config
from robustbench_leak.run.executor import LocalExecutor
from robustbench_leak.run.plan import plan


def test_run_writes_full_leaderboard_and_reuses_checkpoints(tiny_config, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(cache))
    out = tmp_path / "out"
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert first.count("[train]") == 4  # 2 models: 'training on' and 'done' lines
    assert len(list(cache.glob("*.pt"))) == 2

    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board.model.sort_values()) == ["small-3x3", "small-7x7-hamming"]
    for col in ["clean.accuracy", "deepfool.success_rate", "deepfool.rho_mean", "deepfool.rho_median",
                "spatial.robust_accuracy", "spatial.transform", "params", "flops", "kernel", "window"]:
        assert board[col].notna().all(), col
    assert set(board.kernel) == {"3x3", "7x7"} and set(board.window) == {"none", "hamming"}
    # the synthetic classes are learnable: far above the 10% chance level after 3 epochs
    assert (board["clean.accuracy"] > 0.5).all()
    md = (out / "leaderboard.md").read_text()
    assert "small-7x7-hamming" in md and "## Legend" in md and "rho_mean" in md
    # every export, the plots and the HTML page, from the same stored records
    records = json.loads((out / "leaderboard.json").read_text())["records"]
    assert [r["name"] for r in records] == list(board.model)
    assert records[0]["metrics"]["clean.accuracy"]["value"] == pytest.approx(board["clean.accuracy"][0])
    assert "\\toprule" in (out / "leaderboard.tex").read_text()
    plots = out / "plots"
    for name in ("accuracy_vs_robustness", "robustness_curves", "training_curves", "first_layer_kernels", "windows"):
        assert (plots / f"{name}.png").is_file() and (plots / f"{name}.svg").is_file(), name
    html = (out / "leaderboard.html").read_text()
    heatmap = (plots / "spatial_heatmap.png").is_file()  # only when the spatial engine stored its grid
    spectra = (plots / "perturbation_spectra.png").is_file()  # the native DeepFool stores perturbation spectra
    assert spectra
    assert html.count('src="data:image/png;base64,') == 5 + heatmap + spectra
    assert "small-7x7-hamming" in html and "deepfool.rho_mean" in html
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seeds"] == [0] and prov["versions"]["torch"] and prov["device"].startswith("cpu")
    assert prov["date"] and prov["config"] == str(tiny_config)

    # second run of the same config: loads checkpoints, recomputes nothing
    out2 = tmp_path / "out2"
    assert main(["run", str(tiny_config), "--out", str(out2), "--quiet"]) == 0
    second = capsys.readouterr().out
    assert "[train]" not in second and second.count("[cache]") == 2 and "loaded checkpoint" in second
    board2 = pd.read_csv(out2 / "leaderboard.csv")
    pd.testing.assert_series_equal(board2["clean.accuracy"], board["clean.accuracy"])

    # same output folder again: every eval cell is already stored
    assert main(["run", str(tiny_config), "--out", str(out), "--quiet"]) == 0
    third = capsys.readouterr().out
    assert third.count("[skip]") == 2 + 6 and "[eval]" not in third and "[cache]" not in third
    # the train cells keep the record of the run that trained them (not overwritten by a cache load)
    infos = sqlite3.connect(out / "results.sqlite").execute("SELECT info FROM cells WHERE kind = 'train'").fetchall()
    assert [stored_info(i)["loaded_from_cache"] for (i,) in infos] == [False, False]


class CrashAfter:
    """The local executor, dying after ``n`` finished cells, like a run killed halfway."""

    def __init__(self, n: int) -> None:
        self.n = n

    def execute(self, jobs, ctx, log):
        for outcome in LocalExecutor().execute(jobs, ctx, log):
            if outcome.state == "started" and self.n == 0:
                raise KeyboardInterrupt
            if outcome.state != "started":
                self.n -= 1
            yield outcome


def test_killed_run_resumes_only_missing_cells(tiny_config, tmp_path):
    config = load_config(tiny_config)
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        # local order: train A, its 3 evals, train B -> killed before any of B's evals
        run_config(config, out, executor=CrashAfter(2 + 3), progress=False, log=lines.append)
    done = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT COUNT(*) FROM cells WHERE kind = 'eval' AND status = 'done'").fetchone()[0]
    assert done == 3
    status = sqlite3.connect(out / "results.sqlite").execute("SELECT status FROM runs").fetchone()[0]
    assert status == "interrupted"

    lines.clear()
    run_config(config, out, progress=False, log=lines.append)
    assert sum(line.startswith("[skip]") for line in lines) == 2 + 3  # both trained models, A's three evals
    assert sum(line.startswith("[eval]") for line in lines) == 3
    assert not any(line.startswith("[train]") for line in lines)
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["deepfool.rho_mean"].notna().all() and board["spatial.robust_accuracy"].notna().all()


def test_typo_fails_before_training(tmp_path, capsys, monkeypatch):
    from conftest import TINY_CONFIG

    cache = tmp_path / "cache"
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(cache))
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_CONFIG.replace("lr: 0.1", "lr: 0.1, epocs: 3"))
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "training.epocs" in err and "epochs" in err
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_corrupt_cached_checkpoint_is_moved_aside_and_retrained(tiny_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(cache))
    config = load_config(tiny_config)
    trains, _ = plan(config)
    cache.mkdir()
    (cache / f"{trains[0].key}.pt").write_bytes(b"<html>not a checkpoint</html>")
    lines: list[str] = []
    run_config(config, tmp_path / "out", progress=False, log=lines.append)
    assert len(list(cache.glob("*.bad-*"))) == 1  # kept for inspection, not deleted
    assert sum("training on" in line for line in lines) == 2


def test_plan_keys(tiny_config):
    config = load_config(tiny_config)
    trains, evals = plan(config)
    assert len(trains) == 2 and len(evals) == 6
    assert len({t.key for t in trains}) == 2 and len({e.key for e in evals}) == 6
    # the test split does not change what the weights are
    config.run.datasets[0].test_subset = 10
    trains2, evals2 = plan(config)
    assert [t.key for t in trains2] == [t.key for t in trains]
    assert {e.key for e in evals2}.isdisjoint({e.key for e in evals})
