"""Hardening v4 (issue 29), a test per class of hostile input or fault: non-finite model outputs, the Python
API's folder rules, checksummed checkpoints, a time limit that always holds, and errors that come early and
in one line. (Robust accuracy's definition: tests/test_robust_accuracy.py.)"""

from __future__ import annotations


import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import REPO

import robustbench_leak as rb
from robustbench_leak.cli import main
from robustbench_leak.config import ConfigError, load_config
from robustbench_leak.models.checkpoints import (CheckpointCache, CheckpointError, EpochCheckpoint, read_checkpoint,
                                                 save_checkpoint, state_sha256)
from robustbench_leak.run.deadline import EXIT_TIME_LIMIT, Deadline, TimeLimitReached
from robustbench_leak.runtime import NonFiniteLogits, predict

DATA = {"name": "synthetic", "n_train": 32, "n_test": 48, "image_size": 12, "num_classes": 4}
CONFIG = """
name: v4
device: cpu
seeds: [0]
datasets: [{name: synthetic, n_train: 32, n_test: 16, image_size: 12, num_classes: 4}]
training: {epochs: 1, batch_size: 16}
models:
  - {name: a, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 3}}
attacks: [clean]
"""


class Small(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(144, 4)

    def forward(self, x):
        return self.head(x.flatten(1))


class Poisoned(Small):
    """Finite logits on the first ``finite_calls`` forward passes of the process, then ``value``."""

    calls = [0]  # shared by every deep copy that evaluate makes
    finite_calls = 0
    value = float("nan")

    def forward(self, x):
        Poisoned.calls[0] += 1
        out = super().forward(x)
        return out if Poisoned.calls[0] <= self.finite_calls else out * self.value


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _done_cells(out: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(out / "results.sqlite") as c:
        return list(c.execute("SELECT kind, status FROM cells WHERE status = 'done' AND kind = 'eval'"))


# 29.2 non-finite model outputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_evaluate_refuses_non_finite_logits_before_any_work(tmp_path, value):
    Poisoned.calls[0], Poisoned.finite_calls, Poisoned.value = 0, 0, value
    with pytest.raises(ValueError, match=r"non-finite logits \(NaN or inf\).*nothing was run") as exc:
        rb.evaluate(Poisoned(), dataset=DATA, attacks=["clean", "deepfool"], n_samples=16, device="cpu",
                    out=tmp_path / "out")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_module_whose_forward_fails_in_one_line(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(7, 4))  # the wrong input size: a shape error inside torch
    with pytest.raises(ValueError, match=r"^evaluate: model: its forward on \d+ images of synthetic .* raised "
                                         r"RuntimeError: ") as exc:
        rb.evaluate(model, dataset=DATA, attacks=["clean"], device="cpu", out=tmp_path / "out")
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


def test_no_cell_computed_from_non_finite_logits_is_stored_as_finished(tmp_path):
    # finite on the probe, NaN once the cells run: the cells fail, none is stored as done
    Poisoned.calls[0], Poisoned.finite_calls, Poisoned.value = 0, 1, float("nan")
    out = tmp_path / "out"
    with pytest.raises(Exception, match="non-finite logits"):
        rb.evaluate(Poisoned(), dataset=DATA, attacks=["clean", "deepfool"], n_samples=16, device="cpu", out=out)
    assert _done_cells(out) == []


def test_predict_refuses_non_finite_logits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    with pytest.raises(NonFiniteLogits, match="on 5 of 5 images"):
        predict(model, torch.rand(5, 1, 2, 2), torch.device("cpu"))


def _nan_checkpoint(tmp_path: Path) -> Path:
    config = load_config(_write(tmp_path / "ok.yaml", CONFIG))
    from robustbench_leak.run.cells import build_model, get_dataset
    from robustbench_leak.run.plan import plan

    task = plan(config)[0][0]
    model = build_model(task, get_dataset(task.dataset))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(model.state_dict(), path)
    return path


def test_loaded_checkpoints_with_non_finite_weights_are_refused_before_any_work(tmp_path):
    path = _nan_checkpoint(tmp_path)
    text = CONFIG.replace("kernel_size: 3}", f"kernel_size: 3}}, checkpoint: {path}")
    with pytest.raises(ConfigError, match=r"models\[0\]\.checkpoint: .*nan\.pt: non-finite values") as exc:
        load_config(_write(tmp_path / "nan.yaml", text))
    assert "\n" not in str(exc.value)


# 29.3 the Python API's folder rules -----------------------------------------------------------------------
def test_evaluate_refuses_a_name_the_folder_uses_for_other_weights(tmp_path):
    out = tmp_path / "out"
    rb.evaluate(Small(0), dataset=DATA, attacks=["clean"], device="cpu", out=out, name="m3")
    before = sorted(p.name for p in (out / "weights").iterdir())
    with pytest.raises(ValueError, match=r"name: 'm3': .* already holds a model of that name with other weights"):
        rb.evaluate(Small(1), dataset=DATA, attacks=["clean"], device="cpu", out=out, name="m3")
    assert sorted(p.name for p in (out / "weights").iterdir()) == before  # nothing written by the refused call
    again = rb.evaluate(Small(0), dataset=DATA, attacks=["clean"], device="cpu", out=out, name="m3", seed=1)
    assert set(again.model) == {"m3"}  # the same weights under the same name (another seed): accepted


def test_evaluate_refuses_a_config_runs_model_name(tmp_path, monkeypatch):
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    cfg = _write(tmp_path / "c.yaml", CONFIG.replace("n_test: 16", "n_test: 48"))
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    with pytest.raises(ValueError, match="name: 'a': .* already holds a model of that name"):
        rb.evaluate(Small(0), dataset=DATA, attacks=["clean"], device="cpu", out=out, name="a")


@pytest.mark.parametrize("bad", [{"dataset": {**DATA, "name": "synthtic"}}, {"attacks": ["clean", "deepfoo"]},
                                 {"device": "cuda:7"}, {"time_limit": 0}])
def test_a_call_refused_on_an_argument_leaves_nothing_and_the_retry_runs(tmp_path, bad):
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        rb.evaluate(Small(0), **{"dataset": DATA, "attacks": ["clean"], "device": "cpu", "out": out, **bad})
    assert not out.exists() or not any(out.iterdir())
    df = rb.evaluate(Small(0), dataset=DATA, attacks=["clean"], device="cpu", out=out)
    assert set(df.attack) == {"clean"}


# 29.4 checksummed checkpoints -----------------------------------------------------------------------------
def _overwrite_tensor_bytes(path: Path, tensor: torch.Tensor, n: int = 64) -> None:
    """Overwrite ``n`` bytes inside ``tensor``'s stored data: the zip stays valid (torch checks no CRC)."""
    data = path.read_bytes()
    raw = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0
    path.write_bytes(data[:at] + bytes(255 - b for b in data[at:at + n]) + data[at + n:])
    with zipfile.ZipFile(path) as z:  # still a readable archive
        assert z.namelist()


def _payload(seed: int, epoch: int) -> dict:
    torch.manual_seed(seed)
    return {"epoch": epoch, "history": [{"epoch": epoch}], "rng": {"cpu": torch.get_rng_state()},
            "optimizer": {"state": {0: {"momentum_buffer": torch.randn(64)}}, "param_groups": [{"lr": 0.1}]},
            "model": {"w": torch.randn(32, 32), "b": torch.randn(32)}}


def test_a_damaged_epoch_checkpoint_is_discarded_and_training_goes_on_from_the_last_good_one(tmp_path, capsys):
    epochs = EpochCheckpoint(CheckpointCache(tmp_path), "k")
    epochs.save(_payload(0, 1))
    epochs.save(_payload(1, 2))
    _overwrite_tensor_bytes(epochs.path, _payload(1, 2)["model"]["w"])
    loaded = epochs.load()
    err = capsys.readouterr().out.strip().splitlines()
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], _payload(0, 1)["model"]["w"])
    assert len(err) == 1 and "checksum" in err[0] and "previous epoch checkpoint" in err[0]
    assert not epochs.path.exists() and list(tmp_path.glob("k.epoch.pt.bad-*"))  # moved aside, not deleted
    _overwrite_tensor_bytes(epochs.previous, _payload(0, 1)["optimizer"]["state"][0]["momentum_buffer"])
    assert epochs.load() is None  # no good state left: training starts from scratch
    assert "from the start" in capsys.readouterr().out


