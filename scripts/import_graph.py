"""The package's import graph, from its own source: modules, edges, layers and the longest chain.

    python scripts/import_graph.py [--lazy] [--modules] [--json]

Counts imports of ``robustbench_leak`` modules by ``robustbench_leak`` modules (a package's
``__init__`` counts as the package). ``--lazy`` also counts imports inside functions; ``--modules`` keeps one node per file instead of one
per top-level module or subpackage. Layers: the
length of the longest import chain from ``robustbench_leak.cli`` to a module.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "robustbench_leak"
PACKAGE = "robustbench_leak"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(mod: str, path: Path, known: dict[str, Path], lazy: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    nodes = ast.walk(tree) if lazy else (n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from .x import y": the module x.y when there is one, else x
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        found |= {t for t in (resolve(t, known) for t in targets if t.startswith(PACKAGE)) if t and t != mod}
    return found


def collapse(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """One node per top-level module or subpackage (``config.schema`` -> ``config``)."""
    unit = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    out: dict[str, set[str]] = {}
    for m, targets in g.items():
        out.setdefault(unit(m), set()).update(unit(t) for t in targets)
    for m in out:
        out[m] -= {m, PACKAGE}
    return {m: v for m, v in out.items() if m != PACKAGE}


def graph(lazy: bool) -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known, lazy) for m, p in known.items()}


def layers(g: dict[str, set[str]], start: str) -> tuple[dict[str, int], list[str]]:
    """Longest-chain depth of each module reachable from ``start`` (an import cycle counts once), and one
    longest chain."""
    @lru_cache(maxsize=None)
    def longest(m: str, stack: frozenset[str]) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for t in sorted(g.get(m, ())):
            if t in stack:
                continue
            chain = longest(t, stack | {t})
            if len(chain) > len(best):
                best = chain
        return (m, *best)

    depth: dict[str, int] = {}
    chain = longest(start, frozenset({start}))

    def walk(m: str, d: int, stack: frozenset[str]) -> None:
        if depth.get(m, -1) >= d:
            return
        depth[m] = d
        for t in g.get(m, ()):
            if t not in stack:
                walk(t, d + 1, stack | {t})

    walk(start, 1, frozenset({start}))
    return depth, list(chain)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lazy", action="store_true", help="count imports inside functions too")
    ap.add_argument("--modules", action="store_true",
                    help="one node per file (default: one per top-level module or subpackage)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    g = graph(args.lazy)
    if not args.modules:
        g = collapse(g)
    depth, chain = layers(g, f"{PACKAGE}.cli")
    short = lambda m: m.removeprefix(PACKAGE + ".") or PACKAGE  # noqa: E731
    summary = {"modules": len(g), "edges": sum(len(v) for v in g.values()), "layers": len(chain),
               "longest_chain": [short(m) for m in chain]}
    if args.json:
        json.dump({**summary, "graph": {short(k): sorted(short(t) for t in v) for k, v in g.items()}}, sys.stdout,
                  indent=1)
        print()
    else:
        print(f"{summary['modules']} modules, {summary['edges']} import edges, {summary['layers']} layers from cli")
        print("longest chain: " + " -> ".join(summary["longest_chain"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
