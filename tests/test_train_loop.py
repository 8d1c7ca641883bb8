"""The sync-free training loop trains bitwise the same weights on the CPU as the per-step loop it replaced."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_leak.config.training import KEY_NEUTRAL, TrainSettings, weight_settings
from robustbench_leak.data import load_dataset
from robustbench_leak.models import create_model
from robustbench_leak.run.training import lr_factor, make_optimizer, train_model


def _old_augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    # the augmentation as it was before the sync-free loop, verbatim
    if kind == "none":
        return x
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy.view(-1, 1) + torch.arange(h)).to(x.device)
    cols = (dx.view(-1, 1) + torch.arange(w)).to(x.device)
    idx = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def _old_train(model, data, s: TrainSettings, seed: int, device: torch.device) -> list[float]:
    # the per-step loop as it was (progress bar and test pass left out: neither touches the weights)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, s)
    n = len(data.train_y)
    steps = math.ceil(n / s.batch_size)
    losses = []
    for epoch in range(s.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for step in range(steps):
            lr = s.lr * lr_factor(s, epoch + step / steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * s.batch_size:(step + 1) * s.batch_size]
            x = _old_augment(data.train_x[idx].to(device), s.augment, gen)
            y = data.train_y[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
        losses.append(loss_sum / n)
    return losses


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("tomen_cnn", 4, 1, n_layers=2, width=4, kernel_size=3, window="none")


@pytest.mark.parametrize("augment", ["none", "flip_crop"])
def test_new_loop_trains_bitwise_the_old_weights_on_cpu(augment):
    data = load_dataset("synthetic", n_train=100, n_test=20, image_size=12, num_classes=4)
    s = TrainSettings(lr=0.05, epochs=2, batch_size=32, augment=augment)  # 100 = 3 x 32 + 4: a short last batch
    old, new = _model(3), _model(3)
    old_losses = _old_train(old, data, s, seed=3, device=torch.device("cpu"))
    history = train_model(new, data, s, seed=3, device=torch.device("cpu"), progress=False)
    for (name, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in history] == old_losses


def test_eval_every_and_the_last_epoch_have_a_test_pass():
    data = load_dataset("synthetic", n_train=40, n_test=20, image_size=12, num_classes=4)
    history = train_model(_model(0), data, TrainSettings(epochs=5, batch_size=16, eval_every=2), seed=0,
                          device=torch.device("cpu"), progress=False)
    assert [("test_accuracy" in h) for h in history] == [False, True, False, True, True]
    assert all(0 <= h["test_accuracy"] <= 1 for h in history if "test_accuracy" in h)


def test_non_finite_loss_is_raised_at_the_end_of_the_epoch_with_where_it_began():
    data = load_dataset("synthetic", n_train=64, n_test=16, image_size=12, num_classes=4)
    with pytest.raises(FloatingPointError, match=r"^m: loss became non-finite at epoch 1, step \d+; lower"):
        train_model(_model(0), data, TrainSettings(lr=1e30, epochs=2, batch_size=16, schedule="none"), seed=0,
                    device=torch.device("cpu"), progress=False, desc="m")


def test_deterministic_and_bf16_run_on_cpu_and_cuda_only_options_are_refused():
    data = load_dataset("synthetic", n_train=32, n_test=16, image_size=12, num_classes=4)
    cpu = torch.device("cpu")
    a, b = _model(1), _model(1)
    train_model(a, data, TrainSettings(epochs=1, batch_size=16), seed=1, device=cpu, progress=False)
    train_model(b, data, TrainSettings(epochs=1, batch_size=16, deterministic=True), seed=1, device=cpu,
                progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training
    history = train_model(_model(1), data, TrainSettings(epochs=1, batch_size=16, precision="bf16"), seed=1,
                          device=cpu, progress=False)
    assert math.isfinite(history[0]["loss"])
    with pytest.raises(ValueError, match="^training.precision: tf32 needs a CUDA device"):
        train_model(_model(1), data, TrainSettings(precision="tf32"), seed=1, device=cpu, progress=False)
    with pytest.raises(ValueError, match="^training.compile: cudagraph needs a CUDA device"):
        train_model(_model(1), data, TrainSettings(compile="cudagraph"), seed=1, device=cpu, progress=False)


def test_new_settings_at_their_defaults_leave_train_keys_unchanged():
    old_fields = {"optimizer", "lr", "momentum", "weight_decay", "nesterov", "epochs", "batch_size", "schedule",
                  "milestones", "gamma", "warmup_epochs", "augment", "label_smoothing"}
    settings = TrainSettings().__dict__
    assert set(weight_settings(settings)) == old_fields
    assert weight_settings({**settings, "eval_every": 5}) == weight_settings(settings)
    for name, neutral in KEY_NEUTRAL.items():
        assert name in settings and settings[name] == neutral
    assert weight_settings({**settings, "precision": "bf16"})["precision"] == "bf16"
