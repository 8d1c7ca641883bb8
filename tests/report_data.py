"""Run folders fabricated directly in the store format, with known values, for the report tests.

They hold what real runs and the engines coming in parallel write: confidence intervals (``lo``/``hi``),
sanity-check ``flags`` in a cell's info, a spatial cell's per-transform ``grid``, DeepFool per-sample
``l2``, training histories, and real (tiny, untrained) checkpoints of the model the row names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from robustbench_leak.models import Normalized, count_params, create_model
from robustbench_leak.models.checkpoints import save_checkpoint
from robustbench_leak.store import StoreWriter

SPECS = {
    "clean": {"kind": "clean", "engine": "torch", "n_samples": None, "params": {"batch_size": 512}},
    "deepfool": {"kind": "deepfool", "engine": "art", "n_samples": 4,
                 "params": {"max_iter": 5, "overshoot": 0.02, "nb_grads": 10, "batch_size": 4}},
    "spatial": {"kind": "spatial", "engine": "art", "n_samples": 4,
                "params": {"max_translation": 10.0, "num_translations": 3, "max_rotation": 30.0, "num_rotations": 3,
                           "fix_channels_first": True}},
}
SHIFTS = (-2, 0, 2)
ROTATIONS = (-30.0, 0.0, 30.0)
EVIL = 'cnn <script>alert("x")</script> & 50%_{x}'  # must come out escaped in every format


@dataclass
class Fake:
    name: str
    kernel_size: int
    window: str
    accuracy: float  # clean accuracy of seed 0; seed s adds 0.01 * s
    rho: float  # DeepFool rho_mean of seed 0
    spatial: float  # spatial robust accuracy
    l2: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # DeepFool minimal norms of the 4 attacked images
    flags: tuple[str, ...] = ()  # sanity-check flags of its DeepFool cells
    checkpoint: bool = True  # False: the checkpoint file is gone
    grid: bool = True  # False: its spatial cells hold no per-transform grid (as from the ART engine)


def grid_accuracy(shift_rows: int, shift_cols: int, rotation: float, seed: int) -> float:
    """A known accuracy per transform: 1 at the identity, lower with larger transforms."""
    return round(1.0 - 0.1 * (abs(shift_rows) + abs(shift_cols)) / 2 - abs(rotation) / 100 - 0.1 * seed, 4)


def make_run(folder: Path, models: list[Fake], seeds: tuple[int, ...] = (0,), name: str = "fake",
             run_id: str = "20260101T000000-aaaaaa", rank_by: str = "deepfool.rho_mean",
             description: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "seeds": list(seeds), "rank_by": rank_by,
              "models": [{"name": m.name, "arch": "tomen_cnn"} for m in models]}
    if description:
        config["description"] = description
    store = StoreWriter(folder / "results.sqlite")
    store.start_run(run_id, config_name=name, config_path=f"configs/{name}.yaml", config_hash="feedc0de",
                    config_yaml=yaml.safe_dump(config), device="cpu (test machine, 2 threads)",
                    versions={"torch": "2.x", "adversarial-robustness-toolbox": "1.20.1"},
                    git_commit="0123456789abcdef", command="rbleak run fake.yaml")
    rows = []
    for m in models:
        for seed in seeds:
            tk = f"{name}-{m.name}-{seed}"
            options = {"n_layers": 2, "width": 4, "kernel_size": m.kernel_size, "window": m.window}
            net = create_model("tomen_cnn", 10, 1, **options)
            checkpoint = folder / "ckpt" / f"{seed}-{m.kernel_size}-{m.window}-{len(rows)}.pt"
            if m.checkpoint:
                save_checkpoint(checkpoint, Normalized(net, (0.5,), (0.25,)), {"key": tk})
            history = [{"epoch": e, "loss": 2.0 / e, "train_accuracy": 0.3 * e, "test_accuracy": 0.28 * e,
                        "lr": 0.1, "seconds": 1.0} for e in (1, 2, 3)]
            store.record_model(tk, {"arch": "tomen_cnn", "options": options,
                                    "kernel": f"{m.kernel_size}x{m.kernel_size}",
                                    "window": m.window, "params": count_params(net), "flops": 1000 * m.kernel_size**2,
                                    "checkpoint": str(checkpoint), "history": history, "train_seconds": 3.0,
                                    "trained_on": "cpu"})
            store.record_cell(tk, "train", {"model": m.name}, run_id, "cpu", "t0", 3.0,
                              info={"loaded_from_cache": False})
            rows.append({"cell_key": tk, "kind": "train", "train_key": tk, "model": m.name, "arch": "tomen_cnn",
                         "dataset": "synthetic", "seed": seed, "attack": None})
            acc = m.accuracy + 0.01 * seed
            labels = np.arange(4)
            cells = {
                "clean": ({"accuracy": acc, "n": 100.0}, {"accuracy": (acc - 0.05, acc + 0.05)}, None, {}),
                "deepfool": ({"success_rate": 1.0, "rho_mean": m.rho + 0.01 * seed, "rho_median": m.rho,
                              "robust_accuracy": 0.0},
                             {"rho_mean": (m.rho - 0.02, m.rho + 0.02)},
                             {"label": labels, "clean_pred": labels, "adv_pred": labels + 1,
                              "l2": np.array(m.l2), "rho": np.array(m.l2) / 10},
                             {"flags": list(m.flags)} if m.flags else {}),
                "spatial": ({"robust_accuracy": m.spatial, "fooling_rate": 1 - m.spatial, "shift_rows": -2.0,
                             "shift_cols": 2.0, "rotation_deg": 30.0}, {}, None,
                            {"grid": [{"shift_rows": r, "shift_cols": c, "rotation_deg": rot,
                                       "accuracy": grid_accuracy(r, c, rot, seed)}
                                      for r in SHIFTS for c in SHIFTS for rot in ROTATIONS]}
                            if m.grid else {"layout": "NHWC (fixed)"}),
            }
            for label, (metrics, intervals, samples, info) in cells.items():
                key = f"{tk}-{label}"
                store.record_cell(key, "eval", {"train_key": tk, "attack": SPECS[label]}, run_id, "cpu", "t0", 1.0,
                                  metrics, samples, info=info, intervals=intervals)
                rows.append({"cell_key": key, "kind": "eval", "train_key": tk, "model": m.name, "arch": "tomen_cnn",
                             "dataset": "synthetic", "seed": seed, "attack": label})
    store.add_run_cells(run_id, rows)
    store.finish_run(run_id)
    store.close()
    return folder


def three_models() -> list[Fake]:
    return [Fake("cnn-3x3", 3, "none", accuracy=0.90, rho=0.10, spatial=0.40, l2=(0.2, 0.4, 0.6, 0.8)),
            Fake("cnn-7x7", 7, "none", accuracy=0.80, rho=0.12, spatial=0.30, checkpoint=False),
            Fake("cnn-7x7-hamming", 7, "hamming", accuracy=0.92, rho=0.20, spatial=0.50,
                 flags=("gradient masking suspected: 2 of 4 images unchanged after 5 iterations",))]


def add_model(store: StoreWriter, run_id: str, model: str, seed: int, attack: str, correct: np.ndarray,
              rho: np.ndarray | None = None) -> dict:
    """One eval cell whose images are all label 0, predicted correctly where ``correct`` (after the attack too,
    unless ``rho`` is given); its run-cell row."""
    n = len(correct)
    label = np.zeros(n, dtype=int)
    pred = np.where(correct, 0, 1)
    key = f"{model}-{seed}-{attack}"
    # a cell with rho is a minimal-perturbation attack that fooled every image (its rho is a fooling size)
    adv = pred if rho is None else np.ones(n, dtype=int)
    samples = {"label": label, "clean_pred": pred if attack == "clean" else np.zeros(n, dtype=int), "adv_pred": adv}
    if rho is not None:
        samples.update(l2=rho, rho=rho)
    store.record_cell(key, "eval", {"attack": {"kind": attack}}, run_id, "cpu", "t", 1.0, {"n": n}, samples)
    return {"cell_key": key, "kind": "eval", "train_key": f"{model}-{seed}", "model": model, "arch": "x",
            "dataset": "d", "seed": seed, "attack": attack}
