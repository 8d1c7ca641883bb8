"""Reading YAML files that a user hands us: bounded in size, aliases and nesting, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a run config or preset is a few KB; 1 MiB leaves room and bounds the parse
MAX_NODES = 100_000  # scalars, lists and mappings after alias expansion; configs have a few hundred
MAX_DEPTH = 32


def _expanded_size(root: yaml.Node, where: str) -> int:
    """Nodes the document has once every alias is expanded (aliases share one node, so a "billion laughs"
    file is small to compose but huge to expand); memoised, so this costs one pass over the composed graph."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if key in active:
            raise ConfigError(f"{where}: a YAML alias refers to itself")
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, _ in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue
                if k.value in seen:  # the repeat is named, at its own line
                    raise ConfigError(f"{where}: line {k.start_mark.line + 1}: the key {k.value[:60]!r} appears twice "
                                      "in one mapping; keep one")
                seen.add(k.value)
            total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v, depth + 1) for v in node.value)
        else:
            total = 1
        active.discard(key)
        sizes[key] = min(total, MAX_NODES + 1)
        return sizes[key]

    return size(root, 0)


def parse_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load`` after checking that the document, with its aliases expanded, has at most MAX_NODES
    nodes and MAX_DEPTH levels, so that a small file cannot expand into an exponentially large object."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None and _expanded_size(root, where) > MAX_NODES:
            raise ConfigError(f"{where}: more than {MAX_NODES:,} values once its YAML aliases (*name) are expanded; "
                              "refusing to expand them (write the values out, or use fewer aliases)")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where_in = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {where_in}{problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


def read_text_bounded(path: Path, what: str = "file", limit: int = MAX_CONFIG_BYTES, kind: str = "YAML") -> str:
    """A UTF-8 text file of at most ``limit`` bytes, or ``ConfigError`` naming it. Only regular files are read,
    and never more than ``limit`` + 1 bytes (a device such as /dev/zero, or a FIFO, would never end)."""
    import stat

    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a {kind} {what}")
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); a {kind} {what} is expected")
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise ConfigError(f"{path}: more than {limit:,} bytes; a {kind} {what} may be at most {limit:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          f"a {kind} {what} is expected") from None


def read_yaml(path: Path, what: str = "file") -> tuple[str, Any]:
    """The file's text and its parsed content."""
    text = read_text_bounded(path, what)
    return text, parse_yaml_text(text, str(path))
