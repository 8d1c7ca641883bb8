"""Packed training (packed.py, packing.py): one packed step gives each member the loss, gradients and updated
parameters of its own unpacked step, each member draws the data order and augmentation of its unpacked
training, a packed training ends within float rounding of the unpacked ones, and a run with
``training.pack`` stores the same cells under the same keys with the pack named in each record.

Tolerance: float32 rounding of differently ordered sums. One step: losses and parameters to 1e-6 relative
(atol 1e-7), gradients to 1e-5 relative (atol 1e-6); two epochs: every weight within 1e-5 absolute."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
import torch.nn.functional as F

import robustbench_leak.run.packed as packed_mod
import robustbench_leak.run.training as train_mod
from robustbench_leak.cli import main
from robustbench_leak.config.training import TrainSettings
from robustbench_leak.data import load_dataset
from robustbench_leak.models import Normalized, create_model
from robustbench_leak.run.packed import _member_losses, pack, signature, train_packed, unpack
from robustbench_leak.run.training import make_optimizer, train_model

CPU = torch.device("cpu")
WINDOWS = ["none", "hamming", "hann", "blackman"]  # one shape: the window is a buffer


def _member(i: int) -> torch.nn.Module:
    torch.manual_seed(100 + i)
    net = create_model("tomen_cnn", 4, 1, n_layers=3, width=4, kernel_size=5, window=WINDOWS[i % 4])
    return Normalized(net, (0.5,), (0.25,))


def _data():
    return load_dataset("synthetic", n_train=80, n_test=24, image_size=12, num_classes=4)


def test_one_packed_step_matches_each_unpacked_step():
    data = _data()
    s = TrainSettings(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    k = 4
    xs = [data.train_x[8 * i:8 * i + 16] for i in range(k)]  # each member its own batch
    ys = [data.train_y[8 * i:8 * i + 16] for i in range(k)]
    alone = [_member(i).train() for i in range(k)]
    expected = []
    for m, x, y in zip(alone, xs, ys):
        opt = make_optimizer(m, s)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        grads = [p.grad.clone() for p in m.parameters()]
        opt.step()
        expected.append((loss.detach(), grads))
    members = [_member(i).train() for i in range(k)]
    net = pack(members).train()
    opt = make_optimizer(net, s)
    losses = _member_losses(net(torch.cat(xs, 1)), torch.stack(ys, 1), k, 0.0)
    losses.sum().backward()
    packed_grads = [p.grad.chunk(k) for p in net.parameters()]
    opt.step()
    unpack(net, members)
    for i, (loss, grads) in enumerate(expected):
        torch.testing.assert_close(losses[i].detach(), loss, rtol=1e-6, atol=1e-7)
        for g, pg in zip(grads, packed_grads):
            torch.testing.assert_close(pg[i], g, rtol=1e-5, atol=1e-6)
        for (name, a), b in zip(alone[i].state_dict().items(), members[i].state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)


def test_packed_training_draws_each_members_data_and_ends_within_rounding(monkeypatch):
    data = _data()
    s = TrainSettings(lr=0.05, epochs=2, batch_size=16, augment="flip_crop", weight_decay=5e-4)
    seeds = [3, 7, 11]
    draws: dict[str, list] = {"train": [], "packed": []}

    def recorder(where):
        real = train_mod.epoch_draws

        def epoch_draws(n, settings, steps, gen):
            out = real(n, settings, steps, gen)
            draws[where].append((out[0].clone(), out[1].flip.clone(), out[1].dy.clone(), out[1].dx.clone()))
            return out
        return epoch_draws

    monkeypatch.setattr(train_mod, "epoch_draws", recorder("train"))
    monkeypatch.setattr(packed_mod, "epoch_draws", recorder("packed"))
    alone = [_member(i) for i in range(3)]
    histories = [train_model(m, data, s, seed, CPU, progress=False) for m, seed in zip(alone, seeds)]
    members = [_member(i) for i in range(3)]
    results = train_packed(members, data, s, seeds, CPU, progress=False)
    # unpacked: member-major (m0 e0, m0 e1, m1 e0, ...); packed: epoch-major (e0 m0, e0 m1, ...)
    unpacked_draws = [draws["train"][2 * i + e] for e in range(2) for i in range(3)]
    assert len(draws["packed"]) == 6
    for a, b in zip(unpacked_draws, draws["packed"]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for m_alone, m_packed, h_alone, h_packed in zip(alone, members, histories, results):
        assert [r["epoch"] for r in h_packed] == [1, 2] and all(r["packed"] == 3 for r in h_packed)
        assert [r["train_accuracy"] for r in h_packed] == [r["train_accuracy"] for r in h_alone]
        assert h_packed[-1]["test_accuracy"] == h_alone[-1]["test_accuracy"]
        assert [r["loss"] for r in h_packed] == pytest.approx([r["loss"] for r in h_alone], rel=1e-6)
        for (name, a), b in zip(m_alone.state_dict().items(), m_packed.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)


def test_a_diverging_member_fails_alone():
    data = _data()
    members = [_member(i) for i in range(2)]
    with torch.no_grad():
        members[1].net.fc.weight.fill_(float("nan"))
    results = train_packed(members, data, TrainSettings(epochs=1, batch_size=16), [0, 1], CPU, progress=False)
    assert isinstance(results[1], FloatingPointError) and "member 1" in str(results[1])
    assert isinstance(results[0], list) and all(torch.isfinite(p).all() for p in members[0].parameters())


def test_only_models_of_one_shape_pack():
    assert signature(_member(0)) == signature(_member(1)) is not None  # plain and Hamming 5x5
    wider = Normalized(create_model("tomen_cnn", 4, 1, n_layers=3, width=6, kernel_size=5), (0.5,), (0.25,))
    assert signature(wider) != signature(_member(0))
    assert signature(create_model("vgg11_bn_7x7", 10, 1)) is None
    with pytest.raises(ValueError, match="differ in shape"):
        pack([_member(0), wider])


CONFIG = """
name: packed
device: cpu
seeds: [0, 1]
datasets:
  - {{name: synthetic, n_train: 64, n_test: 24}}
