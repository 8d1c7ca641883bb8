"""Attacks behind one ``Attack.run(model, x, y, device)`` interface: native engines and ART adapters.

The registry (``base``) imports no attack. This package imports every module in it, so each built-in
attack registers itself, and a new attack is its module plus its preset (``attacks/<name>.yaml``).
Plugins register through the entry-point group ``robustbench_leak.attacks`` (``plugins``).
"""

import importlib
import pkgutil

from .base import (Attack, AttackResult, attack_class, attack_origin, build_attack, find_attack, list_attacks,
                   list_engines, register_attack, undeclared_metrics)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Attack", "AttackResult", "attack_class", "attack_origin", "build_attack", "find_attack", "list_attacks",
           "list_engines", "register_attack", "undeclared_metrics"]
