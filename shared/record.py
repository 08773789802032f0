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

import math
import socket
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from shared.fields import member, optional, typed
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

    def to_wire(self) -> dict[str, Any]:
        """The record as a msgpack map: what the store keeps and the "records" query answers."""
        return {
            "v": SCHEMA_VERSION,
            "time": self.time,
            "service": self.service,
            "host": self.host,
            "flow": self.flow,
            "role": str(self.role),
            "proto": str(self.proto),
            "family": str(self.family),
            "method": str(self.method),
            "local": name_to_wire(self.local),
            "remote": name_to_wire(self.remote),
            "drops": self.drops,
            "extra": self.extra,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Observation:
        """Check and read a record's map; anything malformed raises ValueError saying what is wrong."""
        version = typed(obj, "v", int, "record")
        if version != SCHEMA_VERSION:
            raise ValueError(f"record schema version {version} is not {SCHEMA_VERSION}")
        moment = float(typed(obj, "time", (int, float), "record"))
        if not math.isfinite(moment):
            raise ValueError(f"record 'time' {moment} is not finite")
        return cls(
            service=typed(obj, "service", str, "record"),
            host=typed(obj, "host", str, "record"),
            flow=optional(obj, "flow", str, "record"),
            role=member(obj, "role", Role, "record"),
            proto=member(obj, "proto", Proto, "record"),
            family=member(obj, "family", Family, "record"),
            method=member(obj, "method", Method, "record"),
            local=name_from_wire(obj.get("local")),
            remote=name_from_wire(obj.get("remote")),
            time=moment,
            drops=typed(obj, "drops", int, "record"),
            extra=typed(obj, "extra", dict, "record"),
        )


def pack_observation(obs: Observation) -> bytes:
    """Encode a record for the wire and the store."""
    return msgpack.packb(obs.to_wire(), use_bin_type=True)


def unpack_observation(data: bytes) -> Observation:
    """Decode and check a record; anything malformed raises ValueError saying what is wrong."""
    return Observation.from_wire(unpack_map(data, "record"))
