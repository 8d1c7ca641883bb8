"""``rbleak``: run | init | leaderboard | compare | claims | bench | strength | list."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from .outputs import check_out_dir, check_out_file, is_rbleak_folder, mark_folder
from .run.deadline import EXIT_TIME_LIMIT, TimeLimitReached
from .run.driver import CellsFailed
from .run.lock import OutDirLocked


def _cmd_run(args: argparse.Namespace) -> None:
    from .config import load_config
    from .pipeline import run_config
    from .config.overrides import with_overrides

    if args.until_decided and args.seeds is not None:
        raise ValueError("--until-decided: chooses the seeds itself; drop --seeds")
    if args.end_design is not None and not args.until_decided:
        raise ValueError("--end-design: ends a sequential design; allowed only with --until-decided")
    config = with_overrides(load_config(args.config, engine=args.engine),
                            seeds=None if args.seeds is None else _seed_list(args.seeds, "--seeds"),
                            executor=args.executor, address=args.address, connect_timeout=args.connect_timeout)
    out = Path(args.out) if args.out else Path("runs") / config.name
    check_out_dir(out, "--out")  # a store there is checked too (damage, another program's file)
    if args.until_decided:
        from .sequential_run import check_claim_set

        check_claim_set(config, args.until_decided)
    if args.publish_weights:
        from .run.driver import WEIGHTS_DIR

        (out / WEIGHTS_DIR).mkdir(parents=True, exist_ok=True)
    merge = [_merge_source(m, out) for m in args.merge or []]
    for attack in config.attacks:
        if attack.note:
            print(f"note: {attack.note}")
    _log_to_stdout()
    progress = not args.quiet and sys.stderr.isatty()  # bars only on a terminal: in a log file they are noise
    if args.until_decided:
        from .pipeline import render_leaderboard
        from .run.deadline import Deadline
        from .sequential_run import run_until_decided

        # one limit over every look; each look's run stops cleanly before it, like a plain run
        deadline = None if args.time_limit is None else Deadline.after(args.time_limit, "--time-limit")
        run_until_decided(config, out, args.until_decided, args.seed_batch, args.max_seeds,
                          lambda step, where, claim_sets: run_config(
                              step, where, progress=progress, merge_from=merge, deadline=deadline, hard_stop=True,
                              claim_sets=claim_sets, formats=()), print, end_reason=args.end_design)
        render_leaderboard(out, None, print)  # once, after the last look
    else:
        run_config(config, out, progress=progress, merge_from=merge, time_limit=args.time_limit, hard_stop=True)


def _reason(text: str) -> str:
    reason = text.strip()
    if not reason or len(reason) > 300 or not reason.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected a reason, one line of printable text of 1 to "
                                         "300 characters")
    return reason


def _time_limit(text: str) -> float:
    from .run.deadline import check_time_limit

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    try:
        return check_time_limit(value, "--time-limit")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected a positive number of seconds up to a year, "
                                         "e.g. 540") from None


def _seed_list(text: str, flag: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and len(p) <= 12 for p in parts):
        raise ValueError(f"{flag}: {text[:60]!r}: expected comma-separated seeds (non-negative integers), e.g. 0,3")
    return list(dict.fromkeys(int(p) for p in parts))


def _merge_source(path: str, out: Path) -> Path:
    """A --merge source: an existing rbleak store or run folder, other than the --out store. Read-only."""
    from .store import STORE_NAME, StoreReader

    source = Path(path)
    store_file = source / STORE_NAME if source.is_dir() else source
    if store_file.resolve() == (out / STORE_NAME).resolve():
        raise ValueError(f"--merge: {path}: is the --out store itself")
    StoreReader(source).close()  # refuses, untouched, anything that is not an rbleak store
    return source


def _log_to_stdout() -> None:
    """The package's log lines ([train], [eval], [skip], ...) on stdout, between any progress bars."""
    import logging

    from tqdm import tqdm

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stdout)

    root = logging.getLogger("robustbench_leak")
    for h in [h for h in root.handlers if getattr(h, "rbleak_cli", False)]:
        root.removeHandler(h)
    handler = Handler()
    handler.rbleak_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def _cmd_leaderboard(args: argparse.Namespace) -> None:
    from .report.leaderboard import FORMATS, write_outputs

    from .store import STORE_NAME, store_file
    from .store.schema import connect_readonly

    dirs = [Path(d) for d in args.dirs]
    for d in dirs:  # the inputs first: a wrong RESULTS must not be reported as a bad output folder
        connect_readonly(store_file(d)).close()
    if len(dirs) > 1 and not args.out:
        raise ValueError(f"merging {len(dirs)} run folders: give --out DIR for the merged leaderboard "
                         "(so that no run folder's own leaderboard is overwritten)")
    out = Path(args.out) if args.out else dirs[0]
    if out.suffix == ".sqlite" or out.is_file():
        out = out.parent if not args.out else out
    check_out_dir(out, "--out" if args.out else "RESULTS")
    own = out / STORE_NAME
    if own.is_file() and not (len(dirs) == 1 and os.path.samefile(store_file(dirs[0]), own)):
        # a run folder's leaderboard is its own store's: never replaced by another run's or by a merge
        raise ValueError(f"{out}: --out: a run folder whose own leaderboard this would replace (with "
                         f"{'a merge' if len(dirs) > 1 else 'another run'}'s); give a new folder")
    formats = FORMATS if args.format == "all" else tuple(f.strip() for f in args.format.split(",") if f.strip())
    if not formats:
        raise ValueError(f"--format: {args.format!r} names no format; allowed: all, or a comma-separated list of "
                         f"{', '.join(FORMATS)}")
    for path in write_outputs(dirs, out, rank_by=args.rank_by, formats=formats):
        print(f"wrote {path}")


