"""The report record: one socket call's view of a socket name, the one definition every service uses.

On the wire a record is a msgpack map (schema version 1):

| key     | type            | meaning                                                        |
|---------|-----------------|----------------------------------------------------------------|
| v       | int             | schema version, 1                                              |
| time    | float           | Unix time the call returned                                    |
| service | str             | the reporting service (echo, registry, client-lan, ...)        |
| host    | str             | the container's host name                                      |
| node    | str             | the Docker engine's name (a swarm node's host name); "" unknown |
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

Other kinds of record carry a "kind" key (a socket observation has none, so its wire form is unchanged):
  "conntrack":      one conntrack event on the router (ConntrackEvent): NEW or DESTROY, the conntrack id,
                    the original and reply tuples, and the router's NAT setup (its time is when
                    the router read the event from the kernel);
  "docker-binding": one published port as the Docker host serves it (DockerBinding), reported from the
                    host because the collector has no Docker socket.
  "topology":       where a service runs (Topology), said once at start (shared.host_topology reads
                    `ip -j addr` and `ip -j route`): container (bool, /.dockerenv), interfaces
                    [{name, addresses: ["address/prefix"]}] (global addresses), routes [{destination
                    (a prefix; default is 0.0.0.0/0 or ::/0), gateway (nil on-link), device}].
Each has v, time, service, host, node and drops like an observation, and its own checked fields.
"node" may be missing on the wire (records written before it existed): it reads as "".
"""

from __future__ import annotations

import _socket
import ipaddress
import math
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias, TypedDict

import msgpack

from shared.fields import member, number, optional, plain, plain_map, require_map, typed
from shared.framing import unpack_map
from shared.names import Name, name_from_wire, name_to_wire

SCHEMA_VERSION = 1
MAX_RECORD = 64 * 1024  # bytes: the collector's ingest socket refuses bigger messages (ZMQ_MAXMSGSIZE)


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
# socket.socket's family and type properties build an enum at every call (a microsecond of every record on a
# reporter's data path); the C socket's own getters give the plain numbers
RAW_FAMILY = _socket.socket.family.__get__
RAW_TYPE = _socket.socket.type.__get__
SOCKET_KINDS: dict[tuple[int, int], tuple[Proto, Family]] = {}


def socket_kind(sock: socket.socket) -> tuple[Proto, Family]:
    """A socket's proto and family as a record spells them, looked up by its raw family and type."""
    key = (RAW_FAMILY(sock), RAW_TYPE(sock))
    kind = SOCKET_KINDS.get(key)
    if kind is None:
        kind = SOCKET_KINDS[key] = (Proto.of(sock), Family.of(sock.family))
    return kind


def new_flow_id() -> str:
    """A fresh flow id, carried in a flow's first bytes so both ends tag the same flow."""
    return uuid.uuid4().hex[:16]


