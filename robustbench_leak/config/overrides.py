"""Command-line overrides of a loaded config (``rbleak run --seeds/--executor/--address/--connect-timeout``),
checked like the file's own keys and applied to a copy: a validated config is never changed in place."""

from __future__ import annotations

from typing import Sequence

from .address import check_address
from .schema import Config


def with_overrides(config: Config, seeds: Sequence[int] | None = None, executor: str | None = None,
                   address: str | None = None, connect_timeout: float | None = None) -> Config:
    """A copy of ``config`` with the given overrides; ``ValueError`` naming the flag for a bad value.

    ``seeds``: a subset of the config's seeds (a shard of its grid, merged later with ``--merge``);
    ``executor: local`` also drops the config's cluster address (run here, whatever cluster it names)."""
    update: dict = {}
    if executor is not None:
        if executor not in ("local", "ray"):
            raise ValueError(f"--executor: {executor!r}: expected local or ray")
        update["executor"] = executor
        if executor == "local":
            update["address"] = None
    if address:
        update["address"] = check_address(address, "--address")
    if connect_timeout is not None:
        if not 0 < connect_timeout <= 3600:
            raise ValueError(f"--connect-timeout: {connect_timeout!r}: must be in (0, 3600] seconds")
        update["connect_timeout"] = float(connect_timeout)
    if seeds is not None:
        unknown = [s for s in seeds if s not in config.run.seeds]
        if unknown:
            raise ValueError(f"--seeds: {unknown[0]} is not among {config.path}'s seeds {config.run.seeds}")
        update["seeds"] = list(dict.fromkeys(seeds))
    if not update:
        return config
    return config.model_copy(update={"run": config.run.model_copy(update=update)})
