"""Where a command may write: output folders and files checked before any work starts.

A command writes only into a folder that is new, empty, or already an rbleak folder (it holds a results
store, or the marker file that ``mark_folder`` leaves in a leaderboard-only folder), and it overwrites a
single output file only when that file is one it wrote before. So no command modifies a file it did not
create.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .options import nearest_existing, short

MARKER = ".rbleak"


def is_rbleak_folder(folder: Path) -> bool:
    from .store import STORE_NAME, StoreError, check_store_file

    if (folder / MARKER).is_file():
        return True
    store = folder / STORE_NAME
    if not store.is_file():
        return False
    try:
        check_store_file(store)
    except StoreError:
        return False
    return True


def check_out_dir(out: Path, what: str) -> None:
    """Raise ``ValueError`` (one line) unless ``out`` is, or can be made, a writable folder of ours."""
    out = Path(out)
    try:
        _check_out_dir(out, what)
    except OSError as exc:  # a name the system refuses (too long, a bad component): not a usable path
        raise ValueError(f"{short(str(out), 160)}: {what}: not a usable path ({exc.strerror or exc})") from None


def _check_out_dir(out: Path, what: str) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: {what}: is a file; an output folder is expected")
    probe = nearest_existing(out)
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{out}: {what}: {probe} is a file, so no folder can be made under it")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: {what}: {probe} is not writable")
    from .store import STORE_NAME, check_store_file

    has_store = out.is_dir() and (out / STORE_NAME).is_file()
    if has_store:  # a damaged or another program's store says so, not "not ours"; once it passes, the folder is ours
        check_store_file(out / STORE_NAME)
    if not has_store and out.is_dir() \
            and any(p.name not in (MARKER, ".rbleak.lock", "weights") for p in out.iterdir()) \
            and not is_rbleak_folder(out):
        raise ValueError(f"{out}: {what}: the folder holds files that rbleak did not write; give a new or empty "
                         "folder, or an rbleak run folder")


def mark_folder(out: Path) -> None:
    """Mark a folder of outputs without a store (a merged leaderboard) as ours, for later rewrites."""
    from .store import STORE_NAME

    if not (out / STORE_NAME).exists() and not (out / MARKER).exists():
        (out / MARKER).write_text("robustbench-leak output folder: rbleak may rewrite the files it made here\n")


def check_out_file(path: Path, what: str, signature: str) -> None:
    """An existing file may be overwritten only when it holds ``signature`` (a line our outputs carry), or
    for JSON, a top-level ``signature`` key."""
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as exc:
        raise ValueError(f"{str(path)[:200]}: {what}: not a usable path ({exc.strerror or exc})") from None
    if not exists:
        return
    if not is_file:
        raise ValueError(f"{path}: {what}: not a file")
    try:
        text = path.read_text(errors="replace")[:1_000_000]
    except OSError as exc:
        raise ValueError(f"{path}: {what}: cannot read ({exc.strerror or exc})") from None
    ours = signature in text
    if path.suffix == ".json":
        try:
            ours = isinstance(json.loads(text), dict) and signature in json.loads(text)
        except ValueError:
            ours = False
    if not ours:
        raise ValueError(f"{path}: {what}: the file exists and was not written by rbleak; give another path")
