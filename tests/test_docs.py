"""The README is a short first page, and it and the docs/ pages it links stay true to the code: every link
resolves, every ``rbleak`` command and flag they mention exists, and the README's YAML example loads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

README = REPO / "README.md"
FIRST_SCREEN = 60
# the brief's two set-up commands: install and run the default config; install and run the tests
INSTALL_AND_RUN = ("apt-get update && apt-get install -y dataset-fashion-mnist python3-venv && python3 -m venv .venv "
                   "&& .venv/bin/pip install -e . && .venv/bin/rbleak run configs/quickstart.yaml")
INSTALL_AND_TEST = "bash .ci/run"


def _pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def _code_blocks(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"^```{lang}[^\n]*\n(.*?)^```", text, re.M | re.S)


def test_every_relative_link_resolves():
    checked = 0
    for page in _pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(REPO)}: link to {target} does not resolve"
            checked += 1
    assert checked > 0


def test_readme_links_to_docs_pages_that_exist():
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", README.read_text()))
    assert linked, "the README links no docs/ page"
    assert all((REPO / p).is_file() for p in linked)


def test_first_screen_holds_the_verdict_table_and_runnable_commands():
    first = "\n".join(README.read_text().splitlines()[:FIRST_SCREEN])
    assert "| paper's claim (Hamming 7x7 vs ...) | verdict at CPU scale |" in first
    assert re.search(r"^\| more accurate than 3x3 \| (reproduced|not reproduced|inconclusive)", first, re.M)
    commands = [line.strip() for block in _code_blocks(first, "bash") for line in block.splitlines()]
    assert INSTALL_AND_RUN in commands and INSTALL_AND_TEST in commands
    assert (REPO / ".ci" / "run").is_file() and (REPO / "configs" / "quickstart.yaml").is_file()


def _mentioned_commands(text: str) -> list[list[str]]:
    """``rbleak SUB [args]`` as written in code blocks and inline code spans, split into words."""
    spans = [line for block in _code_blocks(text) for line in block.splitlines()]
    spans += re.findall(r"`([^`\n]*rbleak [^`\n]*)`", text)
    found = []
    for span in spans:
        span = span.split("#")[0]
        for m in re.finditer(r"(?:^|[\s/(])rbleak((?: +[^\s;&|)]+)*)", span):
            words = m.group(1).split()
            if words:
                found.append(words)
    return found


def test_every_rbleak_command_and_flag_in_the_docs_exists():
    from robustbench_leak.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = sub.choices
    seen = 0
    for page in _pages():
        for words in _mentioned_commands(page.read_text()):
            if words[0] == "--debug":
                words = words[1:]
            if not words or words[0] in {"...", "COMMAND"}:
                continue
            name = words[0]
            assert name in commands, f"{page.relative_to(REPO)}: 'rbleak {name}' is not a command"
            flags = {o for a in commands[name]._actions for o in a.option_strings}
            for word in words[1:]:
                flag = word.strip("[]").split("=")[0]
                if flag.startswith("--"):
                    assert flag in flags, f"{page.relative_to(REPO)}: 'rbleak {name}' has no flag {flag}"
            seen += 1
    assert seen > 10


def test_readme_yaml_example_is_a_valid_config(tmp_path):
    from robustbench_leak.config import load_config
    from robustbench_leak.data import DataMissingError

    blocks = _code_blocks(README.read_text(), "yaml")
    assert blocks, "the README has no YAML example"
    data = yaml.safe_load(blocks[0])
    path = tmp_path / "mine.yaml"
    path.write_text(blocks[0])
    try:
        config = load_config(path)
    except DataMissingError as exc:  # the real files: CI installs them
        if os.environ.get("RBLEAK_REQUIRE_REAL_DATA") == "1":
            raise
        pytest.skip(f"real Fashion-MNIST not installed: {exc}")
    assert [m.name for m in config.run.models] == [m["name"] for m in data["models"]]


def test_config_keys_in_docs_configs_exist():
    """docs/configs.md's annotated config, its commented-out keys switched on, passes the config schema."""
    from robustbench_leak.config import RunConfig

    block = _code_blocks((REPO / "docs" / "configs.md").read_text(), "yaml")[0]
    # '    # key: value  # why' -> '    key: value' (the keys the page documents as optional)
    lines = [re.sub(r"^(\s*)# ([a-z_]+: [^#]+?)\s*(#.*)?$", r"\1\2", line) for line in block.splitlines()]
    data = yaml.safe_load("\n".join(lines))
    assert {"test_subset", "root", "normalize"} <= set(data["datasets"][0])
    assert {"checkpoint", "match_params", "training"} <= set(data["models"][0])
    RunConfig(**data)