def _cmd_bench(args: argparse.Namespace) -> None:
    if args.training:
        from .bench.training import run_training_bench

        run_training_bench(args.out or "bench-training.json", args.device or "auto", args.sizes, args.packs,
                           args.steps, args.dataset, args.variants, autotune=args.autotune)
        return
    if args.executors:
        from .bench.attacks import output_path
        from .bench.executors import run_executor_bench

        run_executor_bench(output_path(args.out or "bench-executors.json", "bench-executors.json"), args.grid,
                           workers=args.workers)
        return
    if args.references:
        from .bench.references import run_references_bench

        run_references_bench(args.out or "bench-references.json", args.config, args.model, n_images=args.n_images,
                             device_name=args.device)
        return
    from .bench.attacks import run_bench

    run_bench(args.out or "bench.json", args.config, args.model, n_images=args.n_images, n_spatial=args.n_spatial,
              device_name=args.device, n_train=args.n_train)


def _cmd_claims(args: argparse.Namespace) -> None:
    from .report.claim_set import claim_set_names, load_claim_set
    from .report.claims_report import render
    from .store import STORE_NAME, store_file

    if args.list:
        for name in claim_set_names():
            cs = load_claim_set(name)
            print(f"{name:<12} {len(cs.claims)} claims, models of configs/{cs.config}: {cs.description}")
        return
    if args.run_dir is None:
        raise ValueError("claims: RUN_DIR: give a run folder (or --list)")
    claim_set = load_claim_set(args.claims)
    preamble = ""
    if args.preamble:
        from .config import ConfigError
        from .config.yaml_io import read_text_bounded

        path = Path(args.preamble)
        try:
            preamble = read_text_bounded(path, "preamble", kind="Markdown")
        except ConfigError as err:
            raise ValueError(str(err).replace(f"{path}: ", f"{path}: --preamble: ", 1)) from None
    if args.out:
        check_out_file(Path(args.out), "--out", "## Claims")
        own, source = Path(args.out).parent / STORE_NAME, store_file(args.run_dir)
        if own.is_file() and source.is_file() and not os.path.samefile(own, source):
            raise ValueError(f"{args.out}: --out: in another run's folder ({own.parent}): its reports are its own "
                             "store's; write this one beside its own store or into a new folder")
        if not is_rbleak_folder(Path(args.out).parent):
            check_out_dir(Path(args.out).parent / "plots", "--out (its plots/ folder)")
    seeds = _seed_list(args.seeds, "--seeds") if args.seeds is not None else None
    base = Path(args.out).parent if args.out else None
    output = render(args.run_dir, claim_set, base, args.art, preamble, seeds, others=args.with_ or ())
    if base is not None and not is_rbleak_folder(base) and (base / "plots").is_dir():
        mark_folder(base / "plots")
    if args.out:
        Path(args.out).write_text(output)  # checked before the claims were computed
        print(f"wrote {args.out}")
    else:
        print(output)


