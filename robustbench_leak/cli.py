"""``rbleak``: run | leaderboard | bench | list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoints import CheckpointError
from .config import ConfigError
from .data import DataMissingError, IdxFormatError


def _cmd_run(args: argparse.Namespace) -> None:
    from .config import load_config
    from .runner import run_config

    config = load_config(args.config)
    run_config(config, args.out, progress=not args.quiet)


def _cmd_leaderboard(args: argparse.Namespace) -> None:
    from .leaderboard import FORMATS, write_outputs

    dirs = [Path(d) for d in args.dirs]
    if len(dirs) > 1 and not args.out:
        raise ValueError(f"merging {len(dirs)} run folders: give --out DIR for the merged leaderboard "
                         "(so that no run folder's own leaderboard is overwritten)")
    out = Path(args.out) if args.out else dirs[0]
    formats = FORMATS if args.format == "all" else tuple(f.strip() for f in args.format.split(",") if f.strip())
    for path in write_outputs(dirs, out, rank_by=args.rank_by, formats=formats):
        print(f"wrote {path}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench import run_bench

    run_bench(Path(args.out), n_images=args.n_images, dataset=args.dataset, device_name=args.device)


def _cmd_list(args: argparse.Namespace) -> None:
    if args.what == "models":
        from .models import count_params, create_model, list_models

        print(f"{'name':<14} {'family':<10} params (10 classes, 1 channel, defaults)  description")
        for e in list_models():
            if e.name == "timm":
                print(f"{'timm:<name>':<14} {'timm':<10} {'-':>10}  any timm model, untrained, optionally windowized")
                continue
            params = count_params(create_model(e.name, 10, 1))
            print(f"{e.name:<14} {e.family:<10} {params:>10}  {e.description}")
            print(f"{'':<26}options: " + ", ".join(f"{k}={v!r}" for k, v in e.options().items()))
    elif args.what == "datasets":
        from .data import list_datasets

        for e in list_datasets():
            opts = ", ".join(f"{k}={v!r}" for k, v in e.options().items())
            print(f"{e.name:<16} {e.description}\n{'':<16} options: {opts}, train_subset, test_subset, subset_seed, normalize")
    elif args.what == "attacks":
        from .attacks import list_attacks
        from .config import PACKAGE_ROOT

        for cls in list_attacks():
            print(f"{cls.kind:<10} engine={cls.engine:<7} {cls.description}")
            print(f"{'':<10} params: " + ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()))
        presets = sorted(p.stem for p in (PACKAGE_ROOT / "attacks").glob("*.yaml"))
        print("presets (attacks/*.yaml): " + ", ".join(presets))
    elif args.what == "windows":
        from .nn import window_1d, window_names, window_params

        for name in window_names():
            values = ", ".join(f"{v:.3f}" for v in window_1d(name, 7))
            params = window_params(name)
            extra = f" params: {params}" if params else ""
            print(f"{name:<9} k=7: [{values}]{extra}")
        print("options: sqrt: true (unofficial port's square-root window), normalize: none|mean|energy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rbleak", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a config's grid and write its leaderboard")
    p.add_argument("config")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("leaderboard", help="re-render (and merge) leaderboards from run folders or stores")
    p.add_argument("dirs", nargs="+", metavar="RESULTS", help="run folders (or their results.sqlite files)")
    p.add_argument("--out", help="output folder (default: the run folder; required when merging several)")
    p.add_argument("--rank-by", help="column to rank by, e.g. deepfool.rho_mean")
    p.add_argument("--format", default="all",
                   help="'all' or comma-separated: csv, md, json, latex, html, plots (html includes the plots)")
    p.set_defaults(fn=_cmd_leaderboard)
    p = sub.add_parser("bench", help="throughput of attack engines vs plain PyTorch, as JSON")
    p.add_argument("--out", default="bench.json")
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser("list", help="list registered names")
    p.add_argument("what", choices=["models", "datasets", "attacks", "windows"])
    p.set_defaults(fn=_cmd_list)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (ConfigError, DataMissingError, IdxFormatError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"rbleak: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rbleak: interrupted; rerun the same command to resume (finished cells are kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
