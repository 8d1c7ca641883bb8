"""The package's structure, measured from its own source: layers (README's code map), what the low layers
may import, the config's path through a run, and the code map itself."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from import_graph import collapse, graph, layers  # noqa: E402

P = "robustbench_leak"
# README's code map, bottom to top: a module imports only from lower ranks
RANKS = [("options", "runtime", "metrics", "stats", "crossed", "sequential", "perturbation_spectra", "plugins"), ("nn",), ("models", "data"),
         ("attacks",), ("config",), ("store",), ("outputs",), ("run",), ("report",), ("bench",),
         ("pipeline", "results"), ("sequential_run", "evaluation"), ("cli",)]
RANK = {f"{P}.{name}": i for i, names in enumerate(RANKS) for name in names}


@pytest.fixture(scope="module")
def units() -> dict[str, set[str]]:
    return collapse(graph(lazy=True))  # imports inside functions count too


def test_every_unit_has_a_rank(units):
    assert set(units) == set(RANK), "a module or subpackage is missing from the code map (README, RANKS)"


def test_imports_only_go_down(units):
    upward = [f"{a} -> {b}" for a, targets in units.items() for b in targets if RANK[b] >= RANK[a]]
    assert upward == []


def test_nothing_below_the_run_wing_imports_it():
    g = graph(lazy=True)
    above = ("run", "bench", "pipeline", "sequential_run", "evaluation", "cli")
    below = [m for m in g if m != P and m.split(".")[1] not in above]
    assert [f"{m} -> {t}" for m in below for t in g[m] if t == f"{P}.run" or t.startswith(f"{P}.run.")] == []


def test_attacks_import_nothing_from_training_config_or_above():
    g = graph(lazy=True)
    bad = [f"{m} -> {t}" for m, targets in g.items() if m.startswith(f"{P}.attacks") for t in targets
           if not t.startswith(f"{P}.attacks") and t not in (f"{P}.runtime", f"{P}.metrics", f"{P}.options",
                                                             f"{P}.perturbation_spectra", f"{P}.plugins")]
    assert bad == []


def test_the_runtime_floor_imports_no_package_module():
    assert graph(lazy=True)[f"{P}.runtime"] == set()


def test_at_most_eight_layers_from_the_cli(units):
    depth, chain = layers(units, f"{P}.cli")
    assert len(chain) <= 8, " -> ".join(chain)


def test_the_config_reenters_no_module_more_than_twice(capsys):
    import json

    import trace_config

    assert trace_config.main(["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_entries"] <= 2, summary["per_module"]
    assert summary["upward"] == 0, summary["upward_calls"]


def test_readme_code_map_names_the_layout():
    text = (REPO / "README.md").read_text()
    block = text.split("## Code map", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"\b([a-z_]+)(?:/|\.py\b)", block)) - {P}
    actual = {p.name for p in (REPO / P).iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    actual |= {p.stem for p in (REPO / P).glob("*.py") if p.stem != "__init__"}
    assert actual <= named, f"not in README's code map: {sorted(actual - named)}"
    for sub in re.findall(r"^  ([a-z_]+)/", block, re.M):
        for module in re.findall(r"\b([a-z_]+)\.py\b", block.split(f"  {sub}/", 1)[1].split("\n", 1)[0]):
            assert (REPO / P / sub / f"{module}.py").exists(), f"{sub}/{module}.py is in the code map, not the package"
