"""The cell keys of every shipped config: a new training option must leave them as they were, so that
cached checkpoints and stored results stay valid.

    python scripts/config_keys.py                       print {config: {cell label: key}} as JSON
    python scripts/config_keys.py --write FILE          write it to FILE (results/bench/config-keys.json)
    python scripts/config_keys.py --check FILE          compare with FILE; exit 1 naming each changed key

The planned keys need no data on disk (planning is pure); a config whose model checkpoints are missing
on this machine is listed under "unplanned" with the reason, never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robustbench_leak.config import load_config  # noqa: E402
from robustbench_leak.run.plan import plan  # noqa: E402
from robustbench_leak.run.tasks import cell_label  # noqa: E402


def config_keys(configs: list[Path]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    unplanned: dict[str, str] = {}
    for path in configs:
        name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        try:
            trains, evals = plan(load_config(str(path)))
        except (ValueError, OSError) as exc:
            unplanned[name] = str(exc).splitlines()[0][:200]
            continue
        out[name] = {cell_label(t): t.key for t in [*trains, *evals]}
    if unplanned:
        out["unplanned"] = unplanned
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="configs (default: configs/*.yaml)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE")
    group.add_argument("--check", metavar="FILE")
    args = parser.parse_args(argv)
    configs = [Path(c).resolve() for c in args.configs] or sorted((REPO / "configs").glob("*.yaml"))
    keys = config_keys(configs)
    if args.check:
        expected = json.loads(Path(args.check).read_text())
        changed = [f"{cfg}: {label}: {old} -> {keys.get(cfg, {}).get(label, 'missing')}"
                   for cfg, cells in expected.items() if cfg != "unplanned"
                   for label, old in cells.items() if keys.get(cfg, {}).get(label) != old]
        added = [f"{cfg}: {label}: new" for cfg, cells in keys.items() if cfg != "unplanned"
                 for label in cells if label not in expected.get(cfg, {})]
        for line in changed + added:
            print(line)
        n = sum(len(c) for k, c in keys.items() if k != "unplanned")
        print(f"{n} cell keys of {len(keys) - ('unplanned' in keys)} configs: "
              f"{len(changed)} changed, {len(added)} new")
        return 1 if changed or added else 0
    text = json.dumps(keys, indent=1, sort_keys=True) + "\n"
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
