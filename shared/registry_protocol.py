"""The registry's wire protocol and its client API: the one module both sides of it import.

Requests and replies are length-prefixed msgpack frames (shared.framing) on one TCP connection:
  {"op": "register", "flow", "name", "reported", "ports"} -> {"ok": true, "observed"}
  {"op": "lookup", "flow", "name", "reported"}            -> {"ok": true, "registrations": [...]}
  {"op": "list", "flow", "reported", "offset"}            -> {"ok": true, "registrations": [...], "next"}
  {"op": "stats", "flow", "reported"}                     -> {"ok": true, "stats": {...}}
  {"op": "connect", "flow", "reported", "name", "peer", "proto", "private", "stun", "wait"}
      -> when the peer asks too, both at once: {"ok": true, "rendezvous", "role", "proto", "self", "peer"}
A rendezvous (`connect`) pairs two punchers: each says who it is (`name`), whom it wants (`peer`; empty:
anyone who asks for it) and its punch socket's own name (`private`); the registry adds the name it saw
that socket by (`public`): for tcp the request stream's source (the punch socket itself), for udp the
source of the STUN Binding request whose transaction id `stun` names. The first to ask waits (up to
`wait` seconds) until the other asks; then both get each other's names at once, and one rendezvous id,
the flow id both ends report the punch under. An unknown peer, a peer that never asks and a name
registered from another address get {"ok": false, "error"}.
A `list` reply is one page that fits a frame: "next" is the offset to ask from for the rest (nil: no more).
A registration lives REGISTRATION_TTL seconds after its last register; the registry holds at most
MAX_REGISTRATIONS (past that a new name is refused), each a name of at most MAX_NAME characters and a
ports map of at most MAX_PORTS names to port numbers.
A request the registry cannot serve gets {"ok": false, "error"}; a stream that is not frames is closed.
Every request carries the flow id the client reports its end under, and the name it connected from
(`reported`), so the registry can set the name it observes beside it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from shared.fields import finite, plain, require_map
from shared.framing import MAX_FRAME, pack_frame, recv_frame
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
    CONNECT = "connect"


PUNCH_PROTOS = ("udp", "tcp")
MAX_WAIT = 60.0
MAX_NAME = 255
MAX_PORTS = 16
MAX_REGISTRATIONS = 4096
REGISTRATION_TTL = 24 * 3600.0
RENEW_EVERY = REGISTRATION_TTL / 4  # a registrant's renewals: three may fail before its registration expires
# Registering while the registry starts beside us (make up starts every service at once): an address no
# container holds yet does not refuse, its ARP resolution just fails after 3 s, so each try gives up early.
REGISTER_RETRY_TIMEOUT, REGISTER_RETRY_INTERVAL = 0.25, 0.05  # 200 tries: about a minute
PAGE_BYTES = MAX_FRAME - 1024  # a list page's registrations, leaving room for the reply around them


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
        obj = require_map(obj, "registration")
        name, ports, when = obj.get("name"), obj.get("ports"), obj.get("time")
        if not isinstance(name, str) or not isinstance(ports, dict) or not isinstance(when, int | float):
            raise ValueError("registration needs a name, a ports map and a time")
        finite(when, "registration time")
        plain(ports, "registration ports")
        observed = name_from_wire(obj.get("observed"))
        if not isinstance(observed, tuple):
            raise ValueError("registration has no observed name")
        return cls(name, name_from_wire(obj.get("reported")), observed, ports, float(when))


def check_register(frame: dict[str, Any]) -> tuple[str, dict[str, int | str]]:
    """A register request's name and ports map, checked and bounded; garbage raises ValueError."""
    name, ports = frame.get("name"), frame.get("ports") or {}
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"register needs a name of 1 to {MAX_NAME} characters")
    if not isinstance(ports, dict) or len(ports) > MAX_PORTS:
        raise ValueError(f"register ports must be a map of at most {MAX_PORTS} entries")
    for key, port in ports.items():
        number = isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535
        path = isinstance(port, str) and len(port) <= MAX_NAME
        if not isinstance(key, str) or len(key) > MAX_NAME or not (number or path):
            raise ValueError(f"register ports must map names to port numbers or paths, not {key!r}: {port!r}")
    return name, ports


def page(entries: list[dict[str, Any]], offset: int) -> tuple[list[dict[str, Any]], int | None]:
    """The entries from `offset` on that fit PAGE_BYTES packed, and the offset of the next page (None: no more)."""
    size, end = 0, offset
    while end < len(entries):
        size += len(msgpack.packb(entries[end], use_bin_type=True))
        if size > PAGE_BYTES and end > offset:
            break
        end += 1
    return entries[offset:end], end if end < len(entries) else None


@dataclass(frozen=True)
class Candidate:
    """A punch socket's names: its own (`private`) and the one the registry saw it by (`public`)."""

    name: str
    public: tuple[str, int]
    private: tuple[str, int]

    def to_wire(self) -> dict[str, Any]:
        """The candidate as a rendezvous reply carries it."""
        return {"name": self.name, "public": list(self.public), "private": list(self.private)}

    @classmethod
    def from_wire(cls, obj: Any) -> Candidate:
        """Check a candidate read from a reply."""
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise ValueError("rendezvous candidate needs a name")
        public, private = name_from_wire(obj.get("public")), name_from_wire(obj.get("private"))
        if not isinstance(public, tuple) or not isinstance(private, tuple):
            raise ValueError("rendezvous candidate needs a public and a private name")
        return cls(obj["name"], (unmap_host(public[0]), public[1]), (private[0], private[1]))


