"""Run configs: YAML, validated in full before any work starts.

One concern per module: ``yaml_io`` (bounded, safe parsing), ``schema`` (keys, types, ranges),
``errors`` (one-line messages), ``presets`` (attack presets), ``checks`` (registries, data, counts),
``resolve_models`` (parameter matching, checkpoint files). Every error names the file, the key (a dotted
path such as ``models[1].options.width``), the value and what is allowed there.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .checks import (
    check_attack_counts,
    check_cache_dir,
    check_datasets,
    check_device,
    check_forward,
    check_models,
    check_rank_by,
    dataset_spec,
)
from .errors import ConfigError, format_validation, short
from .locate import CHECKOUT as PACKAGE_ROOT
from .locate import default_preset_dirs, find_config, preset_dirs, shipped_configs, shipped_dir
from .presets import load_preset, resolve_attack
from .resolve_models import resolve_checkpoints, resolve_matches
from .schema import (
    DEFAULT_FIT_SAMPLES,
    AttackCfg,
    Config,
    DatasetCfg,
    ModelCfg,
    ResolvedAttack,
    RunConfig,
    TrainingCfg,
    canonical_hash,
)
from .yaml_io import MAX_CONFIG_BYTES, parse_yaml_text, read_yaml

__all__ = ["ConfigError", "Config", "RunConfig", "DatasetCfg", "ModelCfg", "AttackCfg", "TrainingCfg",
           "ResolvedAttack", "DEFAULT_FIT_SAMPLES", "PACKAGE_ROOT", "MAX_CONFIG_BYTES", "canonical_hash",
           "dataset_spec", "default_preset_dirs", "find_config", "load_config", "load_preset", "parse_yaml_text", "preset_dirs", "read_yaml",
           "shipped_configs", "shipped_dir"]


def load_config(path: str | Path, engine: str | None = None) -> Config:
    """Read, validate and resolve a run config (a path, or a name such as ``quickstart``: ``find_config``);
    ``ConfigError`` on any problem.

    ``engine`` switches every attack that has such an engine (e.g. ``art``) to it."""
    path = find_config(path)
    text, data = read_yaml(path, "run config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a YAML mapping, got {type(data).__name__}")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{path}: top-level key {short(bad_keys[0])}: keys must be strings")
    try:
        run = RunConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation(str(path), exc, RunConfig)) from None
    check_device(run, str(path))
    check_cache_dir(run, str(path))
    check_models(run, str(path))
    datasets = check_datasets(run, str(path))
    check_forward(run, datasets, str(path))
    resolve_matches(run, path)
    resolve_checkpoints(run, path)
    dirs = preset_dirs(path, run.attack_dirs)
    if engine is not None:
        from ..attacks import list_engines

        engines = list_engines()
        if engine not in engines:
            raise ConfigError(f"--engine {short(engine)}: unknown engine; known: {', '.join(engines)}")
    attacks = [resolve_attack(i, a, dirs, str(path), engine) for i, a in enumerate(run.attacks)]
    labels = [a.label for a in attacks]
    for dup in sorted({n for n in labels if labels.count(n) > 1}):
        raise ConfigError(f"{path}: attacks: the label {short(dup)} is used twice; give one a 'label:'")
    check_attack_counts(run, attacks, datasets, str(path))
    check_rank_by(run, attacks, str(path))
    return Config(path=str(path), text=text, run=run, attacks=attacks)
