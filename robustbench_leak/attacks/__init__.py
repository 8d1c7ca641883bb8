"""Attacks: ART adapters (the reference) behind one ``Attack.run(model, x, y, device)`` interface."""

from .base import (Attack, AttackResult, attack_class, build_attack, find_attack, list_attacks, list_engines,
                   register_attack)

__all__ = ["Attack", "AttackResult", "attack_class", "build_attack", "find_attack", "list_attacks", "list_engines",
           "register_attack"]
