"""Follow a config through a local run: which package modules its objects visit, and how often each is re-entered.

    python scripts/trace_config.py [--json]

Runs a tiny synthetic config (1 seed, 2 models, clean + DeepFool on 8 images, 1 epoch) through the local
executor under ``sys.setprofile`` and records every call from one package module into another whose
arguments (other than ``self``) carry the config or something planned from it: the config and its parts, tasks, training
settings, the run context, jobs (in versions before typed tasks: the task and ctx dicts). A module's
entries are the distinct (calling function, called function) pairs that enter it from another module, so a
loop over cells counts once. ``max_entries`` is the most any module is entered; ``upward`` counts entries
that go against the import direction (the called module imports the caller's, directly or not).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from import_graph import graph  # noqa: E402

PACKAGE = "robustbench_leak"
CONFIG = """
name: trace
device: cpu
seeds: [0]
datasets:
  - name: synthetic
    n_train: 128
    n_test: 32
training: {optimizer: sgd, lr: 0.1, epochs: 1, batch_size: 32, schedule: cosine}
models:
  - name: small-3x3
    arch: tomen_cnn
    options: {n_layers: 2, width: 4, kernel_size: 3, window: none}
  - name: small-7x7-hamming
    arch: tomen_cnn
    options: {n_layers: 2, width: 4, kernel_size: 7, window: hamming}
attacks:
  - clean
  - preset: deepfool
    n_samples: 8
"""
CARRIERS = {"Config", "RunConfig", "ResolvedAttack", "TrainTask", "EvalTask", "RunContext", "TrainSettings", "Job",
            "MaskingCfg", "TrainingCfg", "ModelCfg", "DatasetCfg"}


def carries_config(value: object) -> bool:
    if type(value).__name__ in CARRIERS:
        return True
    if isinstance(value, dict):  # the dict tasks and ctx of earlier versions
        return ("key" in value and ("arch" in value or "attack" in value)) or {"device", "cache_dir"} <= value.keys()
    return False


def module_of(filename: str) -> str | None:
    path = Path(filename).resolve()
    root = REPO / PACKAGE
    if root not in path.parents:
        return None
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def trace(run) -> dict[tuple[str, str, str, str], int]:
    entries: dict[tuple[str, str, str, str], int] = {}

    def profile(frame, event, arg):  # noqa: ANN001
        if event != "call":
            return
        callee = module_of(frame.f_code.co_filename)
        caller_frame = frame.f_back
        if callee is None or caller_frame is None:
            return
        caller = module_of(caller_frame.f_code.co_filename)
        if caller is None or caller == callee:
            return
        code = frame.f_code
        n_args = code.co_argcount + code.co_kwonlyargcount
        params = [name for name in code.co_varnames[:n_args] if name not in ("self", "cls")]  # a method of the
        # carrier itself (task.label, config.config_hash()) is the object at home, not the config passed on
        if any(carries_config(frame.f_locals.get(name)) for name in params):
            key = (caller, caller_frame.f_code.co_name, callee, code.co_name)
            entries[key] = entries.get(key, 0) + 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return entries


def reaches(g: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(g.get(m, ()))
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import os

    from robustbench_leak.config import load_config

    try:
        from robustbench_leak.pipeline import run_config
    except ImportError:  # versions before the pipeline module
        from robustbench_leak.driver import run_config  # type: ignore[no-redef]
    try:
        from robustbench_leak.run.executor import LocalExecutor
    except ImportError:
        from robustbench_leak.executor import LocalExecutor  # type: ignore[no-redef]

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RBLEAK_CACHE_DIR"] = str(Path(tmp) / "cache")
        path = Path(tmp) / "trace.yaml"
        path.write_text(CONFIG)
        config = load_config(path)
        entries = trace(lambda: run_config(config, Path(tmp) / "out", executor=LocalExecutor(), progress=False,
                                           log=lambda line: None, formats=()))
    g = graph(lazy=True)
    per_module: dict[str, set[tuple[str, str]]] = {}
    upward = []
    for caller, caller_fn, callee, callee_fn in entries:
        per_module.setdefault(callee, set()).add((f"{caller}.{caller_fn}", callee_fn))
        if reaches(g, callee, caller):
            upward.append(f"{caller}.{caller_fn} -> {callee}.{callee_fn}")
    short = lambda m: m.removeprefix(PACKAGE + ".")  # noqa: E731
    visits = {short(m): len(v) for m, v in sorted(per_module.items())}
    summary = {"modules": len(visits), "entries": sum(visits.values()), "max_entries": max(visits.values()),
               "upward": len(upward), "per_module": visits, "upward_calls": sorted(upward),
               "edges": sorted(f"{short(a)}.{b} -> {short(c)}.{d}" for a, b, c, d in entries)}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{summary['modules']} modules entered {summary['entries']} times; at most {summary['max_entries']} "
              f"entries into one module; {summary['upward']} against the import direction")
        for m, n in visits.items():
            print(f"  {m}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
