"""Each shipped claim's definition history from git: the last commit that changed its definition (see
robustbench_leak/report/registration.py), that commit's date, and the fields it changed. The test of the
claim sets' ``declared`` fields reads it; run as a script it prints what they should say, and with --write
rewrites them (after the change is committed, e.g. when a rebase gave the commits new hashes):

    python tests/claim_history.py robustbench_leak/report/claim_sets/paper.yaml [--write]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from robustbench_leak.report.registration import FIELDS, definitions, digest

REPO = Path(__file__).resolve().parents[1]
RULES = "robustbench_leak/report/verdict_rules.yaml"


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def _at(commit: str, path: str):
    out = _git("show", f"{commit}:{path}")
    return yaml.safe_load(out.stdout) if out.returncode == 0 else None


def _match(defs: list[dict], title: str, i: int) -> dict | None:
    for d in defs:
        if d["title"] == title:
            return d
    return None


def history(claim_set_path: str) -> list[dict]:
    """Per claim of the file's committed history (in the order of its newest version): commit, date and the
    fields of the last change to its definition. A commit changes a definition when it differs from the
    definition in every parent, so merging a branch changes nothing that either side already had."""
    log = _git("log", "--full-history", "--topo-order", "--reverse", "--format=%H%x09%cI%x09%P", "--",
               claim_set_path, RULES).stdout.split("\n")
    cache: dict[str, list[dict]] = {}

    def defs_at(commit: str) -> list[dict]:
        if commit not in cache:
            data = _at(commit, claim_set_path)
            cache[commit] = definitions(data, _at(commit, RULES)) if isinstance(data, dict) else []
        return cache[commit]

    last: dict[str, dict] = {}
    for line in filter(None, log):
        commit, date, parents = (line.split("\t") + [""])[:3]
        parent_defs = [defs_at(p) for p in parents.split()] or [[]]
        for i, d in enumerate(defs_at(commit)):
            olds = [_match(defs, d["title"], i) for defs in parent_defs]
            if all(old is None for old in olds):
                last[d["title"]] = {"commit": commit, "date": date, "changed": ["new claim"]}
            elif all(old is None or digest(old) != digest(d) for old in olds):
                old = next(o for o in olds if o is not None)
                last[d["title"]] = {"commit": commit, "date": date, "changed": [k for k in FIELDS if old[k] != d[k]]}
    return [{"title": d["title"], **last[d["title"]]} for d in defs_at("HEAD")]


def write(path: str) -> None:
    """Rewrite each claim's one-line ``declared: {...}`` (in claim order) from the history."""
    import re

    entries = iter(history(path))

    def line(m: re.Match) -> str:
        h = next(entries)
        return f"{m.group(1)}declared: {{commit: {h['commit'][:7]}, date: '{h['date']}', changed: [{', '.join(h['changed'])}]}}"

    file = REPO / path
    file.write_text(re.sub(r"^(\s*)declared: \{[^}]*\}", line, file.read_text(), flags=re.M))


if __name__ == "__main__":
    if "--write" in sys.argv:
        write(sys.argv[1])
    for entry in history(sys.argv[1]):
        print(f"{entry['commit'][:7]} {entry['date']} {entry['changed']}  {entry['title'][:60]}")
