"""Model entries that need more than their options: ``match_params`` widths and ``checkpoint:`` files."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, short
from .schema import RunConfig


def resolve_matches(run: RunConfig, path: Path) -> None:
    """Pick the ``width_multiplier`` of every ``match_params`` entry."""
    from ..data import dataset_shape
    from ..models.match import match_width, params_of

    first = run.datasets[0]
    by_name = {m.name: m for m in run.models}
    for i, m in enumerate(run.models):
        if m.match_params is None:
            continue
        in_chans, num_classes, _ = dataset_shape(first.name, first.loader_options)
        key = f"{path}: models[{i}]"
        others = ", ".join(repr(n) for n in by_name if n != m.name) or "none"
        if m.match_params == m.name:
            raise ConfigError(f"{key}.match_params: {short(m.match_params)} is this entry itself; it must name "
                              f"another entry of this config's models: {others}")
        target = by_name.get(m.match_params)
        if target is None:
            raise ConfigError(f"{key}.match_params: unknown model {short(m.match_params)}; it must name another "
                              f"entry of this config's models: {others}")
        if target.match_params is not None:
            raise ConfigError(f"{key}.match_params: {target.name!r} is itself parameter-matched; match to a model "
                              "with a fixed width")
        if "width_multiplier" in m.options:
            raise ConfigError(f"{key}.options.width_multiplier: set by match_params; remove one of the two")
        target_params = params_of(target.arch, target.options, in_chans, num_classes)
        try:
            wm, params = match_width(m.arch, m.options, target_params, in_chans, num_classes, m.match_tolerance)
        except ValueError as exc:
            raise ConfigError(f"{key}.match_params: {exc}") from None
        m.options = {**m.options, "width_multiplier": wm}
        m._match = {"matched_to": target.name, "target_params": target_params, "params": params,
                    "tolerance": m.match_tolerance,
                    "width_multiplier": wm, "input": [in_chans, num_classes], "dataset": first.name}


def resolve_checkpoints(run: RunConfig, path: Path) -> None:
    """``checkpoint:`` files must exist, and their keys and shapes must fit the model on every dataset."""
    from ..data import dataset_shape
    from ..models import Normalized
    from ..models.checkpoints import CheckpointError, check_checkpoint
    from ..models.counting import build_for_counting

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
                raise ConfigError(f"{path}: models[{i}].checkpoint: {exc}") from None