def test_epoch_checkpoints_of_earlier_versions_without_a_checksum_still_load(tmp_path):
    epochs = EpochCheckpoint(CheckpointCache(tmp_path), "k")
    torch.save({**_payload(0, 3), "format": 1, "key": "k"}, epochs.path)  # what the current release writes
    assert epochs.load()["epoch"] == 3


def test_cached_final_weights_are_verified_and_a_damaged_file_is_retrained(tmp_path, capsys):
    model = nn.Linear(32, 32)
    cache = CheckpointCache(tmp_path)
    path = cache.save("k", model, {"key": "k"})
    assert torch.load(path, weights_only=True)["sha256"] == state_sha256(model.state_dict())
    _overwrite_tensor_bytes(path, model.weight.detach())
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(path)
    assert cache.load("k", nn.Linear(32, 32)) is None  # moved aside: the caller retrains
    assert "retraining" in capsys.readouterr().out and not path.exists()
    old = tmp_path / "old.pt"  # an earlier version's file: no checksum, loads
    torch.save({"format": 1, "meta": "{}", "state_dict": model.state_dict()}, old)
    assert torch.equal(read_checkpoint(old)[0]["weight"], model.weight)


def test_a_damaged_checkpoint_file_named_by_a_config_is_refused_when_it_loads(tmp_path):
    path = _nan_checkpoint(tmp_path)
    state = {k: torch.nan_to_num(v) for k, v in torch.load(path, weights_only=True).items()}
    ours = tmp_path / "ours.pt"
    torch.save({"format": 1, "meta": "{}", "state_dict": state, "sha256": state_sha256(state)}, ours)
    biggest = max(state.values(), key=lambda t: t.numel())
    _overwrite_tensor_bytes(ours, biggest)
    text = CONFIG.replace("kernel_size: 3}", f"kernel_size: 3}}, checkpoint: {ours}")
    with pytest.raises(ConfigError, match="checksum"):
        load_config(_write(tmp_path / "ours.yaml", text))


