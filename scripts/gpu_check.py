"""The GPU check's last step (called by scripts/gpu-check.sh): time a paper-scale training epoch and gather
the quickstart run, the bench and that timing into one JSON file.

GPU form: tomen_cnn 6 layers x width 128 with configs/paper-fashion-mnist-gpu.yaml's recipe (batch 32,
flip+crop), 3x3 and Hamming 7x7, on the first ``--train-images`` Fashion-MNIST images (a measured fraction
of the 60k epoch; the full-epoch seconds are extrapolated from it). CPU form: the same code on tiny
synthetic sizes, so the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robustbench_leak.bench.attacks import bench_training  # noqa: E402

from robustbench_leak.config.training import TrainSettings  # noqa: E402
from robustbench_leak.data import load_dataset  # noqa: E402
from robustbench_leak.models import Normalized, create_model  # noqa: E402
from robustbench_leak.run.provenance import provenance  # noqa: E402

PAPER_CONFIG = REPO / "configs" / "paper-fashion-mnist-gpu.yaml"
PAPER_MODELS = ("cnn-3x3", "cnn-7x7-hamming")
FULL_EPOCH = 60000  # Fashion-MNIST's training set


def paper_epoch(mode: str, train_images: int, log=print) -> list[dict]:
    """Harness and plain-loop epoch timing of the paper-scale 3x3 and Hamming 7x7 models (read from the
    paper config's YAML, so the CPU form needs no Fashion-MNIST on disk)."""
    raw = yaml.safe_load(PAPER_CONFIG.read_text())
    settings = TrainSettings(**{**raw["training"], "milestones": tuple(raw["training"].get("milestones", []))})
    if mode == "gpu":
        device = torch.device("cuda")
        data = load_dataset("fashion-mnist")
    else:  # the same recipe and code on tiny models and synthetic data
        device = torch.device("cpu")
        data = load_dataset("synthetic", n_train=train_images, n_test=32)
    data = replace(data, test_x=data.test_x[:2000], test_y=data.test_y[:2000])  # the test pass is timed apart
    rows = []
    for entry in raw["models"]:
        if entry["name"] not in PAPER_MODELS:
            continue
        options = dict(entry["options"]) if mode == "gpu" else {**entry["options"], "n_layers": 2, "width": 8}

        def make_model() -> torch.nn.Module:
            torch.manual_seed(0)
            net = create_model(entry["arch"], data.num_classes, data.in_chans, **options)
            return Normalized(net, data.mean, data.std)

        row = bench_training(make_model, data, settings, device, log, n_train=train_images,
                             label=f" {entry['name']} {options['n_layers']}x{options['width']}")
        row.update(model=entry["name"], options=options,
                   full_epoch_seconds_estimate=FULL_EPOCH / row["harness_images_per_s"],
                   plain_full_epoch_seconds_estimate=FULL_EPOCH / row["plain_images_per_s"])
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    ap.add_argument("--run", required=True, help="the quickstart's run folder")
    ap.add_argument("--bench", required=True, help="rbleak bench's JSON")
    ap.add_argument("--quickstart-seconds", type=float, required=True)
    ap.add_argument("--started", type=float, required=True, help="when the check began (seconds since the epoch)")
    ap.add_argument("--train-images", type=int, help="training images timed (default 20000 on the GPU, 64 on the CPU)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    train_images = args.train_images or (20000 if args.mode == "gpu" else 64)
    bench = json.loads(Path(args.bench).read_text())
    run = Path(args.run)
    leaderboard = json.loads((run / "leaderboard.json").read_text()) if (run / "leaderboard.json").exists() else None
    epochs = paper_epoch(args.mode, train_images)
    device = torch.device("cuda" if args.mode == "gpu" else "cpu")
    result = {
        "mode": args.mode,
        "quickstart": {"config": "configs/quickstart.yaml" if args.mode == "gpu" else "tiny synthetic config",
                       "seconds": args.quickstart_seconds, "leaderboard_rows": len(leaderboard["records"]) if leaderboard else 0},
        "bench": bench,
        "agreement": {k: bench["deepfool"][k] for k in ("native_fooled_agreement",
                                                          "native_median_relative_norm_difference",
                                                          "native_exact_fooled_agreement",
                                                          "native_exact_median_relative_norm_difference")}
        | {"spatial_same_transform": bench["spatial"]["same_transform"]},
        "training_throughput": bench["training"],
        "paper_scale_epoch": epochs,
        "total_seconds": time.time() - args.started,
        "provenance": provenance(device),
    }
    name = "bench-gpu.json" if args.mode == "gpu" else "gpu-check-cpu.json"
    path = Path(args.out) / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu-check ({args.mode}): {result['total_seconds']:.0f} s in total; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
