"""Ray cluster addresses as a config or ``--address`` gives them, checked without Ray or the network."""

from __future__ import annotations

import ipaddress
import re

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_address(address: str, where: str = "--address") -> str:
    """``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (HOST a name, an IPv4 address or a bracketed IPv6 one,
    PORT 1-65535); ``ValueError`` naming ``where`` otherwise. Neither imports Ray nor touches the network."""
    prefix = f"{where}: " if where else ""
    text = address.strip() if isinstance(address, str) else ""
    expected = "expected HOST:PORT, ray://HOST:PORT or auto, e.g. 10.0.0.5:6379"
    if text == "auto":
        return text
    body = text.removeprefix("ray://")
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/\s]+):(\d{1,5})", body)
    if not m:
        raise ValueError(f"{prefix}{address!r:.80}: not a Ray address; {expected}")
    host, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise ValueError(f"{prefix}{address!r:.80}: port {port} is out of range 1-65535")
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        elif re.fullmatch(r"[\d.]+", host):
            ipaddress.IPv4Address(host)  # all digits and dots: must be an IPv4 address (999.1.1.1 is not)
        elif len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
            raise ValueError(host)
    except ValueError:
        raise ValueError(f"{prefix}{address!r:.80}: {host!r:.60} is not a valid host name or IP address; "
                         f"{expected}") from None
    return text
