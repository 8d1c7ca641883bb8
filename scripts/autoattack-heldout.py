"""The held-out check of the `autoattack` preset (issue 33): its robust accuracy on each quickstart model, against
torchattacks 3.5.1's AutoAttack (standard, seed 0) at the same norm and epsilon, on the same first test images.

    RBLEAK_CACHE_DIR=/tmp/qs1 python scripts/autoattack-heldout.py --n-images 200 > results/bench/autoattack-heldout.json

The preset runs as a cell runs it (the reference's 100 iterations, 5,000 Square queries); torchattacks'
AutoAttack at its own defaults. The check: the preset within 1 point of torchattacks' robust accuracy, or below it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

import torch

from robustbench_leak.attacks import build_attack
from robustbench_leak.attacks.native_autoattack import DATASET_EPS
from robustbench_leak.bench.attacks import bench_model
from robustbench_leak.run.cells import get_dataset
from robustbench_leak.run.provenance import provenance
from robustbench_leak.runtime import predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--models", default="cnn-3x3,cnn-7x7,cnn-7x7-hamming")
    ap.add_argument("--n-images", type=int, default=200)
    args = ap.parse_args()
    import torchattacks

    rows = []
    for name in args.models.split(","):
        task, model, device = bench_model(args.config, name, "cpu", lambda s: print(s, file=sys.stderr))
        data = get_dataset(task.dataset)
        x, y = data.test_x[:args.n_images], data.test_y[:args.n_images]
        eps = DATASET_EPS[task.dataset["name"]]
        for norm in ("linf", "l2"):
            preset = build_attack("autoattack", norm=norm, eps=eps[norm]).run(
                model, x, y, device, progress=False, gen=torch.Generator().manual_seed(0))
            ta = torchattacks.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps[norm],
                                         version="standard", n_classes=10, seed=0)
            ta_acc = float((predict(model, ta(x, y).cpu(), device) == y).float().mean())
            ours = preset.metrics["robust_accuracy"]
            row = {"model": name, "norm": norm, "eps": eps[norm], "clean_accuracy": preset.metrics.get("clean_accuracy"),
                   "preset_robust_accuracy": ours, "torchattacks_robust_accuracy": ta_acc,
                   "within_one_point_or_below": ours <= ta_acc + 0.01}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    json.dump({"config": args.config, "n_images": args.n_images, "rows": rows,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "provenance": provenance(torch.device("cpu"))}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
