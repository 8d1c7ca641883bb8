"""Where a command may write: output folders checked before any work starts."""

from __future__ import annotations

import os
from pathlib import Path


def check_out_dir(out: Path, what: str) -> None:
    """Raise ``ValueError`` (one line) unless ``out`` is, or can be made, a writable folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: {what}: is a file; an output folder is expected")
    probe = out
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{out}: {what}: {probe} is a file, so no folder can be made under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: {what}: {probe} is not writable")
