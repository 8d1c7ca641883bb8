"""Every paper config runs end to end for one training step on tiny files in the real on-disk format
(IDX for (Fashion-)MNIST, pickled python batches for CIFAR, JPEG class folders for ImageNet), with
only sizes shrunk: data root, subsets, epochs, batch size, images attacked and attack iterations."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from robustbench_leak.config import load_config
from robustbench_leak.data.cifar import write_batch
from robustbench_leak.data.idx import write_idx
from robustbench_leak.pipeline import run_config

REPO = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)


def write_mnist_like(folder: Path, n_train: int = 24, n_test: int = 24, size: int = 28) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", RNG.integers(0, 256, (n, size, size)))
        write_idx(folder / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def write_cifar10(root: Path, n: int = 8) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(folder / name, RNG.integers(0, 256, (n, 3072)), list(np.arange(n) % 10))
    import pickle

    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, fh, protocol=2)
    return root


def write_cifar100(root: Path, n: int = 24) -> Path:
    import pickle

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        write_batch(folder / name, RNG.integers(0, 256, (n, 3072)), list(np.arange(n) % 100), label_key="fine_labels")
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, fh, protocol=2)
    return root


def write_imagefolder(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n0000{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = RNG.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"img{i}.JPEG", format="JPEG")
    return root


def shrink(config: dict, root: str | None, extra_dataset: dict | None = None) -> dict:
    """The same config, only made tiny: the scientific settings (models, windows, recipe) stay."""
    for ds in config["datasets"]:
        if root is not None:
            ds["root"] = root
        ds.update({"train_subset": 8, "test_subset": 6})
        ds.update(extra_dataset or {})
    config["seeds"] = config["seeds"][:1]
    config["training"].update({"epochs": 1, "batch_size": 8, "milestones": [], "warmup_epochs": 0})
    for model in config["models"]:
        if model.get("training"):
            model["training"] = {**model["training"], "epochs": 1, "batch_size": 8, "warmup_epochs": 0}
    attacks = []
    for entry in config["attacks"]:
        entry = {"preset": entry} if isinstance(entry, str) else dict(entry)
        entry["n_samples"] = 3
        if "fit_samples" in entry or entry["preset"] == "spatial":
            entry["fit_samples"] = 3
        params = dict(entry.get("params") or {})
        if entry["preset"].startswith("deepfool"):
            params.update(max_iter=1, nb_grads=2)
        if entry["preset"].startswith("spatial"):
            params.update(num_translations=2, num_rotations=1)
        if entry["preset"] == "minnorm":  # the budget bounds every member, SuperDeepFool's 100 x 100 steps too
            params.update(ddn_steps=4, fmn_steps=4, budget=40)
        entry["params"] = params
        attacks.append(entry)
    config["attacks"] = attacks
    return config


def run_shrunk(tmp_path: Path, name: str, root: str | None, monkeypatch, extra_dataset: dict | None = None,
               width: int | None = None) -> pd.DataFrame:
    config = yaml.safe_load((REPO / "configs" / name).read_text())
    if width is not None:  # paper-width models cost minutes on CPU even for one step; the recipe stays
        for model in config["models"]:
            model["options"]["width"] = width
            if "match_params" in model:  # one channel is a coarse step at small width (see paper-fashion-mnist)
                model["match_tolerance"] = 0.04
    path = tmp_path / name
    path.write_text(yaml.safe_dump(shrink(config, root, extra_dataset)))
    monkeypatch.setenv("RBLEAK_CACHE_DIR", str(tmp_path / "cache"))
    out = run_config(load_config(path), tmp_path / "out", progress=False, log=lambda line: None)
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board.model) == {m["name"] for m in config["models"]}
    return board


def test_paper_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist")))
    board = run_shrunk(tmp_path, "paper-fashion-mnist.yaml", None, monkeypatch)
    # unconditional metrics always have a value; rho is over clean-correct images, which random tiny data
    # may not have, so only its column is required
    for col in ["clean.accuracy", "deepfool.robust_accuracy", "spatial.robust_accuracy",
                "spatial-worst.robust_accuracy", "lowpass-2.robust_accuracy", "highpass-12.robust_accuracy"]:
        assert board[col].notna().all(), col
    assert "deepfool.rho_mean" in board.columns


def test_paper_fashion_mnist_gpu_scale(tmp_path, monkeypatch):
    """The paper-scale config: its matched model has the 3x3 model's size at width 128 (counted on the meta
    device), and the config runs end to end (one step, narrowed so it takes seconds on CPU)."""
    from robustbench_leak.models import count_params, create_model
    from robustbench_leak.run.plan import plan

    trains, _ = plan(load_config(REPO / "configs" / "paper-fashion-mnist-gpu.yaml"))
    by_name = {t.model: t for t in trains if t.seed == 0}
    assert by_name["cnn-3x3"].options["width"] == 128 and by_name["cnn-3x3"].options["n_layers"] == 6

    def n_params(name: str) -> int:
        with torch.device("meta"):
            return count_params(create_model(by_name[name].arch, 10, 1, **by_name[name].options))

    assert abs(n_params("cnn-7x7-hamming-matched") / n_params("cnn-3x3") - 1) <= 0.02
    assert n_params("cnn-7x7") > 4 * n_params("cnn-3x3")
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist")))
    board = run_shrunk(tmp_path, "paper-fashion-mnist-gpu.yaml", None, monkeypatch, width=16)
    assert board["clean.accuracy"].notna().all() and board["spatial-worst.robust_accuracy"].notna().all()


def test_paper_fashion_mnist_art(tmp_path, monkeypatch):
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist")))
    board = run_shrunk(tmp_path, "paper-fashion-mnist-art.yaml", None, monkeypatch)
    assert board["art-fixed.robust_accuracy"].notna().all() and board["art-as-is.robust_accuracy"].notna().all()


def test_paper_mnist14_on_both_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist")))
    run_shrunk(tmp_path, "paper-mnist14.yaml", None, monkeypatch)
    config = yaml.safe_load((REPO / "configs" / "paper-mnist14.yaml").read_text())
    config["datasets"] = [{"name": "mnist-14", "root": str(write_mnist_like(tmp_path / "mnist"))}]
    path = tmp_path / "mnist14.yaml"
    path.write_text(yaml.safe_dump(shrink(config, None)))
    out = run_config(load_config(path), tmp_path / "out-mnist", progress=False, log=lambda line: None)
    assert pd.read_csv(out / "leaderboard.csv").dataset.unique().tolist() == ["mnist-14"]


def test_paper_depth_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist")))
    board = run_shrunk(tmp_path, "paper-depth-sweep.yaml", None, monkeypatch)
    assert len(board) == 10


@pytest.mark.parametrize("name, writer", [("paper-cifar10.yaml", write_cifar10), ("paper-cifar100.yaml", write_cifar100)])
def test_paper_cifar(tmp_path, monkeypatch, name, writer):
    root = writer(tmp_path / "data")
    board = run_shrunk(tmp_path, name, str(root), monkeypatch)
    assert board["deepfool.robust_accuracy"].notna().all() and "deepfool.rho_mean" in board.columns


def test_paper_imagenet(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "imagenet")
    # 32 px instead of 224 keeps one step of a 170M-parameter VGG affordable on 2 CPU cores
    board = run_shrunk(tmp_path, "paper-imagenet.yaml", str(root), monkeypatch, {"image_size": 32, "resize": 36})
    assert len(board) == 6 and board["clean.accuracy"].notna().all()


def test_missing_cifar_data_names_the_folder(tmp_path, monkeypatch):
    from robustbench_leak.data import DataMissingError, load_dataset

    with pytest.raises(DataMissingError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(DataMissingError, match="root"):
        load_dataset("cifar10")


def test_paper_fashion_mnist_gpu_scale_protocol_loads(tmp_path, monkeypatch):
    """The GPU-scale protocol: the CPU-scale config's models, attacks and seeds at depth 6, width 64, 10 epochs."""
    # enough test images for the configs' counts: 1,000 attacked plus the spatial fit split of 500
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist", n_test=1500)))
    gpu = load_config(REPO / "configs" / "paper-fashion-mnist-gpu-scale.yaml")
    cpu = load_config(REPO / "configs" / "paper-fashion-mnist.yaml")
    assert [m.name for m in gpu.run.models] == [m.name for m in cpu.run.models]
    assert [a.spec() for a in gpu.attacks] == [a.spec() for a in cpu.attacks]
    assert [a.label for a in gpu.attacks] == [a.label for a in cpu.attacks]
    assert gpu.run.seeds == cpu.run.seeds[:5] == [0, 1, 2, 3, 4]  # the CPU scale adds seeds 5-9 (issue 31)
    t = gpu.run.training
    assert (t.epochs, t.batch_size, t.schedule, t.augment) == (10, 128, "cosine", "flip_crop")
    assert gpu.run.datasets[0].train_subset is None  # the full training set
    assert all(m.options["n_layers"] == 6 and m.options["width"] == 64 for m in gpu.run.models)
    assert abs(gpu.run.models[-1].match_report["params"] / gpu.run.models[-1].match_report["target_params"] - 1) <= 0.02


def test_paper_fashion_mnist_autoattack_shares_the_protocols_train_keys(tmp_path, monkeypatch):
    """The AutoAttack cells' config trains nothing new: its train keys are the CPU-scale protocol's (same models,
    training and seeds), and its attacks are AutoAttack at the Fashion-MNIST defaults."""
    from robustbench_leak.run.plan import plan

    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(write_mnist_like(tmp_path / "fmnist", n_test=1500)))
    aa = load_config(REPO / "configs" / "paper-fashion-mnist-autoattack.yaml")
    cpu = load_config(REPO / "configs" / "paper-fashion-mnist.yaml")
    aa_trains, aa_evals = plan(aa)
    cpu_keys = {t.key for t in plan(cpu)[0]}
    assert aa_trains and {t.key for t in aa_trains} <= cpu_keys
    assert {e.attack["kind"] for e in aa_evals} == {"autoattack"}
    assert {a.label for a in aa.attacks} == {"autoattack-linf", "autoattack-l2"}
