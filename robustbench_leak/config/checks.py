"""Checks that need more than the schema: the registries (models, datasets), the data files themselves,
counts against the data, and the ranking column. All run before any work starts."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from ..options import did_you_mean, nearest_existing
from .errors import ConfigError, format_validation, short
from .schema import DatasetCfg, ResolvedAttack, RunConfig, TrainingCfg


def check_cache_dir(run: RunConfig, path: str) -> None:
    """``cache_dir`` must be a folder, or a path where one can be made."""
    if run.cache_dir is None:
        return
    from pathlib import Path

    probe = nearest_existing(Path(run.cache_dir).expanduser())
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{path}: cache_dir: {short(run.cache_dir, 200)}: {probe} is a file; a folder is expected")


def check_device(run: RunConfig, path: str) -> None:
    """The device exists, and every model's training settings that depend on it work on it (``precision:
    tf32`` or ``compile: cudagraph`` need CUDA), so they fail now rather than after other models trained."""
    from ..runtime import check_compile, resolve_device, resolve_precision

    try:
        device = resolve_device(run.device)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: device: {exc}") from None
    base = run.training.model_dump()
    for i, m in enumerate(run.models):
        settings = {**base, **m.training}
        where = (lambda key: f"models[{i}].training.{key}" if key in m.training else f"training.{key}")  # noqa: E731
        try:
            resolve_precision(settings.get("precision", "auto"), device)
        except ValueError as exc:
            raise ConfigError(f"{path}: {where('precision')}: {str(exc).split(': ', 1)[-1]} "
                              f"(device: {run.device})") from None
        try:
            check_compile(settings.get("compile", "none"), device)
        except ValueError as exc:
            raise ConfigError(f"{path}: {where('compile')}: {str(exc).split(': ', 1)[-1]} "
                              f"(device: {run.device})") from None


def check_models(run: RunConfig, path: str) -> None:
    from ..models import check_options
    from ..models.counting import build_for_counting

    labels = [m.name for m in run.models]
    for dup in sorted({n for n in labels if labels.count(n) > 1}):
        raise ConfigError(f"{path}: models: the name {short(dup)} is used twice; model names must be unique")
    for i, m in enumerate(run.models):
        try:
            check_options(m.arch, m.options)
        except KeyError as exc:
            raise ConfigError(f"{path}: models[{i}].arch: {exc.args[0]}") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: models[{i}].options.{exc}") from None
        try:
            TrainingCfg(**{**run.training.model_dump(), **m.training})
        except ValidationError as exc:
            raise ConfigError(format_validation(path, exc, TrainingCfg, prefix=f"models[{i}].training.")) from None
        except TypeError as exc:
            raise ConfigError(f"{path}: models[{i}].training: {exc}") from None
        epochs = {**run.training.model_dump(), **m.training}.get("epochs")
        if epochs == 0 and m.checkpoint is None and not run.allow_untrained:
            where = "training.epochs" if "epochs" not in m.training else f"models[{i}].training.epochs"
            raise ConfigError(f"{path}: {where}: 0 trains nothing, so {m.name!r} would be attacked with its random "
                              "initial weights; set epochs >= 1, give the model a checkpoint:, or set "
                              "allow_untrained: true (top level) to evaluate untrained models on purpose")
        try:  # build once (shapes only) so a bad option value fails now, not after other models trained
            built = build_for_counting(m.arch, 10, 1, m.options)
        except Exception as exc:  # noqa: BLE001 - any construction failure is a config error here
            raise ConfigError(f"{path}: models[{i}].options: cannot build {m.arch!r}: "
                              f"{short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 200)}") from None
        _check_fits_in_memory(built, trains=m.checkpoint is None, where=f"{path}: models[{i}].options", name=m.name)


def check_forward(run: RunConfig, datasets: list[Any], path: str) -> None:
    """Every model takes every dataset's images and returns one logit per class: one forward pass of two
    blank images in training mode, on PyTorch's meta device (shapes only, no memory). A value that only a
    forward pass checks (a timm ``drop_rate`` of 7) or an input the architecture cannot take (a channel or size
    mismatch) fails now, in one line, not in the training cell after other models trained."""
    import torch

    from ..models.counting import build_for_counting

    for i, m in enumerate(run.models):
        for j, data in enumerate(datasets):
            shape = tuple(int(n) for n in data.test_x.shape[1:])
            where = (f"{path}: models[{i}]: {m.name!r} fails a forward pass on the images of datasets[{j}] "
                     f"({data.name}, {'x'.join(map(str, shape))}, {data.num_classes} classes)")
            try:
                model = build_for_counting(m.arch, data.num_classes, data.in_chans, m.options)
                device = next((p.device for p in model.parameters()), torch.device("cpu"))
                if device.type != "meta":
                    continue  # built with real values: a forward pass would cost real time; the cell checks it
                model.train()
                with torch.device("meta"), torch.no_grad():
                    out = model(torch.zeros((2, *shape)))
            except NotImplementedError:  # an operation without a meta kernel: not checkable for free
                continue
            except Exception as exc:  # noqa: BLE001 - whatever the model raises is the reason it cannot run
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if "meta" in text.lower():
                    continue
                raise ConfigError(f"{where}: {text[:200]}") from None
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ConfigError(f"{where}: it returns {got} for 2 images; expected logits of shape "
                                  f"(2, {data.num_classes})")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return None


def _check_fits_in_memory(model: Any, trains: bool, where: str, name: str) -> None:
    """A model whose float32 weights (with gradients and optimizer state, when it trains) exceed this machine's
    memory fails now, in one line, not as an allocation error after other models trained."""
    memory = _physical_memory()
    params = sum(p.numel() for p in model.parameters())
    copies = 3 if trains else 1  # weights, gradients, momentum
    need = 4 * params * copies
    if memory and need > memory:
        what = "weights, gradients and optimizer state" if trains else "weights"
        raise ConfigError(f"{where}: {name!r} has {params:,} parameters: {need / 1e9:,.1f} GB of float32 {what}, "
                          f"more than this machine's {memory / 1e9:,.1f} GB of memory; choose a smaller width or depth")


def check_datasets(run: RunConfig, path: str) -> list[Any]:
    """Load every dataset once (headers, sizes and labels are checked by the loaders) and check the subset
    sizes against it; returns the loaded datasets in config order."""
    from ..data import DataMissingError, get_dataset_entry, load_dataset_cached

    loaded = []
    for i, ds in enumerate(run.datasets):
        key = f"{path}: datasets[{i}]"
        try:
            entry = get_dataset_entry(ds.name)
        except KeyError as exc:
            raise ConfigError(f"{key}.name: {exc.args[0]}") from None
        unknown = sorted(map(str, set(ds.loader_options) - set(entry.options())))
        if unknown:
            allowed = ["name", "train_subset", "test_subset", "subset_seed", "normalize", *entry.options()]
            raise ConfigError(f"{key}.{unknown[0][:60]}: unknown key for dataset {ds.name!r}"
                              f"{did_you_mean(unknown[0], allowed)}; "
                              f"allowed keys: {', '.join(allowed)}")
        try:
            entry.check_options(ds.loader_options)
        except ValueError as exc:
            raise ConfigError(f"{key}.{exc}") from None
        try:
            full = load_dataset_cached(dataset_spec(ds, subsets=False))
        except DataMissingError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        except (ValueError, TypeError, OSError) as exc:
            raise ConfigError(f"{key}: {short(str(exc), 300)}") from None
        for split, size in (("train", len(full.train_y)), ("test", len(full.test_y))):
            wanted = getattr(ds, f"{split}_subset")
            if wanted is not None and wanted > size:
                raise ConfigError(f"{key}.{split}_subset: {wanted} is more than the {size} {split} images of "
                                  f"{ds.name!r}; allowed: 1 to {size}, or leave it out for all")
        loaded.append(full.subset(ds.train_subset, ds.test_subset, ds.subset_seed))
    return loaded


def dataset_spec(ds: DatasetCfg, subsets: bool = True) -> dict[str, Any]:
    """What a cell needs to load a dataset; the key of the loader cache."""
    return {"name": ds.name, "options": ds.loader_options,
            "train_subset": ds.train_subset if subsets else None, "test_subset": ds.test_subset if subsets else None,
            "subset_seed": ds.subset_seed, "normalize": ds.normalize}


def check_attack_counts(run: RunConfig, attacks: list[ResolvedAttack], datasets: list[Any], path: str) -> None:
    """``n_samples`` (and a fitted attack's held-out split) must fit in every dataset's test set."""
    from ..attacks import attack_class

    for i, attack in enumerate(attacks):
        instance = attack_class(attack.kind, attack.engine).from_checked(attack.params)
        uses_fit = instance.needs_fit and getattr(instance, "uses_fit_split", lambda: True)()
        fits = attack.fit_samples if uses_fit else 0
        for ds, data in zip(run.datasets, datasets):
            try:
                instance.check_dataset(attack.params, ds.name)
                instance.check_classes(attack.params, data.num_classes)
            except ValueError as exc:
                raise ConfigError(f"{path}: attacks[{i}].params: {exc}") from None
            n_test = len(data.test_y)
            n = attack.n_samples or n_test
            if n > n_test:
                raise ConfigError(f"{path}: attacks[{i}].n_samples: {n} is more than the {n_test} test images of "
                                  f"{ds.name!r}; allowed: 1 to {n_test}")
            if fits and n + fits > n_test:
                raise ConfigError(f"{path}: attacks[{i}]: {attack.label!r} fits on the last {fits} test images, "
                                  f"which would overlap the {n} attacked ones ({n_test} test images of {ds.name!r}); "
                                  "lower n_samples or fit_samples")


def check_rank_by(run: RunConfig, attacks: list[ResolvedAttack], path: str) -> None:
    if run.rank_by is None:
        return
    from ..attacks import attack_class

    transform = ("shift_rows", "shift_cols", "rotation_deg")
    columns = ["params", "flops"]
    for a in attacks:
        cls = attack_class(a.kind, a.engine)
        columns += [f"{a.label}.{m}" for m in dict.fromkeys(("accuracy", *cls.metrics)) if m not in transform]
    if run.rank_by not in columns:
        raise ConfigError(f"{path}: rank_by: {short(run.rank_by)} is not a leaderboard column"
                          f"{did_you_mean(run.rank_by, columns)}; allowed: "
                          f"{', '.join(columns)}")
