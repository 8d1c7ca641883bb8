"""The README's verdict table states exactly what the published Fashion-MNIST report says, claim by claim."""

import re

from conftest import REPO

VERDICTS = ("not reproduced", "reproduced", "mixed", "inconclusive", "not evaluated", "answered yes",
            "answered no", "answered both ways", "unanswered")


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


def test_published_leaderboard_csvs_are_plain_tables():
    """pandas.read_csv reads every published leaderboard.csv as is: one row per model, the documented columns."""
    import json

    import pandas as pd

    folders = sorted(p.parent for p in (REPO / "results").glob("*/leaderboard.csv"))
    assert folders
    for folder in folders:
        board = pd.read_csv(folder / "leaderboard.csv")
        meta = json.loads((folder / "leaderboard.meta.json").read_text())
        assert list(board.columns) == list(meta["columns"]), folder
        assert {"dataset", "model", "run", "rank"} <= set(board.columns)
        assert not board.duplicated(["dataset", "run", "model"]).any() and len(board) >= 2, folder
        assert all(meta["columns"][c] for c in ("model", "params")), folder


PUBLISHED = [  # folder, claim set, --art folder, --with folders: the commands in docs/verdict-rules.md
    ("fashion-mnist", "paper", "results/fashion-mnist-art", ["results/fashion-mnist-autoattack"]),
    ("depth-sweep", "depth-sweep", None, []),
    ("fashion-mnist-14", "subsampled", None, []),
]


def test_every_published_report_re_renders_byte_identically(monkeypatch):
    """Each results/*/REPORT.md is what `rbleak claims` renders from its store today (figures linked, not
    redrawn): the published verdicts are the current rules' verdicts."""
    from robustbench_leak.report.claim_set import load_claim_set
    from robustbench_leak.report.claims_report import render

    monkeypatch.chdir(REPO)
    assert sorted(p.parent.name for p in (REPO / "results").glob("*/REPORT.md")) == sorted(f[0] for f in PUBLISHED)
    for folder, claims, art, others in PUBLISHED:
        base = REPO / "results" / folder
        text = render(f"results/{folder}", load_claim_set(claims), base, art,
                      (base / "REPORT-preamble.md").read_text(), draw=False, others=others)
        assert text == (base / "REPORT.md").read_text(), folder