@dataclass(frozen=True)
class Rendezvous:
    """What the registry told both punchers at once: one id, who is client and server, both names."""

    id: str
    role: Role
    proto: str
    me: Candidate
    peer: Candidate

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Rendezvous:
        """Check a connect reply."""
        rendezvous, role, proto = reply.get("rendezvous"), reply.get("role"), reply.get("proto")
        if not isinstance(rendezvous, str) or role not in ("client", "server") or proto not in PUNCH_PROTOS:
            raise ValueError("connect reply needs a rendezvous id, a role and a proto")
        return cls(
            rendezvous,
            Role(role),
            proto,
            Candidate.from_wire(reply.get("self")),
            Candidate.from_wire(reply.get("peer")),
        )


@dataclass(frozen=True)
class ConnectRequest:
    """A `connect` request, checked: who asks, for whom, over which protocol, from which punch socket."""

    name: str
    peer: str
    proto: str
    private: tuple[str, int]
    stun: bytes
    wait: float

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> ConnectRequest:
        """Check a connect request; garbage raises ValueError."""
        name, peer, proto = frame.get("name"), frame.get("peer", ""), frame.get("proto")
        if not isinstance(name, str) or not name or not isinstance(peer, str) or peer == name:
            raise ValueError("connect needs a name and a peer other than itself")
        if proto not in PUNCH_PROTOS:
            raise ValueError(f"connect proto must be one of {', '.join(PUNCH_PROTOS)}")
        private = name_from_wire(frame.get("private"))
        if not isinstance(private, tuple):
            raise ValueError("connect needs the punch socket's private name")
        stun = frame.get("stun", "")
        if not isinstance(stun, str) or (proto == "udp" and len(stun) != 24):
            raise ValueError("a udp connect needs its STUN transaction id (24 hex digits)")
        wait = frame.get("wait", 5.0)
        if not isinstance(wait, int | float) or not 0 < wait <= MAX_WAIT:
            raise ValueError(f"connect wait must be a number of seconds in (0, {MAX_WAIT:g}]")
        return cls(name, peer, proto, (private[0], private[1]), bytes.fromhex(stun), float(wait))


def request(
    address: tuple[str, int], payload: dict[str, Any], reporter: Reporter, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Send one request to the registry and report the client end's names under a new flow."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        return exchange(sock, address, payload, reporter)


def exchange(
    sock: socket.socket, address: tuple[str, int], payload: dict[str, Any], reporter: Reporter
) -> dict[str, Any]:
    """One request on a connected stream, its client end reported under a new flow; an error reply raises."""
    flow = new_flow_id()
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


def connect(
    sock: socket.socket,
    address: tuple[str, int],
    name: str,
    peer: str,
    private: tuple[str, int],
    reporter: Reporter,
    *,
    stun: bytes = b"",
    wait: float = 3.0,
) -> Rendezvous:
    """Ask for a rendezvous with `peer` (empty: anyone asking for `name`) on a stream `sock` has connected.

    For tcp, `sock` is the punch socket's own port (its request stream is what the registry sees it by);
    for udp, `stun` is the transaction id of the Binding request the punch socket sent the registry.
    """
    proto = "udp" if stun else "tcp"
    sock.settimeout(wait + 5.0)
    payload = {
        "op": RegistryOp.CONNECT.value,
        "name": name,
        "peer": peer,
        "proto": proto,
        "private": list(private),
        "stun": stun.hex(),
        "wait": wait,
    }
    return Rendezvous.from_reply(exchange(sock, address, payload, reporter))


def register(
    address: tuple[str, int], name: str, ports: dict[str, Any], reporter: Reporter, *, attempts: int = 200
) -> Name:
    """Register `name`, retrying while the registry is not up yet; the name the registry observed."""
    payload = {"op": RegistryOp.REGISTER.value, "name": name, "ports": ports}
    for _ in range(attempts - 1):
        try:
            return observed_name(request(address, payload, reporter, timeout=REGISTER_RETRY_TIMEOUT))
        except OSError as exc:
            log.info("registry %s not reachable yet: %s", address, exc)
            time.sleep(REGISTER_RETRY_INTERVAL)
    return observed_name(request(address, payload, reporter))


def renew_registration(
    addresses: list[tuple[str, int]],
    name: str,
    ports: dict[str, Any],
    reporter: Reporter,
    stop: threading.Event,
    every: float = RENEW_EVERY,
) -> None:
    """Register again well inside the registry's TTL, so a service that runs for days stays listed."""
    while not stop.wait(every):
        for address in addresses:
            try:
                register(address, name, ports, reporter, attempts=1)
            except (OSError, LookupError, ValueError) as exc:
                log.warning("renewing %s at the registry %s failed, retried in %.0f s: %s", name, address, every, exc)


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
    """Every registration the registry holds, a page (one request) at a time."""
    found: list[Registration] = []
    offset: int | None = 0
    for _ in range(MAX_REGISTRATIONS + 1):
        reply = request(address, {"op": RegistryOp.LIST.value, "offset": offset}, reporter)
        found += [Registration.from_wire(entry) for entry in reply.get("registrations", [])]
        offset = reply.get("next")
        if offset is None:
            return found
        if not isinstance(offset, int) or offset <= 0:
            raise ValueError(f"list reply 'next' must be a positive offset, not {offset!r}")
    raise ValueError(f"the registry's list runs past {MAX_REGISTRATIONS} pages")


def stats(address: tuple[str, int], reporter: Reporter) -> dict[str, int]:
    """The registry's counters (requests by op, rejections, STUN answers)."""
    return dict(request(address, {"op": RegistryOp.STATS.value}, reporter)["stats"])
