"""``rbleak bench``'s training row and its --out handling (the full bench is in test_compare_bench.py)."""

import pytest
import torch

from robustbench_leak.bench import bench_training, output_path, plain_epoch
from robustbench_leak.cli import main
from robustbench_leak.data import load_dataset
from robustbench_leak.models import create_model
from robustbench_leak.train import TrainSettings

CPU = torch.device("cpu")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("tomen_cnn", 4, 1, n_layers=2, width=4, kernel_size=3, window="none")


@pytest.mark.parametrize("augment", ["none", "flip_crop"])
def test_training_row_times_a_harness_epoch_against_the_plain_loop(augment):
    data = load_dataset("synthetic", n_train=96, n_test=32, image_size=12, num_classes=4)
    lines = []
    row = bench_training(_model, data, TrainSettings(batch_size=16, augment=augment), CPU, lines.append,
                         n_train=64, warmup_steps=2)
    assert row["n_train"] == 64 and row["n_test"] == 32 and row["device"] == "cpu" and row["precision"] == "fp32"
    assert row["harness_train_seconds"] > 0 and row["plain_seconds"] > 0 and row["harness_test_seconds"] >= 0
    assert row["harness_vs_plain"] == pytest.approx(row["plain_seconds"] / row["harness_train_seconds"])
    assert row["harness_images_per_s"] == pytest.approx(64 / row["harness_train_seconds"])
    assert len(lines) == 1 and "harness" in lines[0]


def test_plain_epoch_trains():
    data = load_dataset("synthetic", n_train=64, n_test=16, image_size=12, num_classes=4)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    seconds, n = plain_epoch(model, data, TrainSettings(batch_size=16), CPU, max_steps=3)
    assert n == 48 and seconds > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_out_is_a_folder_or_a_file_and_bad_paths_fail_in_one_line(tmp_path, capsys):
    assert output_path(str(tmp_path)) == tmp_path / "bench.json"
    assert output_path(str(tmp_path / "b.json")) == tmp_path / "b.json" and not (tmp_path / "b.json").exists()
    with pytest.raises(ValueError, match=r"^--out: .*missing: folder does not exist"):
        output_path(str(tmp_path / "missing" / "b.json"))
    with pytest.raises(ValueError, match=r"^--out: .*folder does not exist"):
        output_path(str(tmp_path / "missing") + "/")
    with pytest.raises(ValueError, match=r"^--out: .*not writable \(OSError\)"):
        output_path(str(tmp_path / ("x" * 300 + ".json")))  # a name too long for the file system, even for root
    assert main(["bench", "--out", str(tmp_path / "missing" / "b.json"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbleak: error: --out:") and "\n" not in err
