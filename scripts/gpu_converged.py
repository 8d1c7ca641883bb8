"""The converged-scale run on a time-boxed GPU machine (called by scripts/gpu-converged.sh).

Stages, each timed: (1) ``rbleak bench --training`` (short), (2) the config seed by seed, each shard
``rbleak run --seeds S --time-limit <what is left>`` into its own folder, until the seeds or the time run
out, (3) the finished seeds merged into one run folder (``--merge``), (4) everything that must come back
compressed into ``--out``: the merged run (store, leaderboards, provenance), the shard stores and logs (a
half-done shard resumes from its store), the bench JSON and ``gpu-converged.json`` (commit and diff hash
given by the caller, stage times, per-attack seconds from the store). Files back from the GPU machine are
at most 8 of 16 MiB each, so an archive over ``PART_BYTES`` is cut into numbered parts
(``cat run.tar.xz.* > run.tar.xz``). Exit status 0 when every seed finished, 75 when time ran out first.

``--mode cpu`` runs the same stages on a tiny synthetic config in well under a minute (the test).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GPU_CONFIG = REPO / "configs" / "paper-fashion-mnist-gpu-scale.yaml"
PART_BYTES = 15 * 1024 * 1024
EXIT_TIME_LIMIT = 75
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # an empty diff
CPU_CONFIG = """
name: gpu-converged-cpu
description: the converged-scale script's CPU form (synthetic data, tiny models)
device: cpu
seeds: [0, 1]
datasets:
  - {name: synthetic, n_train: 96, n_test: 48}
training: {optimizer: sgd, lr: 0.05, epochs: 2, batch_size: 32, schedule: cosine, augment: flip_crop,
           pack: auto}
models:
  - {name: cnn-3x3, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 3, window: none}}
  - {name: cnn-7x7-hamming, arch: tomen_cnn, options: {n_layers: 2, width: 4, kernel_size: 7, window: hamming}}
attacks:
  - clean
  - {preset: deepfool-exact, label: deepfool, n_samples: 8, params: {max_iter: 10}}
  - {preset: spatial, n_samples: 8, fit_samples: 8, params: {num_translations: 3, num_rotations: 3}}
"""


class Stages:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run(self, name: str, argv: list[str], log: Path, timeout: float, env: dict) -> int:
        t0 = time.time()
        with open(log, "w") as fh:
            try:
                rc = subprocess.run(argv, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=max(1.0, timeout)).returncode
            except subprocess.TimeoutExpired:  # the --time-limit backstop failed: the shard is resumable anyway
                rc = EXIT_TIME_LIMIT
        self.rows.append({"stage": name, "seconds": round(time.time() - t0, 2), "exit_status": rc,
                          "log": log.name})
        print(f"[{name}] exit {rc} in {time.time() - t0:.1f}s", flush=True)
        return rc


def cell_seconds(store: Path) -> dict:
    """Seconds in the store: training per model, attacks per attack label (what each stage cost)."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT DISTINCT rc.cell_key, rc.kind, rc.model, rc.attack, c.seconds FROM run_cells rc "
                           "JOIN cells c ON c.cell_key = rc.cell_key AND c.status = 'done'").fetchall()
        accuracy = con.execute("SELECT rc.model, rc.seed, m.history FROM run_cells rc JOIN models m "
                               "ON m.train_key = rc.cell_key WHERE rc.kind = 'train'").fetchall()
    finally:
        con.close()
    out: dict = {"train": {}, "attack": {}}
    for _, kind, model, attack, seconds in rows:
        bucket, name = ("train", model) if kind == "train" else ("attack", attack)
        out[bucket][name] = round(out[bucket].get(name, 0.0) + (seconds or 0.0), 2)
    out["final_test_accuracy"] = {}
    for model, seed, history in accuracy:
        last = (json.loads(history or "[]") or [{}])[-1]
        out["final_test_accuracy"].setdefault(model, {})[str(seed)] = last.get("test_accuracy")
    return out


def compress(data: bytes) -> bytes:
    """xz: on all cores with the xz program where there is one (a store of tens of MB takes a single core
    tens of seconds), else Python's lzma; the same format either way."""
    if shutil.which("xz"):
        return subprocess.run(["xz", "-T0", "-6", "-c"], input=data, capture_output=True, check=True).stdout
    return lzma.compress(data, preset=6)


