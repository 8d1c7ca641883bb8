"""Checks on the real Fashion-MNIST files (Debian's dataset-fashion-mnist). CI installs them and sets
RBLEAK_REQUIRE_REAL_DATA=1, which turns a missing file into a failure instead of a skip."""

import os

import numpy as np
import pytest
import torch

from robustbench_leak.config.training import TrainSettings
from robustbench_leak.data import DataMissingError, load_dataset
from robustbench_leak.models import Normalized, create_model
from robustbench_leak.run.training import train_model
from robustbench_leak.runtime import predict

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def fmnist():
    try:
        return load_dataset("fashion-mnist")
    except DataMissingError as exc:
        if os.environ.get("RBLEAK_REQUIRE_REAL_DATA") == "1":
            raise
        pytest.skip(f"real Fashion-MNIST not installed: {exc}")


def test_real_files_have_the_published_shape(fmnist):
    assert fmnist.train_x.shape == (60000, 1, 28, 28) and fmnist.test_x.shape == (10000, 1, 28, 28)
    assert np.bincount(fmnist.train_y.numpy()).tolist() == [6000] * 10
    assert np.bincount(fmnist.test_y.numpy()).tolist() == [1000] * 10
    # published normalisation constants of Fashion-MNIST's training set
    assert float(fmnist.train_x.mean()) == pytest.approx(0.2860, abs=1e-3)
    assert float(fmnist.train_x.std()) == pytest.approx(0.3530, abs=1e-3)
    assert fmnist.train_x.min() == 0.0 and fmnist.train_x.max() == 1.0


def test_a_small_cnn_learns_real_fashion_mnist(fmnist):
    data = fmnist.subset(5000, 1000, seed=0)
    torch.manual_seed(0)
    model = Normalized(create_model("tomen_cnn", 10, 1, n_layers=4, width=16, kernel_size=3), data.mean, data.std)
    history = train_model(model, data, TrainSettings(lr=0.05, epochs=3, batch_size=64, weight_decay=5e-4), 0,
                          torch.device("cpu"), progress=False)
    acc = float((predict(model, data.test_x, torch.device("cpu")) == data.test_y).float().mean())
    assert acc == pytest.approx(history[-1]["test_accuracy"])
    assert acc > 0.7  # chance is 0.10