# 29.5 the time limit --------------------------------------------------------------------------------------
def _child(code: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RBLEAK_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


def test_the_backstop_holds_even_where_cleanup_code_swallows_interrupts(tmp_path):
    proc = _child("""
        import gc, time
        from robustbench_leak.run.deadline import Backstop, Deadline

        class Greedy:  # cleanup code that swallows anything raised while it runs
            def __del__(self):
                try:
                    time.sleep(0.01)
                except BaseException:
                    pass

        Backstop(Deadline.after(0.5))
        t0 = time.time()
        while time.time() - t0 < 30:  # a cell that overruns every soft check
            [Greedy() for _ in range(100)]
            gc.collect()
        print("went on past the limit")
    """, tmp_path)
    assert proc.returncode == EXIT_TIME_LIMIT, proc.stdout + proc.stderr
    assert "went on" not in proc.stdout
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "time limit reached" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_a_run_the_backstop_ends_is_stored_as_interrupted_and_the_same_command_resumes(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "c.yaml", CONFIG)
    proc = _child(f"""
        import sys, time
        import robustbench_leak.run.cells as C
        from robustbench_leak.cli import main
        def overrun(*a, **k):  # an eval cell that overruns every soft check
            time.sleep(60)
        C.eval_cell = overrun
        sys.exit(main(["run", {str(cfg)!r}, "--out", "out", "--quiet", "--time-limit", "4"]))
    """, tmp_path, timeout=120)
    assert proc.returncode == EXIT_TIME_LIMIT, proc.stdout[-1000:] + proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr
    store = tmp_path / "out" / "results.sqlite"
    with sqlite3.connect(store) as c:
        assert list(c.execute("SELECT status, finished_at IS NOT NULL FROM runs")) == [("interrupted", 1)]
    assert _done_cells(tmp_path / "out") == []  # the cell in progress is not stored
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    from robustbench_leak.pipeline import run_config

    run_config(load_config(cfg), tmp_path / "out", progress=False, formats=("csv",))  # what `rbleak run` calls
    with sqlite3.connect(store) as c:
        assert sorted(r[0] for r in c.execute("SELECT status FROM runs")) == ["done", "interrupted"]
    assert _done_cells(tmp_path / "out") == [("eval", "done")]


def test_sigterm_during_a_cell_stores_the_run_as_interrupted_in_one_line(tmp_path):
    """A scheduler's SIGTERM (preemption, ``kill``) is handled as Ctrl-C: the run is stored as interrupted, one
    line says so, exit status 143, and the same command resumes."""
    cfg = _write(tmp_path / "c.yaml", CONFIG)
    proc = _child(f"""
        import os, signal, sys, time
        import robustbench_leak.run.cells as C
        from robustbench_leak.cli import main
        def preempted(*a, **k):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        C.eval_cell = preempted
        sys.exit(main(["run", {str(cfg)!r}, "--out", "out", "--quiet"]))
    """, tmp_path, timeout=120)
    assert proc.returncode == 143, proc.stdout[-1000:] + proc.stderr[-1000:]
    assert proc.stderr.strip().splitlines() == ["rbleak: terminated (SIGTERM); rerun the same command to resume "
                                                "(finished cells are kept)"]
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as c:
        assert list(c.execute("SELECT status FROM runs")) == [("interrupted",)]
    before = signal.getsignal(signal.SIGTERM)
    main(["list", "attacks"])
    assert signal.getsignal(signal.SIGTERM) == before  # main() in a caller's process leaves its handler as it was


def test_a_rerun_whose_cells_are_all_stored_exits_0_however_long_rendering_takes(tmp_path):
    cfg = _write(tmp_path / "c.yaml", CONFIG)
    proc = _child(f"""
        import sys, time
        import robustbench_leak.pipeline as P
        from robustbench_leak.cli import main
        real, delay = P.render_leaderboard, [0]
        def render(out, formats, *a, **k):
            time.sleep(delay[0])
            return real(out, ("csv",), *a, **k)  # the CSV alone: plots take long on a busy CI machine
        P.render_leaderboard = render
        assert main(["run", {str(cfg)!r}, "--out", "out", "--quiet"]) == 0
        delay[0] = 3  # the rerun's rendering goes past its whole limit
        sys.exit(main(["run", {str(cfg)!r}, "--out", "out", "--quiet", "--time-limit", "1.5"]))
    """, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-1000:]
    assert (tmp_path / "out" / "leaderboard.csv").is_file()


def test_run_config_and_evaluate_take_a_time_limit(tmp_path, monkeypatch):
    from robustbench_leak.pipeline import run_config

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config(_write(tmp_path / "c.yaml", CONFIG))
    monkeypatch.setattr(Deadline, "remaining", lambda self: -1.0)  # the clock has run out before the first cell
    with pytest.raises(TimeLimitReached):
        run_config(config, tmp_path / "out", progress=False, time_limit=60)
    with pytest.raises(TimeLimitReached):
        rb.evaluate(Small(0), dataset=DATA, attacks=["clean"], device="cpu", out=tmp_path / "api", time_limit=60)
    monkeypatch.undo()
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    df = rb.evaluate(Small(0), dataset=DATA, attacks=["clean"], device="cpu", out=tmp_path / "api", time_limit=600)
    assert set(df.attack) == {"clean"}  # the same call resumes once time allows


def test_no_eval_cell_starts_that_would_not_end_in_time(tmp_path, monkeypatch):
    from robustbench_leak.pipeline import run_config

    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config(_write(tmp_path / "c.yaml", CONFIG.replace("seeds: [0]", "seeds: [0, 1]")))
    # time is left, but not for another cell as long as the last one of the same attack
    monkeypatch.setattr(Deadline, "allows", lambda self, seconds: False)
    with pytest.raises(TimeLimitReached, match="before this cell: eval"):
        run_config(config, tmp_path / "out", progress=False, time_limit=3600, formats=())
    assert len(_done_cells(tmp_path / "out")) == 1


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "60", 10**9])
def test_time_limit_values_are_checked(tmp_path, bad):
    from robustbench_leak.pipeline import run_config

    with pytest.raises(ValueError, match="time_limit"):
        run_config(None, tmp_path / "out", time_limit=bad)
    assert not (tmp_path / "out").exists()


