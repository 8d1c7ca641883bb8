"""``rbleak bench``'s training row, ``rbleak bench --training`` and the --out handling (the full bench is in
test_compare_bench.py)."""

import json

import pytest
import torch
from robustbench_leak.bench.attacks import bench_training, output_path, plain_epoch
from robustbench_leak.bench.training import peak_for_name

from robustbench_leak.cli import main
from robustbench_leak.config.training import TrainSettings
from robustbench_leak.data import load_dataset
from robustbench_leak.models import create_model

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


def test_training_bench_reports_throughput_flops_and_packed_ratio(tmp_path, capsys):
    out = tmp_path / "bt.json"
    assert main(["bench", "--training", "--device", "cpu", "--dataset", "synthetic", "--sizes", "2x4@8",
                 "--packs", "1,2", "--steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["kernel"], r["mode"], r["members"]) for r in rows} == {
        (k, m, n) for k in ("3x3", "7x7-hamming") for m, n in (("plain", 1), ("harness", 1), ("packed", 1),
                                                                 ("packed", 2))}
    for r in rows:
        assert r["images"] == 2 * 8 * r["members"] and r["seconds"] > 0
        assert r["tflops"] == pytest.approx(r["images"] * r["train_step_flops_per_image"] / r["seconds"] / 1e12)
        assert r["peak_tflops"] is None and r["fraction_of_peak"] is None and r["peak_source"].startswith("unknown")
    # the FLOP counter's training step costs more than its forward pass (backward counted as executed)
    seven = next(r for r in rows if r["kernel"] == "7x7-hamming")
    assert seven["train_step_flops_per_image"] > next(r for r in rows if r["kernel"] == "3x3")["train_step_flops_per_image"]
    for ratio in result["ratios"]:
        harness = next(r for r in rows if r["kernel"] == ratio["kernel"] and r["mode"] == "harness")
        packed = next(r for r in rows if r["kernel"] == ratio["kernel"] and r["members"] == 2)
        assert ratio["packed_2_vs_unpacked"] == pytest.approx(packed["images_per_s"] / harness["images_per_s"])
    assert result["provenance"]["device"].startswith("cpu")


def test_peak_table_and_bad_training_bench_flags(capsys):
    assert peak_for_name("NVIDIA H200", "tf32-conv") == (494.7, "spec sheet, dense (H200)")
    assert peak_for_name("NVIDIA H200", "bf16")[0] == 989.4
    assert peak_for_name("Some GPU", "bf16") == (None, "unknown: Some GPU is not in the peak table")
    for flag, value in (("--sizes", "6by64"), ("--packs", "0"), ("--sizes", "1x4@8")):
        assert main(["bench", "--training", "--device", "cpu", "--dataset", "synthetic", flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rbleak: error: {flag}:") and "\n" not in err


def test_training_bench_json_is_rewritten_after_every_row(tmp_path, monkeypatch):
    import robustbench_leak.bench.training as bt

    seen = []
    real = bt.measure

    def measure(*args, **kwargs):
        out = tmp_path / "bt.json"
        seen.append(len(json.loads(out.read_text())["rows"]) if out.exists() else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(bt, "measure", measure)
    result = bt.run_training_bench(tmp_path / "bt.json", "cpu", "2x4@8", "1", 1, "synthetic", log=lambda line: None)
    assert seen == [None, 1, 2, 3, 4, 5]  # before each measurement: the rows measured so far and result["complete"] is True and len(result["rows"]) == 6
