"""Run configs: YAML, validated in full before any work starts.

Every error names the file, the key (as a dotted path such as ``models[1].options.width``) and what
is allowed there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .train import TrainSettings

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A config that cannot be run; the message names file, key and what is expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingCfg(_Strict):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-3, ge=0)
    nesterov: bool = False
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(128, ge=1)
    schedule: Literal["none", "step", "cosine"] = "cosine"
    milestones: list[int] = []
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    augment: Literal["none", "flip_crop"] = "none"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class DatasetCfg(BaseModel):
    """``name`` plus subset options; any other key is an option of that dataset's loader (e.g. root)."""

    model_config = ConfigDict(extra="allow")
    name: str
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    subset_seed: int = 0
    normalize: bool = True

    @property
    def loader_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def label(self) -> str:
        return self.name


class ModelCfg(_Strict):
    name: str  # the label shown in leaderboards
    arch: str  # registered model name or timm:<name>
    options: dict[str, Any] = {}
    training: dict[str, Any] = {}  # overrides of the run's training settings for this model
    checkpoint: str | None = None  # load these weights instead of training (relative to the config's folder)
    match_params: str | None = None  # another entry's name: pick width_multiplier to match its parameter count
    match_tolerance: float = Field(0.02, gt=0, lt=1)  # relative; integer channel counts limit narrow nets
    _match: dict[str, Any] | None = PrivateAttr(None)  # what match_params resolved to (set by load_config)

    @property
    def match_report(self) -> dict[str, Any] | None:
        return self._match


class AttackCfg(_Strict):
    preset: str  # a file attacks/<preset>.yaml
    label: str | None = None
    engine: str | None = None
    n_samples: int | None = Field(None, ge=1)
    fit_samples: int | None = Field(None, ge=1)  # for attacks fitted on a held-out split (global spatial)
    params: dict[str, Any] = {}


class RunConfig(_Strict):
    name: str
    description: str = ""
    device: str = "auto"
    seeds: list[int] = Field([0], min_length=1)
    datasets: list[DatasetCfg] = Field(min_length=1)
    models: list[ModelCfg] = Field(min_length=1)
    attacks: list[str | AttackCfg] = Field(["clean"], min_length=1)
    training: TrainingCfg = TrainingCfg()
    cache_dir: str | None = None
    attack_dirs: list[str] = []
    rank_by: str | None = None  # a leaderboard column such as deepfool.rho_mean
    executor: Literal["local", "ray"] = "local"  # where cells run; results do not depend on it
    address: str | None = Field(None, min_length=1)  # executor ray: a cluster to join (else RAY_ADDRESS, else local)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v.startswith("cuda")):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v


class ResolvedAttack(BaseModel):
    """An attack entry with its preset merged in: what a grid cell runs."""

    label: str
    kind: str
    engine: str
    n_samples: int | None
    fit_samples: int | None = None
    params: dict[str, Any]
    preset: str
    note: str | None = None  # what an engine switch changed, shown to the user

    def spec(self) -> dict[str, Any]:
        from .attacks import attack_class

        neutral = attack_class(self.kind, self.engine).key_neutral
        params = {k: v for k, v in self.params.items() if k not in neutral or v != neutral[k]}
        spec = {"kind": self.kind, "engine": self.engine, "n_samples": self.n_samples, "params": params}
        if self.fit_samples is not None:  # only attacks that fit carry it, so other cells keep their keys
            spec["fit_samples"] = self.fit_samples
        return spec


