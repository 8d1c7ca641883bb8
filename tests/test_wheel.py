"""The package as a user installs it: the wheel alone, unpacked outside the checkout and run from an empty
folder, lists the shipped presets, runs the README's Python example and finds the quickstart config by name."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "robustbench_leak", "attacks", "configs")


def build_wheel(src: Path, dist: Path) -> Path:
    """``pip wheel --no-deps`` of ``src`` into ``dist`` (without build isolation when setuptools is here, so
    no download is needed)."""
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(dist), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def unpack(wheel: Path, site: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def isolated_env(site: Path, tmp: Path) -> dict[str, str]:
    """The environment of a user's shell: only ``site`` added to the path, a fresh checkpoint cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), RBLEAK_CACHE_DIR=str(tmp / "cache"), PYTHONDONTWRITEBYTECODE="1")
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
        else:
            shutil.copy(REPO / name, src / name)
    wheel = build_wheel(src, tmp / "dist")
    site = unpack(wheel, tmp / "site")
    empty = tmp / "user"
    empty.mkdir()
    env = isolated_env(site, tmp)
    return site, env, empty


def test_wheel_carries_every_preset_and_config(installed):
    site, _, _ = installed
    for folder in ("attacks", "configs"):
        shipped = sorted(p.name for p in (site / "robustbench_leak" / "_shipped" / folder).glob("*.yaml"))
        assert shipped == sorted(p.name for p in (REPO / folder).glob("*.yaml"))


def test_installed_wheel_lists_its_presets_and_writes_a_config(installed):
    """One user session (one process: each start imports torch): where the package is, ``rbleak list
    attacks``, then ``rbleak init mine`` twice in a new folder (the second refuses to overwrite)."""
    site, env, empty = installed
    session = ("import os, robustbench_leak\n"
               "from robustbench_leak.cli import main\n"
               "from robustbench_leak.config import find_config\n"
               "print('FILE', robustbench_leak.__file__)\n"
               "listed = main(['list', 'attacks'])\n"
               "os.mkdir('init'); os.chdir('init')\n"
               "print('RC', listed, main(['init', 'mine']), main(['init', 'mine']), find_config('mine'))\n")
    out = run(["-c", session], empty, env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(re.search(r"^FILE (.*)$", out.stdout, re.M).group(1)).is_relative_to(site)
    line = next(line for line in out.stdout.splitlines() if "_shipped" in line)
    assert {p.stem for p in (REPO / "attacks").glob("*.yaml")} <= set(line.split(": ", 1)[1].split(", "))
    assert re.search(r"^RC 0 0 2 mine.yaml$", out.stdout, re.M) and "exists" in out.stderr
    text = (empty / "init" / "mine.yaml").read_text()
    assert re.search(r"(?m)^name: mine$", text) and "preset: deepfool" in text


def _real_data_or_skip() -> None:
    from robustbench_leak.data import DataMissingError, load_dataset

    try:
        load_dataset("fashion-mnist")
    except DataMissingError as exc:
        if os.environ.get("RBLEAK_REQUIRE_REAL_DATA") == "1":
            raise
        pytest.skip(f"real Fashion-MNIST not installed: {exc}")


@pytest.mark.realdata
def test_installed_wheel_runs_the_readme_python_example(installed):
    _real_data_or_skip()
    _, env, empty = installed
    block = re.search(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S).group(1)
    assert "runs/mine" in block and len(block.splitlines()) <= 12  # short, and it writes where it says
    out = run(["-c", block + "\nassert set(df.attack) == {'clean', 'deepfool'}\nprint('rows', len(results.metrics))"],
              empty, env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (empty / "runs" / "mine" / "leaderboard.csv").is_file()
    assert re.search(r"^rows [1-9]", out.stdout, re.M)


@pytest.mark.realdata
def test_installed_wheel_runs_the_quickstart_by_name(installed):
    """The shipped quickstart, named from an empty folder: found, checked in full (its presets from the
    package) and started; the time limit stops it after its first steps (exit 75, resumable)."""
    _real_data_or_skip()
    _, env, empty = installed
    out = run(["-m", "robustbench_leak.cli", "run", "quickstart", "--quiet", "--time-limit", "5"], empty, env)
    assert out.returncode == 75, out.stdout[-1500:] + out.stderr[-1500:]
    assert "time limit reached" in out.stderr
    assert (empty / "runs" / "quickstart" / "results.sqlite").is_file()


def test_ray_is_an_optional_extra(monkeypatch):
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("ray")]
    assert [d for d in project["optional-dependencies"]["ray"] if d.startswith("ray")]
    assert '".[test,ray]"' in (REPO / ".ci" / "run").read_text()  # CI still runs the Ray tests
    from robustbench_leak.run import driver

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ValueError) as err:
        driver.make_executor("ray", None, "mine.yaml", 10.0)
    assert str(err.value) == ("mine.yaml: executor: ray: Ray is not installed (an optional extra): pip install "
                              "'robustbench-leak[ray]', or use executor: local")
