"""Plugins by entry point: other packages add attacks, models and datasets without editing this one.

A plugin names a module in one of the groups ``robustbench_leak.attacks``, ``robustbench_leak.models`` or
``robustbench_leak.datasets`` (``[project.entry-points."robustbench_leak.models"] mine = "mine.models"``);
importing that module registers its entries with the public decorators. A registry loads its group's
plugins on its first lookup, once per process. A plugin's attack presets are the ``*.yaml`` files of a
``presets/`` folder in the package of its module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

GROUPS = ("attacks", "models", "datasets")
BUILT_IN = "built-in"


class PluginError(ImportError, ValueError):
    """A plugin's module failed to import (the message is one line naming the plugin)."""


@dataclass(frozen=True)
class Plugin:
    group: str  # attacks | models | datasets
    name: str  # the entry point's name
    module: str
    dist: str  # the distribution that declares it ('' when unknown)

    @property
    def label(self) -> str:
        return f"plugin {self.dist or self.name} ({self.module})"


_LOADED: dict[str, list[Plugin]] = {}
_ORIGIN: dict[str, Plugin] = {}  # module name -> the plugin whose import registered it


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=f"robustbench_leak.{group}"), key=lambda ep: ep.name)


def load_plugins(group: str) -> list[Plugin]:
    """Import every plugin module of ``group`` (once per process); ``PluginError`` names one that fails."""
    if group in _LOADED:
        return _LOADED[group]
    loaded: list[Plugin] = []
    _LOADED[group] = loaded  # a plugin that looks itself up while importing does not recurse
    for ep in _entry_points(group):
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        plugin = Plugin(group, ep.name, ep.value.split(":")[0].strip(), dist)
        _ORIGIN[plugin.module] = plugin
        try:
            importlib.import_module(plugin.module)
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code becomes one line naming it
            del _LOADED[group]
            detail = str(exc).splitlines()[0] if str(exc).strip() else ""
            raise PluginError(f"{plugin.label}, entry point robustbench_leak.{group} = {ep.value}: failed to "
                              f"import: {type(exc).__name__}{': ' + detail if detail else ''} (uninstall the "
                              f"plugin or fix it)") from None
        loaded.append(plugin)
    return loaded


def origin(module: str) -> str:
    """Where an entry registered by code in ``module`` comes from: built-in, a plugin, or a module."""
    if module == "robustbench_leak" or module.startswith("robustbench_leak."):
        return BUILT_IN
    for name, plugin in _ORIGIN.items():
        if module == name or module.startswith(name + "."):
            return plugin.label
    return f"module {module}"


def plugin_preset_dirs() -> list[Path]:
    """The ``presets/`` folders of the attack plugins' packages (the attack plugins load first)."""
    dirs = []
    for plugin in load_plugins("attacks"):
        module = sys.modules.get(plugin.module)
        package = plugin.module if hasattr(module, "__path__") else plugin.module.rpartition(".")[0]
        spec = importlib.util.find_spec(package) if package else None
        for location in (spec.submodule_search_locations or []) if spec else []:
            if (Path(location) / "presets").is_dir():
                dirs.append(Path(location) / "presets")
    return dirs