def _cmd_strength(args: argparse.Namespace) -> None:
    from .report.attack_strength import strength_report

    print(strength_report(args.dirs))


def _cmd_migrate(args: argparse.Namespace) -> None:
    from .run.lock import locked_out_dir
    from .store import store_file
    from .store.migrate import migrate_store
    from .store.migrations import fix_robust_accuracy

    for target in args.dirs:
        path = store_file(target)
        if not path.is_file():
            raise FileNotFoundError(f"{target}: no results store here (expected a run folder holding results.sqlite)")
        with locked_out_dir(path.parent):  # never while a run writes the folder
            done = migrate_store(path)
            fixed = fix_robust_accuracy(path, force=True)  # cells an older version added keep the old definition
        print(f"{done['path']}: {done['cells_converted']} cells' per-sample rows packed, {done['infos_packed']} infos "
              f"compressed; {done['bytes_before'] / 1e6:.1f} MB -> {done['bytes_after'] / 1e6:.1f} MB; robust accuracy "
              f"as RobustBench defines it: {fixed['cells_changed']} of {fixed['cells_checked']} eval cells corrected")


def _claims_choice(text: str) -> str:
    """A shipped claim set's name, or a path to a claim-set YAML file."""
    from .report.claim_set import claim_set_names

    if text in claim_set_names() or text.endswith((".yaml", ".yml")):
        return text
    from .options import did_you_mean

    raise argparse.ArgumentTypeError(f"invalid choice: {text[:60]!r}{did_you_mean(text, claim_set_names())} "
                                     f"(choose from {', '.join(claim_set_names())}, "
                                     "or give a path to a claim-set .yaml file)")


def _cmd_compare(args: argparse.Namespace) -> None:
    import json

    from .report.compare import compare_models, format_records, nan_to_none

    records = compare_models(args.run_dir, args.model_a, args.model_b, args.attack)
    print(json.dumps(nan_to_none(records), indent=2) if args.json else format_records(records))


def _int(flag: str, low: int, high: int):
    """An argparse type: an integer in [low, high], else a one-line error naming the flag."""
    def parse(text: str) -> int:
        value = text.strip()
        if not (value.lstrip("-").isdigit() and len(value) <= 12) or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer from {low} to {high:,}, got {text[:40]!r}")
        return int(value)
    return parse