def pack_files(out: Path, name: str, folder_items: list[tuple[Path, str]]) -> list[str]:
    """``name`` (.tar.xz) of the given paths, in parts of at most ``PART_BYTES`` if larger; the file names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, arcname in folder_items:
            if path.exists():
                tar.add(path, arcname=arcname, filter=lambda t: None if "/plots" in t.name or t.name.endswith(
                    (".lock", "/plots")) else t)
    data = compress(buf.getvalue())
    if len(data) <= PART_BYTES:
        (out / name).write_bytes(data)
        return [name]
    names = []
    for i in range(0, len(data), PART_BYTES):
        part = f"{name}.{i // PART_BYTES:03d}"
        (out / part).write_bytes(data[i:i + PART_BYTES])
        names.append(part)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commit", required=True)
    p.add_argument("--diff-sha", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--time-limit", type=float, default=540.0)
    p.add_argument("--mode", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--work", help="scratch folder (default: OUT/../gpu-converged-work, or a temp folder)")
    p.add_argument("--no-bench", action="store_true", help="skip the training bench")
    args = p.parse_args(argv)
    started = time.time()
    deadline = started + args.time_limit
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu-converged-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    gpu = args.mode == "gpu"
    if gpu:
        config = GPU_CONFIG
    else:
        config = work / "gpu-converged-cpu.yaml"
        config.write_text(CPU_CONFIG)
    seeds = yaml.safe_load(config.read_text())["seeds"]
    source = args.commit + ("" if args.diff_sha in ("clean", EMPTY_SHA256) else f"+diff.{args.diff_sha[:16]}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RBLEAK_SOURCE_COMMIT": source,
           "RBLEAK_CACHE_DIR": str(work / "checkpoints"), "PYTHONPATH": os.pathsep.join(
               p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)}
    rbleak = [sys.executable, "-m", "robustbench_leak.cli"]
    reserve = 90.0 if gpu else 3.0  # kept for the merge (leaderboards, plots) and the archives
    min_shard = 60.0 if gpu else 1.0  # a shard is not started with less time than this
    stages = Stages()
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    if not args.no_bench:
        bench = (["--device", "cuda", "--steps", "20", "--variants"] if gpu else
                 ["--device", "cpu", "--dataset", "synthetic", "--sizes", "2x4@8", "--packs", "1,2", "--steps", "2"])
        stages.run("bench-training", rbleak + ["bench", "--training", *bench, "--out", str(out / "bench-training.json")],
                   logs / "bench-training.log", min(0.2 * args.time_limit, deadline - time.time() - reserve), env)
    done, partial = [], []
    for seed in seeds:
        left = deadline - time.time() - reserve
        if left < min_shard:
            break
        rc = stages.run(f"seed-{seed}", rbleak + ["run", str(config), "--seeds", str(seed), "--out",
                                                  str(work / "shards" / f"s{seed}"), "--quiet", "--time-limit",
                                                  f"{left:.0f}" if gpu else f"{left:.2f}"],
                        logs / f"seed-{seed}.log", left + 30, env)
        if rc in (0, 1):  # 1: some cells failed (stored as failed, named in the log); the rest finished
            done.append(seed)
        else:
            partial.append(seed)
            break
    merged = work / "run"
    if done:
        left = deadline - time.time() - reserve / 2
        shards = [str(work / "shards" / f"s{s}") for s in done]
        stages.run("merge", rbleak + ["run", str(config), "--seeds", ",".join(map(str, done)), "--merge", *shards,
                                      "--out", str(merged), "--quiet", "--time-limit", f"{max(left, 1):.0f}"],
                   logs / "merge.log", max(left, 1) + 30, env)
    summary = {
        "mode": args.mode, "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else config.name,
        "commit": args.commit, "diff_sha256": args.diff_sha, "recorded_as": source, "time_limit": args.time_limit,
        "seeds": seeds, "seeds_done": done, "seeds_partial": partial, "stages": stages.rows,
        "cell_seconds": cell_seconds(merged / "results.sqlite") if (merged / "results.sqlite").exists() else None,
    }
    files = []
    if (merged / "results.sqlite").exists():
        files += pack_files(out, "run.tar.xz", [(merged, "run")])
    # the merged store holds the finished seeds; a shard comes back only when it is not in it (to resume)
    unmerged = partial + ([] if (merged / "results.sqlite").exists() else done)
    files += pack_files(out, "shards.tar.xz", [(work / "shards" / f"s{s}", f"shards/s{s}") for s in unmerged]
                        + [(logs, "logs")])
    summary["files"] = files + (["bench-training.json"] if (out / "bench-training.json").exists() else [])
    summary["wall_seconds"] = round(time.time() - started, 2)
    try:
        import torch
        summary["device"] = torch.cuda.get_device_name(0) if gpu else "cpu"
    except Exception as exc:  # noqa: BLE001 - the summary is written whatever happens
        summary["device"] = f"unknown ({type(exc).__name__})"
    (out / "gpu-converged.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"seeds done {done}, partial {partial}; wrote {', '.join(summary['files'])} and gpu-converged.json "
          f"into {out} in {summary['wall_seconds']:.0f}s")
    return 0 if len(done) == len(seeds) else EXIT_TIME_LIMIT


if __name__ == "__main__":
    sys.exit(main())
