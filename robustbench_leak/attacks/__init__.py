"""Attacks behind one ``Attack.run(model, x, y, device)`` interface: native engines and ART adapters.

The registry (``base``) imports no attack; this package imports its built-ins, so each registers itself
(timm's way). Plugins register through the entry-point group ``robustbench_leak.attacks`` (``plugins``).
"""

from .base import (Attack, AttackResult, attack_class, attack_origin, build_attack, find_attack, list_attacks,
                   list_engines, register_attack, undeclared_metrics)
from . import (art, art_any, clean, corruptions, native_ddn, native_deepfool, native_fmn,  # noqa: F401,E402
               native_minnorm, native_spatial, native_superdeepfool, pgd)

__all__ = ["Attack", "AttackResult", "attack_class", "attack_origin", "build_attack", "find_attack", "list_attacks",
           "list_engines", "register_attack", "undeclared_metrics"]