@dataclass(slots=True)
class Observation:
    """What one socket call said about one socket's names (slots, not frozen: the collector holds 10⁶ of them)."""

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
    node: str = ""

    def to_wire(self) -> dict[str, Any]:
        """The record as a msgpack map: what the store keeps and the "records" query answers."""
        return {
            "v": SCHEMA_VERSION,
            "time": self.time,
            "service": self.service,
            "host": self.host,
            "node": self.node,
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
        """Check and read a record's map in one pass; anything malformed raises ValueError saying what is wrong."""
        get = obj.get
        moment, drops, extra = get("time"), get("drops"), get("extra")
        service, host, flow, node = get("service"), get("host"), get("flow"), get("node")
        try:
            words = ROLES[get("role")], PROTOS[get("proto")], FAMILIES[get("family")], METHODS[get("method")]
            local, remote = fast_name(get("local")), fast_name(get("remote"))
        except (KeyError, TypeError, ValueError):
            return cls.checked(obj)
        if not (
            type(get("v")) is int
            and get("v") == SCHEMA_VERSION
            and type(service) is str
            and type(host) is str
            and (flow is None or type(flow) is str)
            and (node is None or type(node) is str)
            and type(drops) is int
            and type(extra) is dict
            and (type(moment) is float or type(moment) is int)
            and -math.inf < moment < math.inf
        ):
            return cls.checked(obj)
        if extra:
            plain(extra, "record 'extra'")  # the one check left: what checked() would say of it
        else:
            extra = NO_EXTRA
        node = intern(node) if node else ""
        return cls(intern(service), intern(host), flow, *words, local, remote, float(moment), drops, extra, node)

    @classmethod
    def checked(cls, obj: dict[str, Any]) -> Observation:
        """Read a record field by field, raising the ValueError that says which field is wrong."""
        what = "record"
        return cls(
            **header(obj, what),
            flow=optional(obj, "flow", str, "record"),
            role=member(obj, "role", Role, "record"),
            proto=member(obj, "proto", Proto, "record"),
            family=member(obj, "family", Family, "record"),
            method=member(obj, "method", Method, "record"),
            local=name_from_wire(obj.get("local")),
            remote=name_from_wire(obj.get("remote")),
            extra=plain_map(obj, "extra", "record"),
        )


ROLES: dict[Any, Role] = {str(word): word for word in Role}
PROTOS: dict[Any, Proto] = {str(word): word for word in Proto}
FAMILIES: dict[Any, Family] = {str(word): word for word in Family}
METHODS: dict[Any, Method] = {str(word): word for word in Method}
INTERNED_LIMIT = 4096
NO_EXTRA: dict[str, Any] = {}  # shared by every record read without extras (most): never written to
_interned: dict[str, str] = {}


def intern(text: str) -> str:
    """One copy of each service, host and address, so 10⁶ held records do not carry 10⁶ copies of "echo"."""
    kept = _interned.get(text)
    if kept is not None:
        return kept
    if len(_interned) < INTERNED_LIMIT:
        _interned[text] = text
    return text


def fast_name(obj: Any) -> Name | None:
    """The usual name, (host, port) with a port in range, read at once; anything else by name_from_wire."""
    if obj is None:
        return None
    if type(obj) is list and len(obj) == 2:
        host, port = obj
        if type(host) is str and type(port) is int and 0 <= port <= 65535:
            return (intern(host), port)
    return name_from_wire(obj)


class RecordKind(StrEnum):
    """What a record speaks of; an observation's wire form has no "kind" key."""

    OBSERVATION = "observation"
    CONNTRACK = "conntrack"
    DOCKER_BINDING = "docker-binding"
    TOPOLOGY = "topology"


class ConntrackEventType(StrEnum):
    """The conntrack events the router streams: an entry made, an entry gone; and an entry seen in a listing
    (the Docker host's table, read by `socklab docker-facts`), alive then, its birth unknown."""

    NEW = "new"
    DESTROY = "destroy"
    LISTED = "listed"


@dataclass(frozen=True)
class ConntrackTuple:
    """One direction of a conntrack entry: src:sport -> dst:dport, as the kernel names it."""

    src: str
    dst: str
    sport: int
    dport: int

    def to_wire(self) -> dict[str, Any]:
        """The tuple as a record carries it."""
        return {"src": self.src, "dst": self.dst, "sport": self.sport, "dport": self.dport}

    @classmethod
    def from_wire(cls, obj: Any, what: str) -> ConntrackTuple:
        """Check and read a tuple: addresses as the kernel writes them, ports in range."""
        found = require_map(obj, what)
        sport, dport = ports(found, ("sport", "dport"), 0, what)
        return cls(address(found, "src", what), address(found, "dst", what), sport, dport)


def address(obj: dict[str, Any], key: str, what: str) -> str:
    """A field that must be an IP address literal, written back in its canonical form."""
    text = typed(obj, key, str, what)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{what} {key} {text!r} is not an IP address") from None


def ports(obj: dict[str, Any], keys: tuple[str, ...], lowest: int, what: str) -> list[int]:
    """Port fields, each from lowest to 65535: a kernel tuple may name port 0, a published port may not."""
    found = [typed(obj, key, int, what) for key in keys]
    if not all(lowest <= port <= 65535 for port in found):
        raise ValueError(f"{what} port out of range: {found}")
    return found


def ip_proto(obj: dict[str, Any], what: str) -> Proto:
    """A proto that must be tcp or udp: conntrack and Docker's published ports know no Unix sockets."""
    proto = member(obj, "proto", Proto, what)
    if proto == Proto.UNIX:
        raise ValueError(f"{what} proto must be tcp or udp")
    return proto


class Header(TypedDict):
    """The fields every record kind shares, as its constructor's keywords."""

    service: str
    host: str
    time: float
    drops: int
    node: str


def header(obj: dict[str, Any], what: str) -> Header:
    """Check the fields every record kind shares: version, time, drops, service, host, and node ("" if unsaid)."""
    version = typed(obj, "v", int, what)
    if version != SCHEMA_VERSION:
        raise ValueError(f"{what} schema version {version} is not {SCHEMA_VERSION}")
    moment = number(obj, "time", what)
    drops = typed(obj, "drops", int, what)
    service, host = typed(obj, "service", str, what), typed(obj, "host", str, what)
    return Header(service=service, host=host, time=moment, drops=drops, node=optional(obj, "node", str, what) or "")


def wire_header(record: ConntrackEvent | DockerBinding | Topology, kind: RecordKind) -> dict[str, Any]:
    """The keys a record of a kind starts with, in the order the store has always kept them."""
    return {
        "v": SCHEMA_VERSION,
        "kind": str(kind),
        "time": record.time,
        "service": record.service,
        "host": record.host,
        "node": record.node,
        "drops": record.drops,
    }


@dataclass(frozen=True)
class ConntrackEvent:
    """One conntrack event on the router: the kernel's own record of a translation made or ended."""

    service: str
    host: str
    event: ConntrackEventType
    id: int
    proto: Proto
    family: Family
    original: ConntrackTuple
    reply: ConntrackTuple
    setup: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    drops: int = 0
    node: str = ""

    def to_wire(self) -> dict[str, Any]:
        """The event as a record: what the store keeps."""
        return {
            **wire_header(self, RecordKind.CONNTRACK),
            "event": str(self.event),
            "id": self.id,
            "proto": str(self.proto),
            "family": str(self.family),
            "original": self.original.to_wire(),
            "reply": self.reply.to_wire(),
            "setup": self.setup,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ConntrackEvent:
        """Check and read a conntrack record; anything malformed raises ValueError."""
        what = "conntrack record"
        head = header(obj, what)
        proto = ip_proto(obj, what)
        family = member(obj, "family", Family, what)
        if family == Family.UNIX:
            raise ValueError("conntrack record family must be ipv4 or ipv6")
        return cls(
            **head,
            event=member(obj, "event", ConntrackEventType, what),
            id=typed(obj, "id", int, what),
            proto=proto,
            family=family,
            original=ConntrackTuple.from_wire(obj.get("original"), "conntrack original"),
            reply=ConntrackTuple.from_wire(obj.get("reply"), "conntrack reply"),
            setup=plain_map(obj, "setup", what),
        )


class Mechanism(StrEnum):
    """How the Docker host carries a published port to the container."""

    DOCKER_PROXY = "docker-proxy"
    DOCKER_DNAT = "docker-dnat"


@dataclass(frozen=True)
class DockerBinding:
    """One published port as the Docker host serves it: host name, container name, and by what mechanism."""

    service: str
    host: str
    proto: Proto
    host_ip: str
    host_port: int
    container: str
    container_ip: str
    container_port: int
    network: str
    gateway: str
    mechanism: Mechanism
    proxy_pid: int | None = None
    proxy_command: tuple[str, ...] = ()
    time: float = field(default_factory=time.time)
    drops: int = 0
    node: str = ""

    def to_wire(self) -> dict[str, Any]:
        """The binding as a record: what the store keeps."""
        return {
            **wire_header(self, RecordKind.DOCKER_BINDING),
            "proto": str(self.proto),
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container": self.container,
            "container_ip": self.container_ip,
            "container_port": self.container_port,
            "network": self.network,
            "gateway": self.gateway,
            "mechanism": str(self.mechanism),
            "proxy_pid": self.proxy_pid,
            "proxy_command": list(self.proxy_command),
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> DockerBinding:
        """Check and read a binding record; anything malformed raises ValueError."""
        what = "docker-binding record"
        head = header(obj, what)
        proto = ip_proto(obj, what)
        host_port, container_port = ports(obj, ("host_port", "container_port"), 1, what)
        command = typed(obj, "proxy_command", list, what)
        if not all(isinstance(arg, str) for arg in command):
            raise ValueError(f"{what} 'proxy_command' must be a list of strings")
        return cls(
            **head,
            proto=proto,
            host_ip=address(obj, "host_ip", what),
            host_port=host_port,
            container=typed(obj, "container", str, what),
            container_ip=address(obj, "container_ip", what),
            container_port=container_port,
            network=typed(obj, "network", str, what),
            gateway=address(obj, "gateway", what),
            mechanism=member(obj, "mechanism", Mechanism, what),
            proxy_pid=optional(obj, "proxy_pid", int, what),
            proxy_command=tuple(command),
        )


@dataclass(frozen=True)
class Interface:
    """One network interface of a service's host and its global addresses ("198.51.100.10/24")."""

    name: str
    addresses: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        """The interface as a topology record carries it."""
        return {"name": self.name, "addresses": list(self.addresses)}

    @classmethod
    def from_wire(cls, obj: Any) -> Interface:
        """Check an interface: a name and addresses with their prefix lengths."""
        interface = require_map(obj, "topology interface")
        addresses = typed(interface, "addresses", list, "topology interface")
        for address in addresses:
            if not isinstance(address, str):
                raise ValueError(f"topology interface address {address!r} is not a string")
            try:
                ipaddress.ip_interface(address)
            except ValueError:
                raise ValueError(f"topology interface address {address!r} is not address/prefix") from None
        return cls(typed(interface, "name", str, "topology interface"), tuple(addresses))


@dataclass(frozen=True)
class Route:
    """One route of a service's host: where packets for a prefix go, through which gateway if any."""

    destination: str
    gateway: str | None
    device: str

    def to_wire(self) -> dict[str, Any]:
        """The route as a topology record carries it."""
        return {"destination": self.destination, "gateway": self.gateway, "device": self.device}

    @classmethod
    def from_wire(cls, obj: Any) -> Route:
        """Check a route: a prefix, and a gateway address or nil."""
        route = require_map(obj, "topology route")
        destination = typed(route, "destination", str, "topology route")
        gateway = optional(route, "gateway", str, "topology route")
        try:
            ipaddress.ip_network(destination, strict=False)
            if gateway is not None:
                ipaddress.ip_address(gateway)
        except ValueError as exc:
            raise ValueError(f"topology route: {exc}") from None
        return cls(destination, gateway, typed(route, "device", str, "topology route"))


@dataclass(frozen=True)
class Topology:
    """What a service says about where it runs: its interfaces, addresses and routes."""

    service: str
    host: str
    container: bool
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...]
    time: float = field(default_factory=time.time)
    drops: int = 0
    node: str = ""

    def to_wire(self) -> dict[str, Any]:
        """The topology record's map."""
        return {
            **wire_header(self, RecordKind.TOPOLOGY),
            "container": self.container,
            "interfaces": [interface.to_wire() for interface in self.interfaces],
            "routes": [route.to_wire() for route in self.routes],
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Topology:
        """Check and read a topology record; anything malformed raises ValueError saying what is wrong."""
        what = "topology record"
        return cls(
            **header(obj, what),
            container=typed(obj, "container", bool, "topology record"),
            interfaces=tuple(Interface.from_wire(i) for i in typed(obj, "interfaces", list, "topology record")),
            routes=tuple(Route.from_wire(r) for r in typed(obj, "routes", list, "topology record")),
        )


Record: TypeAlias = Observation | ConntrackEvent | DockerBinding | Topology
RECORD_TYPES: dict[str, type[ConntrackEvent] | type[DockerBinding] | type[Topology]] = {
    RecordKind.CONNTRACK: ConntrackEvent,
    RecordKind.DOCKER_BINDING: DockerBinding,
    RecordKind.TOPOLOGY: Topology,
}


def pack_observation(obs: Observation) -> bytes:
    """Encode a record for the wire and the store."""
    return pack_record(obs)


PACKERS = threading.local()  # one Packer a thread: msgpack.packb makes a new one, with its buffer, every call


def pack_record(record: Record) -> bytes:
    """Encode a record of any kind for the wire and the store."""
    packer = getattr(PACKERS, "packer", None)
    if packer is None:
        packer = PACKERS.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(record.to_wire())


def unpack_observation(data: bytes) -> Observation:
    """Decode and check a record; anything malformed raises ValueError saying what is wrong."""
    return Observation.from_wire(unpack_map(data, "record"))


def unpack_record(data: bytes) -> Record:
    """Decode and check a record of any kind: no "kind" is a socket observation, else the kind's own reader."""
    if len(data) > MAX_RECORD:
        raise ValueError(f"record of {len(data)} bytes exceeds {MAX_RECORD}")
    obj = unpack_map(data, "record")
    kind = obj.get("kind")
    if kind is None:
        return Observation.from_wire(obj)
    if not isinstance(kind, str) or kind not in RECORD_TYPES:
        raise ValueError(f"record kind {kind!r} is unknown")
    return RECORD_TYPES[kind].from_wire(obj)
