"""Socket names as Python returns them: (host, port), (host, port, flowinfo, scope_id), or a path.

A name is kept exactly as the socket call returned it; only `endpoint()` folds it, and only to
compare two names that may have been seen through different address families.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import struct
import unicodedata
from typing import Any, TypeAlias

Name: TypeAlias = tuple[Any, ...] | str | bytes
Endpoint: TypeAlias = tuple[str, int] | str | bytes


def address_family(host: str) -> socket.AddressFamily:
    """The socket family a host string needs: AF_INET6 for an IPv6 literal, else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def name_to_wire(name: Name | None) -> Any:
    """Turn a name into what msgpack carries: tuples become lists, paths stay strings."""
    if name is None or isinstance(name, str | bytes):
        return name
    return list(name)


def name_from_wire(obj: Any) -> Name | None:
    """Check a name read from the wire and give it back as Python returned it."""
    if obj is None or isinstance(obj, str | bytes):
        return obj
    if not isinstance(obj, list | tuple):
        raise ValueError(f"name must be a list, string or nil, not {type(obj).__name__}")
    if len(obj) not in (2, 4):
        raise ValueError(f"name must have 2 or 4 items, not {len(obj)}")
    if not isinstance(obj[0], str):
        raise ValueError("name host must be a string")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in obj[1:]):
        raise ValueError("name port, flowinfo and scope_id must be integers")
    if not 0 <= obj[1] <= 65535:
        raise ValueError(f"name port {obj[1]} out of range")
    return tuple(obj)


@functools.lru_cache(maxsize=4096)
def unmap_host(host: str) -> str:
    """Give the IPv4 address inside an IPv4-mapped IPv6 address, else the host unchanged (cached: a report
    folds every flow's names, and a stack has few hosts)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def endpoint(name: Name) -> Endpoint:
    """Fold a name to (host, port) with IPv4-mapped hosts unmapped, so two views can be compared."""
    return folded(name)


@functools.lru_cache(maxsize=16384)
def folded(name: Name) -> Endpoint:
    """endpoint(), cached: joining a flow folds each of its names several times."""
    if isinstance(name, str | bytes):
        return name
    return (unmap_host(name[0]), int(name[1]))


def format_name(name: Name | None) -> str:
    """Write a name for people: 192.0.2.1:80, [2001:db8::1]:80, a path, or @abstract."""
    if name is None:
        return "-"
    if isinstance(name, bytes):
        return "@" + name.lstrip(b"\0").decode(errors="replace")
    if isinstance(name, str):
        return name or "(unnamed)"
    host, port = name[0], name[1]
    if ":" in host:
        scope = f"%{name[3]}" if len(name) == 4 and name[3] else ""
        return f"[{host}{scope}]:{port}"
    return f"{host}:{port}"


def json_name(obj: object) -> str:
    """Let json.dumps write the one name type JSON lacks: an abstract Unix name (bytes) as @name."""
    if isinstance(obj, bytes):
        return format_name(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """JSON that every reader can parse: abstract Unix names as @name, and never NaN or Infinity."""
    return json.dumps(obj, default=json_name, allow_nan=False, indent=indent)


def printable(text: str) -> str:
    """Text safe for a terminal: control and format characters (escape sequences, newlines) shown as \\xNN."""
    if text.isprintable():
        return text
    return "".join(ch if shown_as_is(ch) else ch.encode("unicode_escape").decode() for ch in text)


def shown_as_is(ch: str) -> bool:
    """Whether a terminal shows a character as itself: printable, or a space of any width."""
    return ch.isprintable() or unicodedata.category(ch) == "Zs"


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Read host:port or [v6]:port as given in configuration."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"missing ] in {text!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected :port after ] in {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"missing port in {text!r}")
        return host, default_port
    return host, int(port_text)


IN6_PKTINFO = struct.Struct("16sI")


def create_dual_stack_socket(kind: int, port: int) -> socket.socket:
    """Bind ('::', port) with IPV6_V6ONLY off, so IPv4 peers appear as ::ffff: names."""
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    return sock


def enable_pktinfo(sock: socket.socket) -> None:
    """Ask the kernel to tell, for every datagram, the address it arrived at."""
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)


def pktinfo_space() -> int:
    """Ancillary buffer size for one IPV6_PKTINFO message."""
    return socket.CMSG_SPACE(IN6_PKTINFO.size)


def arrival_address(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """Read the destination address from recvmsg's IPV6_PKTINFO (IPv4 arrives ::ffff:-mapped)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= IN6_PKTINFO.size:
            addr, _ifindex = IN6_PKTINFO.unpack_from(data)
            return socket.inet_ntop(socket.AF_INET6, addr)
    return None


def route_source(host: str, port: int) -> str:
    """Ask the kernel which source address its routing table picks for a destination."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])
