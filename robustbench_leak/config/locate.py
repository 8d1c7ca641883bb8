"""Where configs and attack presets are found: the config's folder, then the working directory, then the
installed package (and the attack plugins' packages).

The repository's top-level ``attacks/`` and ``configs/`` are the sources; a wheel carries copies of them
in ``robustbench_leak/_shipped/`` (``setup.py`` copies them when the wheel is built). In a source
checkout (an editable install, or the package on ``PYTHONPATH``) the top-level folders serve directly.
"""

from __future__ import annotations

from pathlib import Path

from ..options import did_you_mean
from .errors import ConfigError, short

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SHIPPED = PACKAGE_DIR / "_shipped"
CHECKOUT = PACKAGE_DIR.parent  # the repository root when the package runs from a source checkout
SHIPPED_KINDS = ("attacks", "configs")


def _is_checkout(root: Path) -> bool:
    try:
        return 'name = "robustbench-leak"' in (root / "pyproject.toml").read_text()
    except OSError:
        return False


def shipped_dir(kind: str) -> Path | None:
    """The package's own ``attacks`` (presets) or ``configs`` folder: the wheel's copy, else the checkout's."""
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"shipped_dir: {kind!r}: expected one of {', '.join(SHIPPED_KINDS)}")
    if (SHIPPED / kind).is_dir():
        return SHIPPED / kind
    if _is_checkout(CHECKOUT) and (CHECKOUT / kind).is_dir():
        return CHECKOUT / kind
    return None


def shipped_configs() -> list[str]:
    folder = shipped_dir("configs")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def find_config(name: str | Path) -> Path:
    """A config by path, or by name (``quickstart``): ``NAME.yaml`` or ``configs/NAME.yaml`` in the working
    directory, else the package's shipped config of that name. ``ConfigError`` when a name matches none."""
    path = Path(name)
    text = str(name)
    if path.is_file() or "/" in text or "\\" in text or path.suffix in (".yaml", ".yml") or not text:
        return path
    shipped = shipped_dir("configs")
    candidates = [Path(f"{text}.yaml"), Path("configs") / f"{text}.yaml"]
    candidates += [shipped / f"{text}.yaml"] if shipped else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = shipped_configs()
    raise ConfigError(f"config {short(text)}: no file {text}, {text}.yaml or configs/{text}.yaml here, and no shipped "
                      f"config of that name{did_you_mean(text, names)}; shipped configs: {', '.join(names) or 'none'}")


def preset_dirs(config_path: Path, extra: list[str]) -> list[Path]:
    """Where a config's presets are looked up, in order: its ``attack_dirs``, ``attacks/`` in its folder and
    the folder above, ``attacks/`` in the working directory, the package's presets, the plugins' presets."""
    dirs = [(config_path.parent / d) for d in extra]
    dirs += [config_path.parent / "attacks", config_path.parent.parent / "attacks"]
    return _unique(dirs + default_preset_dirs())


def default_preset_dirs() -> list[Path]:
    """Where presets are found for any config: ``attacks/`` in the working directory, the package's
    presets, the attack plugins' presets."""
    from ..plugins import plugin_preset_dirs

    shipped = shipped_dir("attacks")
    return _unique([Path.cwd() / "attacks", *([shipped] if shipped else []), *plugin_preset_dirs()])


def _unique(dirs: list[Path]) -> list[Path]:
    unique: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in unique:
            unique.append(d)
    return unique