training: {{optimizer: sgd, lr: 0.05, epochs: 2, batch_size: 16, schedule: cosine, pack: {pack}}}
models:
  - {{name: plain, arch: tomen_cnn, options: {{n_layers: 2, width: 4, kernel_size: 5, window: none}}}}
  - {{name: hamming, arch: tomen_cnn, options: {{n_layers: 2, width: 4, kernel_size: 5, window: hamming}}}}
  - {{name: small, arch: tomen_cnn, options: {{n_layers: 2, width: 4, kernel_size: 3, window: none}}}}
attacks: [clean]
"""


def _stored(out):
    con = sqlite3.connect(out / "results.sqlite")
    try:
        cells = dict(con.execute("SELECT cell_key, status FROM cells"))
        models = {k: json.loads(e or "null") for k, e in con.execute("SELECT train_key, extra FROM models")}
        accuracy = dict(con.execute("SELECT cell_key, value FROM metrics WHERE metric = 'accuracy'"))
    finally:
        con.close()
    return cells, models, accuracy


def test_a_run_with_pack_stores_the_same_cells_under_the_same_keys(tmp_path, monkeypatch, capsys):
    results = {}
    for pack_value in ("off", 4):
        config = tmp_path / f"packed-{pack_value}.yaml"
        config.write_text(CONFIG.format(pack=pack_value))
        monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / f"cache-{pack_value}"))
        capsys.readouterr()
        assert main(["run", str(config), "--out", str(tmp_path / str(pack_value)), "--quiet"]) == 0
        results[pack_value] = (_stored(tmp_path / str(pack_value)), capsys.readouterr().out)
    (cells_off, models_off, acc_off), _ = results["off"]
    (cells_on, models_on, acc_on), log = results[4]
    assert cells_on == cells_off and set(cells_on.values()) == {"done"}  # same keys, all done
    assert "[pack] training 4 models together on cpu" in log  # plain and Hamming 5x5, seeds 0 and 1
    assert "[pack] training 2 models together on cpu: small / synthetic / seed 0; small / synthetic / seed 1" in log
    sizes = sorted(len(extra["packed_with"]) for extra in models_on.values())
    assert sizes == [1, 1, 3, 3, 3, 3]
    assert not any(extra and extra.get("packed_with") for extra in models_off.values())
    assert acc_on == acc_off and len(acc_on) == 6  # clean accuracy on 24 images: the same predictions


def test_a_packed_members_epoch_checkpoint_resumes_unpacked_within_rounding():
    data = _data()
    s = TrainSettings(optimizer="adam", lr=0.01, epochs=3, batch_size=16, augment="flip_crop", checkpoint_every=1)
    seeds = [4, 5]
    alone = [_member(i) for i in range(2)]
    for m, seed in zip(alone, seeds):
        train_model(m, data, s, seed, CPU, progress=False)
    saved: list[list[dict]] = [[], []]
    train_packed([_member(i) for i in range(2)], data, s, seeds, CPU, progress=False,
                 save_progress=[saved[0].append, saved[1].append])
    assert [[p["epoch"] for p in member] for member in saved] == [[1, 2], [1, 2]]
    for i, seed in enumerate(seeds):  # member i continues alone from its packed epoch-1 checkpoint
        resumed = _member(i)
        history = train_model(resumed, data, s, seed, CPU, progress=False, resume=saved[i][0])
        assert [h["epoch"] for h in history] == [1, 2, 3] and history[0]["packed"] == 2 and "packed" not in history[2]
        for (name, a), b in zip(alone[i].state_dict().items(), resumed.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)
