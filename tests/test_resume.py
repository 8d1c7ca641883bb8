"""Preemption-safe trainings: a training killed with SIGKILL resumes from its epoch checkpoint and ends with
weights bitwise equal to an uninterrupted one; ``rbleak run --time-limit`` stops at an epoch boundary, marks
the run interrupted, exits 75, and the same command resumes. The epoch-checkpoint settings are not in the key."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from robustbench_leak.cli import main
from robustbench_leak.config.training import TrainSettings, weight_settings
from robustbench_leak.data import load_dataset
from robustbench_leak.models import create_model
from robustbench_leak.models.checkpoints import EPOCH_SUFFIX
from robustbench_leak.run.deadline import Deadline
from robustbench_leak.run.training import train_model

CONFIG = """
name: resumable
device: cpu
seeds: [0]
datasets:
  - {name: synthetic, n_train: 128, n_test: 32}
training: {optimizer: sgd, lr: 0.05, epochs: 4, batch_size: 32, schedule: cosine, augment: flip_crop,
           checkpoint_every: 1}
models:
  - {name: small, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 3, window: none}}
attacks: [clean]
"""
STEPS = 4  # 128 images / batch 32
# the child counts calls of lr_factor (one per step) and kills itself with SIGKILL in the middle of epoch 3
KILLER = f"""
import os, signal, sys
import robustbench_leak.run.training as T
calls, real = [0], T.lr_factor
def lr_factor(s, progress):
    calls[0] += 1
    if calls[0] == 2 * {STEPS} + 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(s, progress)
T.lr_factor = lr_factor
from robustbench_leak.cli import main
sys.exit(main(["run", sys.argv[1], "--out", sys.argv[2], "--quiet"]))
"""


def _weights(cache: Path) -> dict[str, torch.Tensor]:
    (path,) = [p for p in cache.glob("*.pt") if not p.name.endswith(EPOCH_SUFFIX)]
    return torch.load(path, weights_only=True)["state_dict"]


def _reference(tmp_path: Path, config: Path, monkeypatch) -> dict[str, torch.Tensor]:
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache-ref"))
    assert main(["run", str(config), "--out", str(tmp_path / "ref"), "--quiet"]) == 0
    return _weights(tmp_path / "cache-ref")


def _status(out: Path) -> list[str]:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return [r[0] for r in con.execute("SELECT status FROM runs ORDER BY started_at, rowid")]
    finally:
        con.close()


def test_sigkilled_training_resumes_bitwise_from_its_epoch_checkpoint(tmp_path, monkeypatch, capsys):
    config = tmp_path / "resumable.yaml"
    config.write_text(CONFIG)
    reference = _reference(tmp_path, config, monkeypatch)
    cache = tmp_path / "cache"
    env = {**os.environ, "RBLEAK_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(config), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (partial,) = cache.glob(f"*{EPOCH_SUFFIX}")
    assert torch.load(partial, weights_only=True)["epoch"] == 2  # epoch 3 was lost half-way
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(cache))
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "[resume] small / synthetic / seed 0: from its epoch checkpoint at epoch 2 of 4" in capsys.readouterr().out
    resumed = _weights(cache)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert not list(cache.glob(f"*{EPOCH_SUFFIX}"))  # a finished training removes its epoch checkpoint


def test_time_limit_stops_at_an_epoch_boundary_exits_75_and_resumes(tmp_path, monkeypatch, capsys):
    config = tmp_path / "resumable.yaml"
    config.write_text(CONFIG.replace("checkpoint_every: 1", "checkpoint_every: 0"))  # the stop writes one anyway
    reference = _reference(tmp_path, config, monkeypatch)
    cache, out = tmp_path / "cache", tmp_path / "out"
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(cache))
    asked: list[float] = []

    def allows(self, seconds):  # the clock says: the second epoch would not end in time
        asked.append(seconds)
        return len(asked) < 2

    monkeypatch.setattr(Deadline, "allows", allows)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--quiet", "--time-limit", "3600"]) == 75
    err = capsys.readouterr().err
    assert err.startswith("rbleak: time limit reached (small: stopped after epoch 2 of 4") and "resume" in err
    assert _status(out) == ["interrupted"]
    (partial,) = cache.glob(f"*{EPOCH_SUFFIX}")
    assert torch.load(partial, weights_only=True)["epoch"] == 2
    monkeypatch.undo()
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(cache))
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert _status(out) == ["interrupted", "done"]
    resumed = _weights(cache)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_time_limit_refuses_bad_values_in_one_line(tmp_path, capsys):
    config = tmp_path / "resumable.yaml"
    config.write_text(CONFIG)
    for bad in ("0", "-5", "soon", "inf"):
        with pytest.raises(SystemExit) as exc:
            main(["run", str(config), "--time-limit", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--time-limit" in err and "positive number of seconds" in err
    assert not (tmp_path / "runs").exists()


def test_resume_payload_continues_bitwise_with_adam_and_minutes_clock():
    data = load_dataset("synthetic", n_train=64, n_test=16, image_size=12, num_classes=4)
    s = TrainSettings(optimizer="adam", lr=0.01, epochs=3, batch_size=16, augment="flip_crop",
                      checkpoint_minutes=1e-9)  # every epoch: the clock has always run out

    def model():
        torch.manual_seed(3)
        return create_model("tomen_cnn", 4, 1, n_layers=2, width=4, kernel_size=3, window="hamming")

    cpu = torch.device("cpu")
    whole = model()
    train_model(whole, data, s, 5, cpu, progress=False)
    saved: list[dict] = []
    train_model(model(), data, s, 5, cpu, progress=False, save_progress=saved.append)
    assert [p["epoch"] for p in saved] == [1, 2]
    resumed = model()
    history = train_model(resumed, data, s, 5, cpu, progress=False, resume=saved[0])
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_epoch_checkpoint_and_packing_settings_are_not_in_the_key():
    base = TrainSettings().__dict__
    changed = {**base, "checkpoint_every": 2, "checkpoint_minutes": 5.0, "pack": 8, "channels_last": "auto"}
    assert weight_settings(changed) == weight_settings(base)
    assert weight_settings({**base, "channels_last": True}) != weight_settings(base)  # asked for: in the key


def test_shipped_configs_keep_their_cell_keys():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "config_keys.py"), "--check",
                           str(REPO / "results" / "bench" / "config-keys.json")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ": 0 changed, 0 new" in proc.stdout
