import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Checkpoints from tests never touch the user's cache."""
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "checkpoints"))


@pytest.fixture(autouse=True)
def _fresh_datasets():
    """Tests point the same dataset spec at different files (RBLEAK_FASHION_MNIST): no cached loads across them."""
    from robustbench_leak.data.registry import clear_dataset_cache

    clear_dataset_cache()
    yield
    clear_dataset_cache()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


TINY_CONFIG = """
name: tiny
device: cpu
seeds: [0]
datasets:
  - name: synthetic
    n_train: 512
    n_test: 64
training: {optimizer: sgd, lr: 0.1, epochs: 3, batch_size: 32, schedule: cosine}
models:
  - name: small-3x3
    arch: tomen_cnn
    options: {n_layers: 3, width: 8, kernel_size: 3, window: none}
  - name: small-7x7-hamming
    arch: tomen_cnn
    options: {n_layers: 3, width: 8, kernel_size: 7, window: hamming}
attacks:
  - clean
  - preset: deepfool
    n_samples: 16
    params: {max_iter: 10, batch_size: 16}
  - preset: spatial
    n_samples: 16
    fit_samples: 16
    params: {num_translations: 3, num_rotations: 3}
"""


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    os.environ.setdefault("RBLEAK_CACHE_DIR", str(tmp_path / "checkpoints"))
    return write_config(tmp_path / "tiny.yaml", TINY_CONFIG)


def train_small_windowed_cnn(data):
    """A small windowed CNN (3 layers, width 8, Hamming 5x5) trained on ``data`` (synthetic gratings: 1-2 s),
    in eval mode with its weights frozen: the model the native engines are checked on against references."""
    from robustbench_leak.config.training import TrainSettings
    from robustbench_leak.models import Normalized, create_model
    from robustbench_leak.run.training import train_model

    torch.manual_seed(0)
    model = Normalized(create_model("tomen_cnn", 10, 1, n_layers=3, width=8, kernel_size=5, window="hamming"),
                       data.mean, data.std)
    train_model(model, data, TrainSettings(lr=0.1, epochs=3, batch_size=32), 0, torch.device("cpu"), progress=False)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def small_windowed_cnn():
    """``train_small_windowed_cnn`` on 512 synthetic images, its 32 test images and clean predictions: the model
    the minimum-norm engines are checked on against Foolbox and adv-lib."""
    from robustbench_leak.data import load_dataset
    from robustbench_leak.runtime import predict

    data = load_dataset("synthetic", n_train=512, n_test=32)
    model = train_small_windowed_cnn(data)
    x, y = data.test_x, data.test_y
    return model, x, y, predict(model, x, torch.device("cpu"))


def stored_samples(folder: Path) -> dict[str, dict[str, bytes]]:
    """Every finished cell's per-sample columns in a run folder's store, as bytes (equal means bit for bit)."""
    from robustbench_leak.store import StoreReader

    with StoreReader(folder) as store:
        keys = [k for (k,) in store.conn.execute("SELECT cell_key FROM cells WHERE status = 'done' ORDER BY cell_key")]
        return {k: {c: a.tobytes() for c, a in store.sample_arrays(k).items()} for k in keys}


def stored_info(value) -> dict:
    """A cell's ``info`` column as read with raw SQL (JSON text, or xz-compressed JSON since 2026-12-07)."""
    import json

    from robustbench_leak.store.queries import info_text

    text = info_text(value)
    return json.loads(text) if text else {}


def train_one_conv(data, epochs: int = 5, n_train: int | None = None):
    """A one-convolution network (a few ms per pass) trained with Adam on the first ``n_train`` training images
    of ``data`` (all by default), seed 0: the AutoAttack tests' small model."""
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(epochs):
        for i in range(0, n_train or len(data.train_y), 64):
            loss = F.cross_entropy(model(data.train_x[i:i + 64]), data.train_y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model
