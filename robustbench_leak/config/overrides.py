"""Command-line overrides of a loaded config (``rbleak run --seeds/--executor/--address/--connect-timeout``),
applied to a copy: a validated config is never changed in place. The command line's argument types check
each value (``cli.py``: choices, ``_address``, ``_number``); what needs the config is checked here."""

from __future__ import annotations

from typing import Sequence

from .schema import Config


def with_overrides(config: Config, seeds: Sequence[int] | None = None, executor: str | None = None,
                   address: str | None = None, connect_timeout: float | None = None) -> Config:
    """A copy of ``config`` with the given overrides; ``ValueError`` naming ``--seeds`` for a seed the config
    does not have.

    ``seeds``: a subset of the config's seeds (a shard of its grid, merged later with ``--merge``);
    ``executor: local`` also drops the config's cluster address (run here, whatever cluster it names)."""
    update: dict = {}
    if executor is not None:
        update["executor"] = executor
        if executor == "local":
            update["address"] = None
    if address:
        update["address"] = address
    if connect_timeout is not None:
        update["connect_timeout"] = float(connect_timeout)
    if seeds is not None:
        unknown = [s for s in seeds if s not in config.run.seeds]
        if unknown:
            raise ValueError(f"--seeds: {unknown[0]} is not among {config.path}'s seeds {config.run.seeds}")
        update["seeds"] = list(dict.fromkeys(seeds))
    if not update:
        return config
    return config.model_copy(update={"run": config.run.model_copy(update=update)})
