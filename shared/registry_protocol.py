"""The registry's wire protocol and its client API: the one module both sides of it import.

Requests and replies are length-prefixed msgpack frames (shared.framing) on one TCP connection:
  {"op": "register", "flow", "name", "reported", "ports"} -> {"ok": true, "observed"}
  {"op": "lookup", "flow", "name", "reported"}            -> {"ok": true, "registrations": [...]}
  {"op": "list", "flow", "reported"}                      -> {"ok": true, "registrations": [...]}
  {"op": "stats", "flow", "reported"}                     -> {"ok": true, "stats": {...}}
A request the registry cannot serve gets {"ok": false, "error"}; a stream that is not frames is closed.
Every request carries the flow id the client reports its end under, and the name it connected from
(`reported`), so the registry can set the name it observes beside it.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.framing import pack_frame, recv_frame
from shared.names import Name, name_from_wire, name_to_wire, unmap_host
from shared.record import Family, Role, new_flow_id
from shared.reporter import Reporter

log = logging.getLogger(__name__)

DEFAULT_PORT = 5300


class RegistryOp(StrEnum):
    """What a request asks the registry to do."""

    REGISTER = "register"
    LOOKUP = "lookup"
    LIST = "list"
    STATS = "stats"


@dataclass
class Registration:
    """What a registrant said about itself (`reported`) and what the registry saw (`observed`)."""

    name: str
    reported: Name | None
    observed: Name
    ports: dict[str, Any]
    time: float = field(default_factory=time.time)

    @property
    def family(self) -> Family:
        """The family the registrant really used; an IPv4-mapped name counts as IPv4."""
        assert isinstance(self.observed, tuple)
        return Family.IPV6 if ":" in unmap_host(self.observed[0]) else Family.IPV4

    @property
    def host(self) -> str:
        """The observed host, IPv4-mapped names unmapped: where others reach this registrant."""
        assert isinstance(self.observed, tuple)
        return unmap_host(self.observed[0])

    def to_wire(self) -> dict[str, Any]:
        """The registration as lookup and list replies carry it."""
        return {
            "name": self.name,
            "reported": name_to_wire(self.reported),
            "observed": name_to_wire(self.observed),
            "ports": self.ports,
            "time": self.time,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Registration:
        """Check a registration read from a reply."""
        if not isinstance(obj, dict):
            raise ValueError(f"registration is a {type(obj).__name__}, not a map")
        name, ports, when = obj.get("name"), obj.get("ports"), obj.get("time")
        if not isinstance(name, str) or not isinstance(ports, dict) or not isinstance(when, int | float):
            raise ValueError("registration needs a name, a ports map and a time")
        observed = name_from_wire(obj.get("observed"))
        if not isinstance(observed, tuple):
            raise ValueError("registration has no observed name")
        return cls(name, name_from_wire(obj.get("reported")), observed, ports, float(when))


def request(
    address: tuple[str, int], payload: dict[str, Any], reporter: Reporter, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Send one request to the registry and report the client end's names under a new flow."""
    flow = new_flow_id()
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        reporter.observe(sock, "connect", flow, Role.CLIENT, remote=address)
        local, peer = sock.getsockname(), sock.getpeername()
        scenario = f"registry-{payload.get('op')}"
        reporter.observe(sock, "getpeername", flow, Role.CLIENT, remote=peer)
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=local, extra={"scenario": scenario})
        sock.sendall(pack_frame({**payload, "flow": flow, "reported": name_to_wire(local)}))
        reply = recv_frame(sock)
    if not reply.get("ok"):
        raise LookupError(f"registry said: {reply.get('error')}")
    return reply


def register(
    address: tuple[str, int], name: str, ports: dict[str, Any], reporter: Reporter, *, attempts: int = 50
) -> Name:
    """Register `name`, retrying while the registry is not up yet; the name the registry observed."""
    payload = {"op": RegistryOp.REGISTER.value, "name": name, "ports": ports}
    for _ in range(attempts - 1):
        try:
            return observed_name(request(address, payload, reporter))
        except OSError as exc:
            log.info("registry %s not reachable yet: %s", address, exc)
            time.sleep(0.2)
    return observed_name(request(address, payload, reporter))


def observed_name(reply: dict[str, Any]) -> Name:
    """The name a register reply says the registry saw."""
    observed = name_from_wire(reply.get("observed"))
    if observed is None:
        raise ValueError("register reply has no observed name")
    return observed


def lookup(address: tuple[str, int], name: str, reporter: Reporter) -> list[Registration]:
    """Every registration of `name`, one per address family it registered from."""
    reply = request(address, {"op": RegistryOp.LOOKUP.value, "name": name}, reporter)
    return [Registration.from_wire(entry) for entry in reply.get("registrations", [])]


def list_registrations(address: tuple[str, int], reporter: Reporter) -> list[Registration]:
    """Every registration the registry holds."""
    reply = request(address, {"op": RegistryOp.LIST.value}, reporter)
    return [Registration.from_wire(entry) for entry in reply.get("registrations", [])]


def stats(address: tuple[str, int], reporter: Reporter) -> dict[str, int]:
    """The registry's counters (requests by op, rejections, STUN answers)."""
    return dict(request(address, {"op": RegistryOp.STATS.value}, reporter)["stats"])
