"""One run at a time per output folder: an exclusive ``flock`` on ``<out>/.rbleak.lock``.

The lock belongs to the open file, so the kernel releases it when the process exits, however it exits
(a crash or ``kill -9`` included); a stale lock file is harmless. The file holds the holder's pid, for the
message a second run gets. ``flock`` is reliable on local filesystems; on NFS it depends on the mount.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".rbleak.lock"


class OutDirLocked(RuntimeError):
    """Another run holds the output folder; the message names the folder and the holder's pid."""


@contextmanager
def locked_out_dir(out: Path) -> Iterator[Path]:
    """Hold the lock of folder ``out`` (created if missing) for the ``with`` block; refuse at once
    (``OutDirLocked``) when another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutDirLocked(f"{out}: another rbleak run (pid {holder}) is writing this folder; wait for it to "
                               "finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
