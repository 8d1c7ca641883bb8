"""docs/extending.md runs as written: its ``# file:`` blocks build a throwaway plugin package, installed
into a temporary folder, whose attack, model and dataset ``rbleak list`` shows with their origin and a
config runs; and plugins load lazily, once, with a one-line error naming a plugin that fails to import."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "extending.md"


def page_files() -> dict[str, str]:
    """The page's code blocks that start with ``# file: PATH``, by path."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", PAGE.read_text(), re.M | re.S)
    return {m.group(1): body for body in blocks if (m := re.match(r"# file: (\S+)\n", body))}


def page_commands() -> list[list[str]]:
    bash = re.findall(r"^```bash\n(.*?)^```", PAGE.read_text(), re.M | re.S)
    return [line.split()[1:] for block in bash for line in block.splitlines() if line.startswith("rbleak ")]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "rbleak-example"
    for rel, text in page_files().items():
        if rel.endswith(".yaml") and "/" not in rel:
            continue  # the user's config, not part of the package
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *isolation, "-q", "--target",
                    str(tmp / "site"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    return tmp / "site"


def test_the_page_declares_a_whole_plugin():
    files = page_files()
    assert {"pyproject.toml", "rbleak_example/attacks.py", "rbleak_example/models.py", "rbleak_example/datasets.py",
            "rbleak_example/presets/noise.yaml", "extended.yaml"} <= set(files)
    assert [c[0] for c in page_commands()] == ["list", "run"]


def test_plugin_from_the_page_is_listed_and_runs(plugin_site, tmp_path):
    """The page's commands in one process (each start imports torch), from a folder with nothing but the
    page's config: the entries come from the installed plugin, the preset from its package."""
    (tmp_path / "extended.yaml").write_text(page_files()["extended.yaml"])
    commands = [["list", "attacks"], ["list", "datasets"], *page_commands()]
    session = ("import sys\nfrom robustbench_leak.cli import main\n"
               f"for argv in {commands!r}:\n"
               "    print('RC', argv[:2], main(argv), flush=True)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)]),
           "RBLEAK_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", session], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and out.stdout.count(" 0\n") == len(commands), out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()

    def line_of(start: str) -> str:
        return next(line for line in lines if line.startswith(start))

    assert line_of("gaussian-noise").endswith("[from plugin rbleak-example (rbleak_example.attacks)]")
    assert line_of("tiny-mlp").endswith("[from plugin rbleak-example (rbleak_example.models)]")
    assert line_of("blobs").endswith("[from plugin rbleak-example (rbleak_example.datasets)]")
    assert line_of(f"  {plugin_site / 'rbleak_example' / 'presets'}:").endswith(": noise")
    board = (tmp_path / "runs" / "extended" / "leaderboard.md").read_text()
    assert "Ranked by `noise.success_rate` (ascending: lower is better)" in board
    assert "median L2 norm of the added noise" in board  # the plugin's own metric, in the legend
    import json

    rows = json.loads((tmp_path / "runs" / "extended" / "leaderboard.json").read_text())
    flat = json.dumps(rows)
    assert "mlp-16" in flat and "mlp-64" in flat
    import pandas as pd

    table = pd.read_csv(tmp_path / "runs" / "extended" / "leaderboard.csv")
    assert table["noise.success_rate"].is_monotonic_increasing and list(table["rank"]) == [1, 2]


@pytest.fixture
def fresh_plugins(monkeypatch):
    from robustbench_leak import plugins

    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_ORIGIN", {})
    return plugins


def test_a_plugin_that_fails_to_import_is_named_in_one_line(fresh_plugins, monkeypatch, capsys):
    bad = metadata.EntryPoint(name="broken", value="rbleak_no_such_module.models", group="robustbench_leak.models")
    monkeypatch.setattr(fresh_plugins, "_entry_points", lambda group: [bad] if group == "models" else [])
    with pytest.raises(fresh_plugins.PluginError) as err:
        fresh_plugins.load_plugins("models")
    message = str(err.value)
    assert "\n" not in message and "plugin broken (rbleak_no_such_module.models)" in message
    assert "ModuleNotFoundError" in message
    from robustbench_leak.cli import main

    assert main(["list", "models"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "rbleak: error: plugin broken" in stderr


def test_plugins_load_once(fresh_plugins, monkeypatch):
    calls = []
    monkeypatch.setattr(fresh_plugins, "_entry_points", lambda group: calls.append(group) or [])
    from robustbench_leak.models import get_entry, list_models

    list_models()
    get_entry("tomen_cnn")
    list_models()
    assert calls == ["models"]