class Config(BaseModel):
    """A validated run config plus everything resolved from it."""

    path: str
    text: str
    run: RunConfig
    attacks: list[ResolvedAttack]

    @property
    def name(self) -> str:
        return self.run.name

    def config_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def training_for(self, model: ModelCfg) -> TrainSettings:
        merged = {**self.run.training.model_dump(), **model.training}
        merged["milestones"] = tuple(merged["milestones"])
        return TrainSettings(**merged)


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "AttackCfg") or "[" in str(part):  # union branch names pydantic adds
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            current = {"AttackCfg": AttackCfg}.get(part, current)
            continue
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = None
        for c in candidates:
            for inner in [c, *getattr(c, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nxt = inner
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format_validation(path: str, exc: ValidationError) -> str:
    lines = []
    seen = set()
    for err in exc.errors():
        loc = err["loc"]
        key = _loc(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(RunConfig, loc)
            msg = f"unknown key '{loc[-1]}'" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = f"{err['msg']} (got {err.get('input')!r})"
        if (key, msg) not in seen:
            seen.add((key, msg))
            lines.append(f"{path}: {key}: {msg}")
    return "\n".join(lines)


def preset_dirs(config_path: Path, extra: list[str]) -> list[Path]:
    dirs = [(config_path.parent / d) for d in extra]
    dirs += [config_path.parent.parent / "attacks", Path.cwd() / "attacks", PACKAGE_ROOT / "attacks"]
    unique: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in unique:
            unique.append(d)
    return unique


def load_preset(name: str, dirs: list[Path]) -> tuple[Path, dict[str, Any]]:
    for d in dirs:
        path = d / f"{name}.yaml"
        if path.is_file():
            data = _read_yaml(path)
            if not isinstance(data, dict) or "attack" not in data:
                raise ConfigError(f"{path}: an attack preset must be a mapping with an 'attack' key")
            unknown = set(data) - {"attack", "engine", "n_samples", "fit_samples", "params", "description"}
            if unknown:
                raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: attack, engine, "
                                  "n_samples, fit_samples, params, description")
            return path, data
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"unknown attack preset {name!r}; known presets: {', '.join(known) or 'none'} "
                      f"(looked in {', '.join(map(str, dirs))})")


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from exc


def _resolve_attack(i: int, entry: str | AttackCfg, dirs: list[Path], path: str,
                    engine_override: str | None = None) -> ResolvedAttack:
    from .attacks import attack_class
    from .attacks.base import _ATTACKS

    cfg = AttackCfg(preset=entry) if isinstance(entry, str) else entry
    key = f"attacks[{i}]"
    try:
        preset_path, preset = load_preset(cfg.preset, dirs)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {key}.preset: {exc}") from exc
    engine = cfg.engine or preset.get("engine")
    params = {**(preset.get("params") or {}), **cfg.params}
    note = None
    if engine_override and (preset["attack"], engine_override) in _ATTACKS and engine_override != engine:
        target = _ATTACKS[(preset["attack"], engine_override)]
        if preset["attack"] == "spatial" and params.get("mode", "global") != "global":
            raise ConfigError(f"{path}: {key}: --engine {engine_override}: ART's spatial attack has only the global "
                              f"mode, not {params['mode']!r}; run this attack with its own engine")
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
        raise ConfigError(f"{path}: {where}: {exc.args[0]}") from exc
    try:
        params = cls.check_params(params)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}.params: {exc}") from exc
    n = cfg.n_samples if cfg.n_samples is not None else preset.get("n_samples")
    fit_samples = None
    if cls.needs_fit:
        from .runner import DEFAULT_FIT_SAMPLES

        fit_samples = cfg.fit_samples or preset.get("fit_samples") or DEFAULT_FIT_SAMPLES
    elif cfg.fit_samples is not None:
        raise ConfigError(f"{path}: {key}.fit_samples: attack {cls.kind!r} (engine {cls.engine}) is not fitted "
                          "on a separate split; remove the key")
    return ResolvedAttack(label=cfg.label or cfg.preset, kind=cls.kind, engine=cls.engine, n_samples=n,
                          fit_samples=fit_samples, params=params, preset=cfg.preset, note=note)


def _check_semantics(run: RunConfig, path: str) -> None:
    from .data import get_dataset_entry
    from .models import check_options
    from .models.stats import build_for_counting
    from .train import resolve_device

    try:
        resolve_device(run.device)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: device: {exc}") from exc
    labels = [m.name for m in run.models]
    for dup in sorted({n for n in labels if labels.count(n) > 1}):
        raise ConfigError(f"{path}: models: the name {dup!r} is used twice; model names must be unique")
    for i, ds in enumerate(run.datasets):
        try:
            entry = get_dataset_entry(ds.name)
        except KeyError as exc:
            raise ConfigError(f"{path}: datasets[{i}].name: {exc.args[0]}") from exc
        unknown = sorted(set(ds.loader_options) - set(entry.options()))
        if unknown:
            allowed = ["name", "train_subset", "test_subset", "subset_seed", "normalize", *entry.options()]
            raise ConfigError(f"{path}: datasets[{i}].{unknown[0]}: unknown key for dataset {ds.name!r}; "
                              f"allowed keys: {', '.join(allowed)}")
    for i, m in enumerate(run.models):
        try:
            check_options(m.arch, m.options)
        except KeyError as exc:
            raise ConfigError(f"{path}: models[{i}].arch: {exc.args[0]}") from exc
        except ValueError as exc:
            raise ConfigError(f"{path}: models[{i}].options: {exc}") from exc
        try:
            TrainingCfg(**{**run.training.model_dump(), **m.training})
        except ValidationError as exc:
            raise ConfigError(_format_validation(path, exc).replace(f"{path}: ", f"{path}: models[{i}].training.")) from exc
        try:  # build once (shapes only) so a bad option value fails now, not after other models trained
            build_for_counting(m.arch, 10, 1, m.options)
        except Exception as exc:  # noqa: BLE001 - any construction failure is a config error here
            raise ConfigError(f"{path}: models[{i}].options: cannot build {m.arch!r}: {exc}") from exc


