"""The README's verdict table states exactly what the published Fashion-MNIST report says, claim by claim."""

import re

from conftest import REPO

VERDICTS = ("not reproduced", "reproduced", "inconclusive", "not evaluated")


def _verdict(text: str) -> str:
    text = text.strip().strip("*").strip()
    for v in VERDICTS:  # "not reproduced" before "reproduced"
        if text.startswith(v):
            return v
    raise AssertionError(f"no verdict at the start of {text[:80]!r}")


def test_readme_verdict_table_matches_the_report():
    readme = (REPO / "README.md").read_text()
    table = readme.split("| paper's claim (Hamming 7x7 vs ...) | verdict at CPU scale |", 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(_verdict(line.split("|")[2]))
    report = (REPO / "results" / "fashion-mnist" / "REPORT.md").read_text()
    claims = [_verdict(m.group(2)) for m in re.finditer(r"^\| (\d+) \| .*? \| (\*\*[a-z ]+\*\*) \|", report, re.M)]
    assert claims and rows == claims
    stated = re.search(r"Fashion-MNIST at CPU scale \([^)]*?(\d+) seeds", readme)
    covered = re.search(r"cnn-3x3: seeds ([\d, ]+) complete", report)
    assert stated and covered and int(stated.group(1)) == len(covered.group(1).split(","))
