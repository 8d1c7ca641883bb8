"""The attack-strength table of docs/attack-strength.md: minimum-norm attacks on the quickstart models.

For each model of configs/quickstart-minnorm.yaml (loaded from the checkpoint cache, trained first if
missing) and its first ``--n`` test images, each attack below attacks the model's clean prediction. Per
attack: success (share of the clean-correct images fooled), median L2 norm of the fooled clean-correct
images, and forward plus backward passes per image (``PassCounter``: every pass through the model,
counted per image in the batch, as AttackBench counts its budget). adv-lib's ALMA runs when adv-lib is
installed (its visdom import is stubbed). Prints the markdown table of docs/attack-strength.md:

    python scripts/attack_strength.py   # about 15 minutes on 2 CPU cores shared with other jobs
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robustbench_leak.attacks.native_ddn import NativeDDN, ddn_batch  # noqa: E402
from robustbench_leak.attacks.native_deepfool import deepfool_batch  # noqa: E402
from robustbench_leak.attacks.native_fmn import NativeFMN, fmn_batch  # noqa: E402
from robustbench_leak.attacks.native_minnorm import DEEPFOOL_EXACT  # noqa: E402
from robustbench_leak.attacks.native_superdeepfool import NativeSuperDeepFool, superdeepfool_batch  # noqa: E402
from robustbench_leak.attacks.optimality import PassCounter  # noqa: E402
from robustbench_leak.runtime import predict  # noqa: E402


def _params(cls: type, **override: Any) -> dict[str, Any]:
    return {k: v for k, v in cls.defaults.items() if k not in ("batch_size", "budget")} | override


FMN_V1 = {"steps": 100, "bound_mask": False, "start": "clean", "projection": "ball"}


def attacks(adv_lib: Any) -> dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Name -> ``f(model, x, clean_pred) -> x_adv``."""
    out: dict[str, Callable] = {
        "DeepFool (deepfool preset)": lambda m, x, c: deepfool_batch(m, x, **DEEPFOOL_EXACT, keep_candidates=2)[0],
        "DeepFool (deepfool-exact)": lambda m, x, c: deepfool_batch(m, x, **DEEPFOOL_EXACT)[0],
        "SuperDeepFool (preset)": lambda m, x, c: superdeepfool_batch(m, x, c, **_params(NativeSuperDeepFool))[0],
        "DDN 100 steps (preset)": lambda m, x, c: ddn_batch(m, x, c, **_params(NativeDDN))[0],
        "DDN 200 steps": lambda m, x, c: ddn_batch(m, x, c, **_params(NativeDDN, steps=200))[0],
    }
    v1 = _params(NativeFMN, **FMN_V1)
    fmn_rows = {"FMN version 1: clean start, no mask, 100 steps": v1,
                "FMN clean start, no mask, 1000 steps": v1 | {"steps": 1000},
                "FMN clean start, bound mask, 100 steps": v1 | {"bound_mask": True},
                "FMN DeepFool start, no mask, 50 steps": v1 | {"start": "deepfool", "steps": 50},
                "FMN DeepFool start, bound mask, sphere, 50 steps": _params(NativeFMN, projection="sphere"),
                "FMN DeepFool start, bound mask, 25 steps": _params(NativeFMN, steps=25),
                "FMN DeepFool start, bound mask, 50 steps (preset)": _params(NativeFMN),
                "FMN DeepFool start, bound mask, 100 steps": _params(NativeFMN, steps=100)}
    for name, params in fmn_rows.items():
        out[name] = lambda m, x, c, params=params: fmn_batch(m, x, c, **params)[0]
    if adv_lib is not None:
        out["ALMA 100 steps (adv-lib)"] = lambda m, x, c: adv_lib.alma(m, x, c, num_steps=100)
    return out


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Callable) -> dict[str, float]:
    clean = predict(model, x, torch.device("cpu"))
    counter = PassCounter(model)
    torch.manual_seed(0)
    adv = attack(counter, x, clean).detach()
    passes = counter.passes / len(x)
    correct = (clean == y).numpy()
    fooled = (predict(model, adv, torch.device("cpu")) != clean).numpy() & correct
    l2 = (adv - x).flatten(1).norm(dim=1).numpy()
    return {"success": float(fooled.sum() / max(correct.sum(), 1)),
            "median": float(np.median(l2[fooled])) if fooled.any() else float("nan"), "passes": passes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart-minnorm.yaml"))
    parser.add_argument("--n", type=int, default=200, help="first N test images (default 200)")
    parser.add_argument("--out", help="write the markdown table here (default: print it)")
    args = parser.parse_args(argv)
    from robustbench_leak.config import load_config
    from robustbench_leak.run.cells import ensure_model, get_dataset
    from robustbench_leak.run.plan import plan
    from robustbench_leak.run.tasks import RunContext

    sys.modules.setdefault("visdom", types.ModuleType("visdom"))
    try:
        import adv_lib.attacks as adv_lib
    except ImportError:
        adv_lib = None
    torch.set_grad_enabled(True)
    trains, _ = plan(load_config(args.config))
    results: dict[str, dict[str, dict[str, float]]] = {}
    models = []
    for task in trains:
        model, _ = ensure_model(task, RunContext(device_name="cpu", progress=False), log=lambda s: None)
        model.eval().requires_grad_(False)
        data = get_dataset(task.dataset)
        x, y = data.test_x[:args.n], data.test_y[:args.n]
        models.append(task.model)
        for name, attack in attacks(adv_lib).items():
            results.setdefault(name, {})[task.model] = measure(model, x, y, attack)
            r = results[name][task.model]
            print(f"{task.model:16s} {name:52s} success {r['success']:6.1%} median {r['median']:.3f} "
                  f"passes {r['passes']:.0f}", file=sys.stderr)
    head = " | ".join(f"{m}: success, median L2, passes" for m in models)
    lines = [f"| attack | {head} |", "|---|" + "---|" * len(models)]
    for name, per_model in results.items():
        cells = [f"{r['success']:.1%}, {r['median']:.3f}, {r['passes']:.0f}" for r in (per_model[m] for m in models)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(table)
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
