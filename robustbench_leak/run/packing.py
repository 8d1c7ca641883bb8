"""Which train cells of a run train together (``training.pack``), and training such a pack.

Cells pack when they train the same recipe on the same data and differ only in seed or in window values
(``packed.signature``), none is cached or half-trained (a model with an epoch checkpoint resumes alone),
and their ``pack`` setting allows it: ``N`` packs up to N; ``auto`` measures one step of a pack against
one model alone on this device and packs only when the pack is at least ``packed.AUTO_GAIN`` times faster
per model. A pack's members are still their own cells: each is cached under its own key with its own
record, which names the pack it was trained in. The local executor packs; the Ray executor does not.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from ..config.training import weight_settings
from ..models.checkpoints import EpochCheckpoint
from ..store import now
from .cells import build_model, checkpoint_cache, get_dataset
from .packed import AUTO_GAIN, AUTO_MAX, packed_speedup, signature, train_packed
from .tasks import RunContext, TrainTask

Log = Callable[[str], None]


def _group_key(task: TrainTask, sig: str) -> str:
    return json.dumps([task.dataset, weight_settings(task.spec()["training"]), sig], sort_keys=True, default=str)


def plan_packs(jobs: Sequence[Any], ctx: RunContext, log: Log) -> dict[str, list[TrainTask]]:
    """The packs among ``jobs``: the key of each pack's first train job (in job order) -> its tasks."""
    cache = checkpoint_cache(ctx)
    groups: dict[str, list[TrainTask]] = {}
    limits: dict[str, Any] = {}
    for job in jobs:
        task = job.task
        if job.kind != "train":
            continue
        pack = task.training.pack
        if (pack in ("off", 1) or task.checkpoint or cache.path(task.key).exists()
                or EpochCheckpoint(cache, task.key).path.exists()):
            continue
        sig = signature(build_model(task, get_dataset(task.dataset)))
        if sig is None:
            continue
        key = _group_key(task, sig)
        if all(t.key != task.key for t in groups.get(key, [])):
            groups.setdefault(key, []).append(task)
            limits[key] = pack
    packs: dict[str, list[TrainTask]] = {}
    for key, tasks in groups.items():
        size = limits[key]
        if size == "auto":
            size = auto_size(tasks, ctx, log)
        for i in range(0, len(tasks), size):
            chunk = tasks[i:i + size]
            if len(chunk) > 1:
                packs[chunk[0].key] = chunk
    return packs


def auto_size(tasks: list[TrainTask], ctx: RunContext, log: Log) -> int:
    """``pack: auto``: how many of ``tasks`` to pack on this device, from one measured step each way."""
    k = min(len(tasks), AUTO_MAX)
    if k < 2:
        return 1
    data = get_dataset(tasks[0].dataset)
    device = ctx.device
    speed = packed_speedup(lambda m: [build_model(t, data) for t in tasks[:m]], data, tasks[0].training,
                           device, k)
    chosen = k if speed["gain"] >= AUTO_GAIN else 1
    log(f"[pack] auto: {tasks[0].model}-shaped models on {device}: a pack of {k} steps "
        f"{speed['gain']:.2f}x as fast per model as one alone, so "
        + (f"packing up to {k}" if chosen > 1 else "not packing") + f" (needs {AUTO_GAIN}x)")
    return chosen


def train_pack(tasks: list[TrainTask], ctx: RunContext, log: Log) -> set[str]:
    """Train ``tasks`` packed and cache each member under its own key; the keys cached. A member whose loss
    went non-finite is not cached (its cell then trains alone and fails or succeeds on its own)."""
    device = ctx.device
    data = get_dataset(tasks[0].dataset)
    cache = checkpoint_cache(ctx)
    models = [build_model(t, data) for t in tasks]
    labels = [t.label for t in tasks]
    epochs = [EpochCheckpoint(cache, t.key) for t in tasks]
    log(f"[pack] training {len(tasks)} models together on {device}: " + "; ".join(labels))
    t0 = time.perf_counter()
    results = train_packed(models, data, tasks[0].training, [t.seed for t in tasks], device,
                           progress=ctx.progress, desc=f"pack of {len(tasks)}",
                           save_progress=[e.save for e in epochs], deadline=ctx.deadline)
    seconds = time.perf_counter() - t0
    done: set[str] = set()
    for task, model, label, epoch_file, result in zip(tasks, models, labels, epochs, results):
        if isinstance(result, Exception):
            log(f"[pack] {label}: {result}; it will train alone")
            continue
        meta = {"spec": task.spec(), "history": result,
                "train_seconds": seconds / len(tasks), "trained_on": str(device), "created": now(),
                "packed_with": [x for x in labels if x != label], "pack_seconds": seconds}
        path = cache.save(task.key, model, meta)
        epoch_file.drop()
        last = result[-1] if result else {}
        log(f"[train] {label}: done in a pack of {len(tasks)} ({seconds:.0f}s for the pack), test accuracy "
            f"{last.get('test_accuracy', float('nan')):.4f}; saved {path}")
        done.add(task.key)
    return done
