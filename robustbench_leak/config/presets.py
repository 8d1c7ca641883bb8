"""Attack presets (``attacks/<name>.yaml``) and the attack entries of a config resolved against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..options import did_you_mean
from .errors import ConfigError, short
from .locate import preset_dirs  # noqa: F401  (importable here as before)
from .schema import DEFAULT_FIT_SAMPLES, AttackCfg, ResolvedAttack
from .yaml_io import read_yaml

PRESET_KEYS = ("attack", "engine", "n_samples", "fit_samples", "params", "description")


def load_preset(name: str, dirs: list[Path]) -> tuple[Path, dict[str, Any]]:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"preset {short(name)} must be a preset name (a file attacks/<name>.yaml), not a path")
    for d in dirs:
        path = d / f"{name}.yaml"
        if path.is_file():
            _, data = read_yaml(path, "attack preset")
            if not isinstance(data, dict) or "attack" not in data:
                raise ConfigError(f"{path}: an attack preset must be a mapping with an 'attack' key")
            unknown = sorted(map(str, set(data) - set(PRESET_KEYS)))
            if unknown:
                raise ConfigError(f"{path}: unknown key(s) {short(unknown)}{did_you_mean(unknown[0], PRESET_KEYS)}; "
                                  f"allowed: {', '.join(PRESET_KEYS)}")
            if data.get("params") is not None and not isinstance(data["params"], dict):
                raise ConfigError(f"{path}: params: must be a mapping, got {short(data['params'])}")
            for key in ("n_samples", "fit_samples"):
                value = data.get(key)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    raise ConfigError(f"{path}: {key}: must be an integer >= 1, got {short(value)}")
            return path, data
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"unknown attack preset {short(name)}{did_you_mean(name, known)}; known presets: "
                      f"{', '.join(known) or 'none'}")


def resolve_attack(i: int, entry: str | AttackCfg, dirs: list[Path], path: str,
                   engine_override: str | None = None) -> ResolvedAttack:
    from ..attacks import attack_class, find_attack

    cfg = AttackCfg(preset=entry) if isinstance(entry, str) else entry
    key = f"attacks[{i}]"
    try:
        preset_path, preset = load_preset(cfg.preset, dirs)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {key}.preset: {exc}") from None
    engine = cfg.engine or preset.get("engine")
    params = {**(preset.get("params") or {}), **cfg.params}
    note = None
    target = find_attack(preset["attack"], engine_override) if engine_override else None
    if target is not None and engine_override != engine:
        if preset["attack"] == "spatial" and params.get("mode", "global") != "global":
            raise ConfigError(f"{path}: {key}: --engine {engine_override}: ART's spatial attack has only the global "
                              f"mode, not {short(params['mode'])}; run this attack with its own engine")
        dropped = sorted(set(params) - set(target.defaults))
        params = {k: v for k, v in params.items() if k in target.defaults}
        if cfg.fit_samples is not None and not target.needs_fit:
            dropped.append("fit_samples (ART fits on the attacked images)")
            cfg = cfg.model_copy(update={"fit_samples": None})
        engine = engine_override  # attacks without that engine (e.g. clean) keep theirs
        if dropped:
            note = (f"attacks[{i}] ({cfg.label or cfg.preset}): engine {engine_override} does not take "
                    f"{', '.join(dropped)}; it runs its own semantics without them")
    try:
        cls = attack_class(preset["attack"], engine)
    except KeyError as exc:
        where = f"{key}.engine" if cfg.engine else f"{preset_path}: attack"
        raise ConfigError(f"{path}: {where}: {exc.args[0]}") from None
    try:
        params = cls.check_params(params)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}.params: {exc}") from None
    n = cfg.n_samples if cfg.n_samples is not None else preset.get("n_samples")
    fit_samples = None
    if cls.needs_fit:
        fit_samples = cfg.fit_samples or preset.get("fit_samples") or DEFAULT_FIT_SAMPLES
    elif cfg.fit_samples is not None:
        raise ConfigError(f"{path}: {key}.fit_samples: attack {cls.kind!r} (engine {cls.engine}) is not fitted "
                          "on a separate split; remove the key")
    return ResolvedAttack(label=cfg.label or cfg.preset, kind=cls.kind, engine=cls.engine, n_samples=n,
                          fit_samples=fit_samples, params=params, preset=cfg.preset, note=note)