# 29.6 errors that come late or long -----------------------------------------------------------------------
@pytest.mark.parametrize("training, key", [("precision: tf32", "training.precision"),
                                           ("compile: cudagraph", "training.compile")])
def test_device_dependent_settings_are_checked_with_the_config(tmp_path, training, key):
    text = CONFIG.replace("batch_size: 16}", f"batch_size: 16, {training}}}")
    with pytest.raises(ConfigError, match=rf"{key}: .*needs a CUDA device.*\(device: cpu\)"):
        load_config(_write(tmp_path / "c.yaml", text))
    per_model = CONFIG.replace("kernel_size: 3}", f"kernel_size: 3}}, training: {{{training}}}")
    with pytest.raises(ConfigError, match=rf"models\[0\]\.{key}: "):
        load_config(_write(tmp_path / "m.yaml", per_model))


@pytest.mark.parametrize("argv", [["run", "x.yaml", "--time-limit", "0"], ["run"], ["frob"], ["list", "foo"],
                                  ["run", "x.yaml", "--bogus"], ["bench", "--n-images", "0"],
                                  ["run", "x.yaml", "--time-limit", "1e12"], ["list", "models", "--input-size",
                                                                              "1,100000,100000"]])
def test_command_line_errors_are_one_line_pointing_to_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("rbleak") and "--help" in err
    assert "usage:" not in err


@pytest.mark.parametrize("kind, params, message", [
    ("deepfool", {"max_iter": 10**9}, "'max_iter' must be at most 1,000,000"),
    ("pgd", {"batch_size": 10**8}, "'batch_size' must be at most 1,000,000"),
    ("spatial", {"num_translations": 1000, "num_rotations": 1000}, "1,000,000,000 transforms; at most 100,000"),
])
def test_attack_counts_have_upper_bounds(kind, params, message):
    from robustbench_leak.attacks import build_attack

    with pytest.raises(ValueError, match=message):
        build_attack(kind, None, **params)


@pytest.mark.parametrize("flags", [["--packs", "100000"], ["--packs", ",".join(["1"] * 40)],
                                   ["--sizes", "6x100000@128"], ["--sizes", "6x64@10000000"]])
def test_numeric_bench_flags_have_upper_bounds(tmp_path, flags, capsys):
    assert main(["bench", "--training", "--device", "cpu", "--out", str(tmp_path / "b.json"), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flags[0] in err and "to" in err
    assert not (tmp_path / "b.json").exists()