def _resolve_models(run: RunConfig, path: Path) -> None:
    """``checkpoint:`` paths (must exist, keys and shapes must fit) and ``match_params:`` widths."""
    from .checkpoints import CheckpointError
    from .data import dataset_shape
    from .models import Normalized
    from .models.checkpoint_io import check_checkpoint
    from .models.match import match_width, params_of
    from .models.stats import build_for_counting

    first = run.datasets[0]
    by_name = {m.name: m for m in run.models}
    for i, m in enumerate(run.models):
        if m.match_params is None:
            continue
        in_chans, num_classes, _ = dataset_shape(first.name, first.loader_options)
        key = f"{path}: models[{i}]"
        target = by_name.get(m.match_params)
        if target is None or target is m:
            others = ", ".join(repr(n) for n in by_name if n != m.name) or "none"
            raise ConfigError(f"{key}.match_params: unknown model {m.match_params!r}; it must name another entry "
                              f"of this config's models: {others}")
        if target.match_params is not None:
            raise ConfigError(f"{key}.match_params: {target.name!r} is itself parameter-matched; match to a model "
                              "with a fixed width")
        if "width_multiplier" in m.options:
            raise ConfigError(f"{key}.options.width_multiplier: set by match_params; remove one of the two")
        target_params = params_of(target.arch, target.options, in_chans, num_classes)
        try:
            wm, params = match_width(m.arch, m.options, target_params, in_chans, num_classes, m.match_tolerance)
        except ValueError as exc:
            raise ConfigError(f"{key}.match_params: {exc}") from exc
        m.options = {**m.options, "width_multiplier": wm}
        m._match = {"matched_to": target.name, "target_params": target_params, "params": params,
                    "tolerance": m.match_tolerance,
                    "width_multiplier": wm, "input": [in_chans, num_classes], "dataset": first.name}
    for i, m in enumerate(run.models):
        if m.checkpoint is None:
            continue
        file = (path.parent / Path(m.checkpoint).expanduser()).resolve()
        if not file.is_file():
            raise ConfigError(f"{path}: models[{i}].checkpoint: file not found: {file} (a relative path is read "
                              "from the config's folder)")
        m.checkpoint = str(file)
        shapes = {dataset_shape(ds.name, ds.loader_options)[:2] for ds in run.datasets}
        for c, n in sorted(shapes):
            net = build_for_counting(m.arch, n, c, m.options)
            try:
                check_checkpoint(file, Normalized(net, (0.0,) * c, (1.0,) * c))
            except CheckpointError as exc:
                raise ConfigError(f"{path}: models[{i}].checkpoint: {exc}") from exc


def load_config(path: str | Path, engine: str | None = None) -> Config:
    """Read, validate and resolve a run config; ``ConfigError`` on any problem.

    ``engine`` switches every attack that has such an engine (e.g. ``art``) to it."""
    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config must be a YAML mapping, got {type(data).__name__}")
    try:
        run = RunConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(str(path), exc)) from exc
    _check_semantics(run, str(path))
    _resolve_models(run, path)
    dirs = preset_dirs(path, run.attack_dirs)
    if engine is not None:
        from .attacks.base import _ATTACKS, _ensure_loaded

        _ensure_loaded()
        engines = sorted({e for _, e in _ATTACKS})
        if engine not in engines:
            raise ConfigError(f"--engine {engine!r}: unknown engine; known: {', '.join(engines)}")
    attacks = [_resolve_attack(i, a, dirs, str(path), engine) for i, a in enumerate(run.attacks)]
    labels = [a.label for a in attacks]
    for dup in sorted({n for n in labels if labels.count(n) > 1}):
        raise ConfigError(f"{path}: attacks: the label {dup!r} is used twice; give one a 'label:'")
    return Config(path=str(path), text=path.read_text(), run=run, attacks=attacks)


def canonical_hash(obj: Any) -> str:
    """Stable short hash of JSON-able data (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]