def _number(flag: str, low: float, high: float):
    """An argparse type: a finite number in [low, high] (seconds), else a one-line error naming the flag."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be a number of seconds from {low:g} to {high:g}, "
                                             f"got {text[:40]!r}")
        return value
    return parse


def _address(text: str) -> str:
    from .config.address import check_address

    try:
        return check_address(text, "--address")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--address: ")) from None


def _parse_input_size(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size must be C,H,W (three integers), got {text!r}") from None
    if min(c, h, w) < 1 or c > 64 or max(h, w) > 1024:
        raise argparse.ArgumentTypeError(f"--input-size: C from 1 to 64, H and W from 1 to 1024, got {text[:40]!r}")
    return c, h, w


def _list_models(input_size: tuple[int, int, int], num_classes: int) -> None:
    """Every registered model at its default options: parameters and FLOPs (torch.utils.flop_counter)."""
    from .models import count_flops, count_params, list_models
    from .models.counting import build_for_counting

    c, h, w = input_size
    print(f"input {c}x{h}x{w}, {num_classes} classes, default options; FLOPs of one forward pass "
          "(PyTorch's FlopCounterMode: 2 per multiply-add)")
    print(f"{'name':<18} {'family':<10} {'params':>12} {'FLOPs':>16}  description")
    for e in list_models():
        if e.name == "timm":
            print(f"{'timm:<name>':<18} {'timm':<10} {'-':>12} {'-':>16}  any timm model, untrained, optionally "
                  "windowized (options below)")
        else:
            options = {"image_size": h} if "image_size" in e.options() else {}
            net = build_for_counting(e.name, num_classes, c, options)
            try:
                flops = f"{count_flops(net, (c, h, w)):,}"
            except (RuntimeError, ValueError) as exc:
                flops = "n/a"
                note = f"no forward pass at {c}x{h}x{w} with default options: {str(exc).splitlines()[0]}"
            print(f"{e.name:<18} {e.family:<10} {count_params(net):>12,} {flops:>16}  {e.description}"
                  + ("" if e.origin == "built-in" else f" [from {e.origin}]"))
            if flops == "n/a":
                print(f"{'':<18} {note}")
        print(f"{'':<18} options: " + ", ".join(f"{k}={v!r}" for k, v in e.options().items()))


def _cmd_list(args: argparse.Namespace) -> None:
    if args.what == "models":
        _list_models(args.input_size, args.num_classes)
    elif args.what == "datasets":
        from .data import list_datasets

        for e in list_datasets():
            opts = ", ".join(f"{k}={v!r}" for k, v in e.options().items())
            print(f"{e.name:<16} {e.description}" + ("" if e.origin == "built-in" else f" [from {e.origin}]"))
            print(f"{'':<16} options: {opts}, train_subset, test_subset, subset_seed, normalize")
    elif args.what == "attacks":
        from .attacks import attack_origin, list_attacks
        from .config import default_preset_dirs

        width = max(len(cls.kind) for cls in list_attacks())
        for cls in list_attacks():
            where = "" if attack_origin(cls) == "built-in" else f" [from {attack_origin(cls)}]"  # else built-in
            print(f"{cls.kind:<{width}} engine={cls.engine:<7} {cls.description}{where}")
            print(f"{'':<{width}} params: " + ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()))
        print("presets (attacks/<name>.yaml; after a config's own folder: the working directory, the package, "
              "the plugins):")
        for folder in default_preset_dirs():
            presets = sorted(p.stem for p in folder.glob("*.yaml"))
            if presets:
                print(f"  {folder}: " + ", ".join(presets))
    elif args.what == "windows":
        from .nn import window_1d, window_names, window_params

        for name in window_names():
            values = ", ".join(f"{v:.3f}" for v in window_1d(name, 7))
            params = window_params(name)
            extra = f" params: {params}" if params else ""
            print(f"{name:<9} k=7: [{values}]{extra}")
        print("options: sqrt: true (unofficial port's square-root window), normalize: none|mean|energy")


def _cmd_init(args: argparse.Namespace) -> None:
    """Write an example config to edit: a shipped config (default quickstart) under a new name."""
    import re

    from .config import shipped_configs, shipped_dir

    target = Path(args.name if args.name.endswith((".yaml", ".yml")) else f"{args.name}.yaml")
    name = target.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ValueError(f"init: NAME {args.name[:60]!r}: expected letters, digits, '.', '_' or '-' (it names the run "
                         "folder runs/NAME)")
    folder = shipped_dir("configs")
    source = folder / f"{args.template}.yaml" if folder else None
    if source is None or not source.is_file():
        raise ValueError(f"init: --from {args.template[:60]!r}: not a shipped config; shipped: "
                         f"{', '.join(shipped_configs()) or 'none'}")
    if target.exists() or target.is_symlink():
        raise ValueError(f"init: {target} exists; choose another NAME (init never overwrites a file)")
    if not target.parent.is_dir():
        raise ValueError(f"init: {target}: the folder {target.parent} does not exist; create it first or give a NAME "
                         "in an existing folder")
    text = source.read_text()
    text, count = re.subn(r"(?m)^name:.*$", f"name: {name}", text, count=1)
    if not count:
        text = f"name: {name}\n" + text
    target.write_text(text)
    print(f"wrote {target} (from the shipped config {args.template}); edit it, then: rbleak run {target}")


def _error_log(exc: BaseException) -> str:
    """Write the traceback of an unexpected error to a file; return its path ('' if none could be written)."""
    try:
        fd, path = tempfile.mkstemp(prefix="rbleak-error-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        return path
    except OSError:
        return ""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        # "[Errno 36] File name too long: '<the whole path>'": the path, cut, then what the system said
        name = str(exc.filename)
        return f"{name if len(name) <= 160 else name[:160] + f'... ({len(name)} characters)'}: {exc.strerror}"
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    shown = "; ".join(lines[:2])
    return shown if len(shown) <= 600 else shown[:600] + " ..."


# errors that carry a message for the user (file, key, what is expected); anything else is a bug
USER_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError, MemoryError)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: no usage block, ``--help`` named for it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text[:500]} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``rbleak`` command line: every subcommand and flag (the docs' test checks its commands against it)."""
    parser = _Parser(prog="rbleak", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a config's grid and write its leaderboard")
    p.add_argument("config", help="a config file, or a config's name: NAME.yaml or configs/NAME.yaml here, else the "
                                  "package's shipped config NAME (e.g. quickstart)")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--engine", help="run every attack that has this engine on it (e.g. art: ART's own code)")
    p.add_argument("--executor", choices=["local", "ray"], help="where cells run (default: the config's executor:, "
                   "else local); ray starts a local Ray cluster unless --address or RAY_ADDRESS names one")
    p.add_argument("--address", type=_address, help="executor ray: the Ray cluster to join, e.g. 10.0.0.5:6379, "
                                                    "ray://10.0.0.5:10001 or auto")
    p.add_argument("--connect-timeout", type=_number("--connect-timeout", 0.1, 3600), metavar="SECONDS",
                   help="executor ray with an address: fail when the cluster does not answer within this time "
                        "(default: the config's connect_timeout, else 10)")
    p.add_argument("--seeds", help="only these of the config's seeds, comma-separated (one shard of the grid, "
                                   "e.g. per machine or per process; merge the shards with --merge)")
    p.add_argument("--merge", nargs="+", metavar="RESULTS",
                   help="first copy in the finished cells of this config's plan from these run folders or stores "
                        "(e.g. its --seeds shards), then run only what is still missing")
    p.add_argument("--publish-weights", action="store_true",
                   help="keep the trained weights in OUT/weights/ (one file per train key, beside the store) instead "
                        "of the checkpoint cache; a folder that has weights/ always uses it, so a rerun reuses them")
    p.add_argument("--until-decided", metavar="CLAIMSET",
                   help="sequential seeds: run the config's seeds, then add --seed-batch seeds at a time until every "
                        "primary comparison of this claim set (name or YAML path) is decided or futile, or "
                        "--max-seeds is reached (O'Brien-Fleming alpha spending on the information fraction, "
                        "Holm's graph; docs/verdict-rules.md)")
    p.add_argument("--seed-batch", type=_int("--seed-batch", 1, 1000), default=5, metavar="N",
                   help="with --until-decided: seeds added per look (default 5)")
    p.add_argument("--max-seeds", type=_int("--max-seeds", 2, 10_000), default=30, metavar="N",
                   help="with --until-decided: the cap on seeds (default 30)")
    p.add_argument("--end-design", type=_reason, metavar="REASON",
                   help="with --until-decided: end the stored design at its last look for this stated reason (e.g. "
                        "a resource limit), stored with the look and printed in the report; the run completes that "
                        "look's seeds and adds none (open comparisons stay undecided; the error rate holds)")
    p.add_argument("--time-limit", type=_time_limit, metavar="SECONDS",
                   help="stop cleanly before this many seconds: finished cells and an epoch checkpoint of the model "
                        "in training are stored, the run is marked interrupted and the exit status is 75; the same "
                        "command resumes")
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("leaderboard", help="re-render (and merge) leaderboards from run folders or stores")
    p.add_argument("dirs", nargs="+", metavar="RESULTS", help="run folders (or their results.sqlite files)")
    p.add_argument("--out", help="output folder (default: the run folder; required when merging several)")
    p.add_argument("--rank-by", help="column to rank by, e.g. deepfool.rho_mean")
    p.add_argument("--format", default="all",
                   help="'all' or comma-separated: csv, md, json, latex, html, plots (html includes the plots)")
    p.set_defaults(fn=_cmd_leaderboard)
    p = sub.add_parser("bench", help="native vs ART attack engines vs plain PyTorch, side by side, as JSON")
    p.add_argument("--config", default="configs/quickstart.yaml", help="config whose model is benchmarked")
    p.add_argument("--model", default="cnn-7x7-hamming", help="model name in that config (trained if not cached)")
    p.add_argument("--out", help="JSON file, or an existing folder to hold it (default bench.json; with --executors, "
                                 "bench-executors.json)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to measure (default: the config's device)")
    p.add_argument("--n-train", type=_int("--n-train", 1, 10**7), help="training images for the training row "
                                                                         "(default: the config's)")
    p.add_argument("--n-images", type=_int("--n-images", 1, 10**6), default=200, help="test images for DeepFool")
    p.add_argument("--n-spatial", type=_int("--n-spatial", 1, 10**6), default=100,
                   help="test images for the spatial grid search")
    p.add_argument("--executors", action="store_true",
                   help="instead: a grid's wall-clock time on the local executor vs Ray, and Ray's start-up time")
    p.add_argument("--references", action="store_true",
                   help="instead: native AutoAttack vs torchattacks and ART, and every native minimum-norm engine vs "
                        "adv-lib, on the first --n-images test images (bench-references.json)")
    p.add_argument("--grid", default="configs/bench-grid.yaml", help="with --executors: the config to time")
    p.add_argument("--workers", type=_int("--workers", 1, 1024), default=2,
                   help="with --executors: Ray workers (CPUs), >= 1")
    p.add_argument("--training", action="store_true",
                   help="instead: training images/s and TFLOP/s against the device's peak, harness vs plain loop "
                        "vs packed models (bench-training.json)")
    p.add_argument("--sizes", help="with --training: LAYERSxWIDTH@BATCH,... (default GPU 6x64@128,6x128@32; CPU 4x16@64)")
    p.add_argument("--packs", help="with --training: pack sizes, e.g. 1,5,20 (default GPU 1,5,20; CPU 1,5)")
    p.add_argument("--steps", type=_int("--steps", 1, 100_000), help="with --training: timed steps per measurement (default GPU 30, CPU 4)")
    p.add_argument("--dataset", default="fashion-mnist", help="with --training: fashion-mnist or synthetic")
    p.add_argument("--variants", action="store_true",
                   help="with --training: also bf16 and (CUDA) no-channels_last rows")
    p.add_argument("--autotune", action="store_true",
                   help="with --training: also a compile: max-autotune row (compiling takes minutes)")
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser("claims", help="the paper's claims answered from a run's stored per-sample results")
    p.add_argument("run_dir", nargs="?")
    p.add_argument("--list", action="store_true", help="list the shipped claim sets and exit")
    p.add_argument("--art", help="run folder of the ART as-is vs fixed spatial comparison")
    p.add_argument("--with", dest="with_", action="append", metavar="FOLDER",
                   help="run folder holding the cells of the claims that name another config (the claim set's "
                        "`config:`), e.g. results/fashion-mnist-autoattack; repeatable")
    p.add_argument("--out", help="write Markdown here instead of printing it (figures go to plots/ beside it)")
    p.add_argument("--preamble", help="Markdown file put before the generated part (protocol, commands)")
    p.add_argument("--seeds", help="use only these training seeds of the run, comma-separated (e.g. 0,1,2: what "
                                   "fewer seeds would have said)")
    p.add_argument("--claims", default="paper", type=_claims_choice, metavar="SET",
                   help="a shipped claim set (rbleak claims --list: paper, depth-sweep, subsampled, each written "
                        "for one config's model names) or a path to a claim-set YAML file")
    p.set_defaults(fn=_cmd_claims)
    p = sub.add_parser("strength", help="per attack of the minimum-norm ensemble: success, median rho, "
                                        "optimality, passes per image, and the gradient-masking checks")
    p.add_argument("dirs", nargs="+", metavar="RESULTS", help="run folders (or their results.sqlite files)")
    p.set_defaults(fn=_cmd_strength)
    p = sub.add_parser("migrate", help="convert stores written before 2026-12-07 to the compact format (one way, "
                                       "checked bit for bit before the store is replaced)")
    p.add_argument("dirs", nargs="+", metavar="RESULTS", help="run folders (or their results.sqlite files)")
    p.set_defaults(fn=_cmd_migrate)
    p = sub.add_parser("compare", help="paired tests (McNemar, Wilcoxon) between two models of a run")
    p.add_argument("run_dir")
    p.add_argument("model_a")
    p.add_argument("model_b")
    p.add_argument("--attack", help="only this attack label")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_compare)
    p = sub.add_parser("init", help="write an example config to edit (a shipped config under a new name)")
    p.add_argument("name", help="the new config: NAME.yaml in the working directory (its run folder: runs/NAME)")
    p.add_argument("--from", dest="template", default="quickstart",
                   help="the shipped config to start from (default quickstart)")
    p.set_defaults(fn=_cmd_init)
    p = sub.add_parser("list", help="list registered names")
    p.add_argument("what", choices=["models", "datasets", "attacks", "windows"])
    p.add_argument("--input-size", type=_parse_input_size, default=(1, 28, 28), metavar="C,H,W",
                   help="input size for 'list models' parameter and FLOP counts (default 1,28,28)")
    p.add_argument("--num-classes", type=_int("--num-classes", 1, 100_000), default=10,
                   help="classes for 'list models' (default 10)")
    p.set_defaults(fn=_cmd_list)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``, ``docker stop``), handled as Ctrl-C is: the run in
    progress is stored as interrupted and the same command resumes it."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # signal handlers belong to the main thread; a caller running main() elsewhere keeps its own
    owner = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if owner else None
    try:
        return _run_command(args)
    finally:
        if owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run_command(args: argparse.Namespace) -> int:
    try:
        args.fn(args)
    except (CellsFailed, OutDirLocked) as exc:
        lines = str(exc).splitlines()
        shown = [line if len(line) <= 300 else line[:300] + " ..." for line in lines[:21]]
        more = [f"  ... and {len(lines) - 21} more"] if len(lines) > 21 else []
        print("rbleak: error: " + "\n".join(shown + more), file=sys.stderr)
        return 1
    except TimeLimitReached as exc:
        print(f"rbleak: time limit reached ({_one_line(exc)}); finished cells and epoch checkpoints are stored; "
              "rerun the same command to resume", file=sys.stderr)
        return EXIT_TIME_LIMIT
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"rbleak: {how}; rerun the same command to resume (finished cells are kept)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user unless asked for
        if args.debug:
            traceback.print_exc()
        user = isinstance(exc, USER_ERRORS)
        message = _one_line(exc) if user else f"internal error ({type(exc).__name__}: {_one_line(exc)})"
        if isinstance(exc, MemoryError):
            message = "out of memory" + (f": {message}" if str(exc) else "")
        # a ValueError carries a complete message (file, key, what is allowed); for anything else the
        # traceback may help, so it goes to a file
        # expected errors (bad input, a missing file, out of memory) say all in their one line; a RuntimeError
        # may come from deep inside torch, so it keeps its traceback file like any unexpected error
        expected = user and not type(exc) is RuntimeError
        log = "" if args.debug or expected else _error_log(exc)
        hint = f" (traceback in {log}; --debug shows it)" if log else ""
        print(f"rbleak: error: {message}{hint}", file=sys.stderr)
        return 2 if user else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
