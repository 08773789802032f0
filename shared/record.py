"""The report record: one socket call's view of a socket name, the one definition every service uses.

On the wire a record is a msgpack map (schema version 1):

| key     | type            | meaning                                                        |
|---------|-----------------|----------------------------------------------------------------|
| v       | int             | schema version, 1                                              |
| time    | float           | Unix time the call returned                                    |
| service | str             | the reporting service (echo, registry, client-lan, ...)        |
| host    | str             | the container's host name                                      |
| flow    | str or nil      | flow id shared by both ends; nil for a listener's own bind     |
| role    | str             | client or server                                               |
| proto   | str             | tcp, udp or unix                                               |
| family  | str             | ipv4, ipv6 or unix                                             |
| method  | str             | the call that produced the name (a seed method, or recvmsg)    |
| local   | name or nil     | this socket's own name, as Python returned it                  |
| remote  | name or nil     | the other end's name, as Python returned it                    |
| drops   | int             | records this reporter had dropped before this one              |
| extra   | map             | call-specific facts (the reflexive name echo sent back, ...)   |

A name is [host, port], [host, port, flowinfo, scope_id], or a path string (bytes for an
abstract Unix name): a tuple exactly as the socket call returned it, never cut to two items.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from shared.framing import unpack_map
from shared.names import Name, name_from_wire, name_to_wire

SCHEMA_VERSION = 1


class Method(StrEnum):
    """The socket call that produced a name: the seed chapter's seven, and recvmsg for arrival addresses."""

    ACCEPT = "accept"
    BIND = "bind"
    CONNECT = "connect"
    GETPEERNAME = "getpeername"
    GETSOCKNAME = "getsockname"
    RECVFROM = "recvfrom"
    SENDTO = "sendto"
    RECVMSG = "recvmsg"


SEED_METHODS = tuple(m for m in Method if m is not Method.RECVMSG)


class Role(StrEnum):
    """Which end of a flow a record speaks for."""

    CLIENT = "client"
    SERVER = "server"


class Proto(StrEnum):
    """The transport a record's socket carries."""

    TCP = "tcp"
    UDP = "udp"
    UNIX = "unix"

    @classmethod
    def of(cls, sock: socket.socket) -> Proto:
        """Say whether a socket carries tcp, udp or unix traffic."""
        if sock.family == socket.AF_UNIX:
            return cls.UNIX
        return cls.TCP if sock.type == socket.SOCK_STREAM else cls.UDP


class Family(StrEnum):
    """The address family of a record's socket, as the report spells it."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    UNIX = "unix"

    @classmethod
    def of(cls, family: int) -> Family:
        """Name a socket's address family the way the record spells it."""
        try:
            return FAMILY_BY_AF[family]
        except KeyError:
            raise ValueError(f"unsupported address family {family}") from None


FAMILY_BY_AF: dict[int, Family] = {
    socket.AF_INET: Family.IPV4,
    socket.AF_INET6: Family.IPV6,
    socket.AF_UNIX: Family.UNIX,
}


def new_flow_id() -> str:
    """A fresh flow id, carried in a flow's first bytes so both ends tag the same flow."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Observation:
    """What one socket call said about one socket's names."""

    service: str
    host: str
    flow: str | None
    role: Role
    proto: Proto
    family: Family
    method: Method
    local: Name | None = None
    remote: Name | None = None
    time: float = field(default_factory=time.time)
    drops: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def pack_observation(obs: Observation) -> bytes:
    """Encode a record for the wire and the store."""
    return msgpack.packb(
        {
            "v": SCHEMA_VERSION,
            "time": obs.time,
            "service": obs.service,
            "host": obs.host,
            "flow": obs.flow,
            "role": str(obs.role),
            "proto": str(obs.proto),
            "family": str(obs.family),
            "method": str(obs.method),
            "local": name_to_wire(obs.local),
            "remote": name_to_wire(obs.remote),
            "drops": obs.drops,
            "extra": obs.extra,
        },
        use_bin_type=True,
    )


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ValueError(f"record has no {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"record {key!r} has type {type(value).__name__}")
    return value


def unpack_observation(data: bytes) -> Observation:
    """Decode and check a record; anything malformed raises ValueError saying what is wrong."""
    obj = unpack_map(data, "record")
    version = _field(obj, "v", int)
    if version != SCHEMA_VERSION:
        raise ValueError(f"record schema version {version} is not {SCHEMA_VERSION}")
    role, proto = _field(obj, "role", str), _field(obj, "proto", str)
    family, method = _field(obj, "family", str), _field(obj, "method", str)
    if role not in Role.__members__.values():
        raise ValueError(f"record role {role!r} is unknown")
    if proto not in Proto.__members__.values():
        raise ValueError(f"record proto {proto!r} is unknown")
    if family not in Family.__members__.values():
        raise ValueError(f"record family {family!r} is unknown")
    if method not in Method.__members__.values():
        raise ValueError(f"record method {method!r} is unknown")
    flow = obj.get("flow")
    if flow is not None and not isinstance(flow, str):
        raise ValueError(f"record 'flow' has type {type(flow).__name__}")
    return Observation(
        service=_field(obj, "service", str),
        host=_field(obj, "host", str),
        flow=flow,
        role=Role(role),
        proto=Proto(proto),
        family=Family(family),
        method=Method(method),
        local=name_from_wire(obj.get("local")),
        remote=name_from_wire(obj.get("remote")),
        time=float(_field(obj, "time", (int, float))),
        drops=_field(obj, "drops", int),
        extra=_field(obj, "extra", dict),
    )
