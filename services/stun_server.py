"""The registry's STUN responder: RFC 8489 Binding, with RFC 5780's second address and port.

With no addresses configured it is a single dual-stack socket on the STUN port. With a primary and
an alternate IPv4 address it binds the four (address, port) pairs RFC 5780 needs, plus an IPv6
socket (IPV6_V6ONLY) on the primary port; every IPv4 response then says where it came from
(RESPONSE-ORIGIN) and where the other pair is (OTHER-ADDRESS, relative to the name the request
reached), and CHANGE-REQUEST picks the socket the response leaves from. Where there is nothing to
change to (no alternate, or IPv6) a CHANGE-REQUEST gets a 420 listing it, as RFC 5780 section 6 says.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections import Counter, OrderedDict

from shared import stun
from shared.names import Name, create_dual_stack_socket, unmap_host
from shared.record import Role
from shared.reporter import Reporter

log = logging.getLogger(__name__)

SOFTWARE = "socklab registry"
REMEMBERED_SOURCES = 4096


def create_udp_socket(host: str, port: int) -> socket.socket:
    """Bind one IPv4 UDP socket to a concrete address, so replies leave from exactly that name."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def create_v6only_socket(port: int) -> socket.socket:
    """IPv6 on the primary port beside the IPv4 sockets bound to concrete addresses."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::", port))
    return sock


def check_addresses(addresses: tuple[str, ...], port: int, alt_port: int) -> tuple[str, str]:
    """RFC 5780 needs two IPv4 addresses and two ports, or none at all ("", "")."""
    if not addresses:
        return "", ""
    if len(addresses) != 2:
        raise ValueError(f"STUN addresses must be two, primary,alternate: got {len(addresses)}")
    for host in addresses:
        if not isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address):
            raise ValueError(f"STUN address {host!r} is not IPv4")
    if addresses[0] == addresses[1]:
        raise ValueError(f"STUN alternate address must differ from the primary {addresses[0]}")
    if port and port == alt_port:
        raise ValueError(f"STUN alternate port must differ from the primary port {port}")
    return addresses[0], addresses[1]


class StunResponder:
    """Owns the STUN sockets; the registry's selector loop calls handle() when one is readable."""

    def __init__(self, reporter: Reporter, port: int, addresses: tuple[str, ...] = (), alt_port: int = 3479) -> None:
        self.reporter = reporter
        self.stats: Counter[str] = Counter()
        # The source each recent Binding request came from, by transaction id: a udp rendezvous's public name.
        self.sources: OrderedDict[bytes, Name] = OrderedDict()
        self.sockets: dict[tuple[str, int], socket.socket] = {}
        self.primary, self.alternate = check_addresses(addresses, port, alt_port)
        self.v6: socket.socket | None
        if self.alternate:
            first = create_udp_socket(self.primary, port)
            second = create_udp_socket(self.primary, alt_port)
            self.port, self.alt_port = first.getsockname()[1], second.getsockname()[1]
            self.sockets = {
                (self.primary, self.port): first,
                (self.primary, self.alt_port): second,
                (self.alternate, self.port): create_udp_socket(self.alternate, self.port),
                (self.alternate, self.alt_port): create_udp_socket(self.alternate, self.alt_port),
            }
            self.v6 = create_v6only_socket(self.port)
        else:
            self.v6 = create_dual_stack_socket(socket.SOCK_DGRAM, port)
            self.port = self.alt_port = self.v6.getsockname()[1]
        for sock in self.all_sockets():
            reporter.observe(sock, "bind", None, Role.SERVER, local=sock.getsockname())

    def all_sockets(self) -> list[socket.socket]:
        """Every STUN socket, for the selector."""
        return [*self.sockets.values(), *([self.v6] if self.v6 else [])]

    def handle(self, sock: socket.socket) -> None:
        """Answer one datagram: a Binding response, an error response, or a counted rejection."""
        try:
            data, addr = sock.recvfrom(2048)
        except OSError as exc:
            log.warning("recvfrom failed: %s", exc)
            return
        try:
            request = stun.unpack_message(data)
            if request.method != stun.Method.BINDING or request.cls != stun.Class.REQUEST:
                raise ValueError("STUN message is not a Binding request")
        except ValueError as exc:
            self.stats["stun_rejected"] += 1
            self.reporter.reject(sock, "recvfrom", addr, exc)
            return
        flow = stun.flow_id(request.transaction_id)
        self.remember_source(request.transaction_id, addr)
        self.reporter.observe(sock, "recvfrom", flow, Role.SERVER, local=sock.getsockname(), remote=addr)
        out, response = self.respond(sock, request, addr)
        destination = response_destination(request, addr)
        try:
            out.sendto(stun.pack_message(response, fingerprint=True), destination)
        except OSError as exc:
            log.warning("sendto %s failed: %s", destination, exc)
            return
        self.stats["stun_answered" if response.cls == stun.Class.RESPONSE else "stun_errors"] += 1
        self.reporter.observe(out, "sendto", flow, Role.SERVER, local=out.getsockname(), remote=destination)

    def remember_source(self, transaction_id: bytes, addr: Name) -> None:
        """Keep where a request came from, for a rendezvous naming its transaction; only the newest few."""
        self.sources[transaction_id] = addr
        while len(self.sources) > REMEMBERED_SOURCES:
            self.sources.popitem(last=False)

    def respond(self, sock: socket.socket, request: stun.Message, addr: Name) -> tuple[socket.socket, stun.Message]:
        """Choose the socket the answer leaves from (CHANGE-REQUEST) and build it (RFC 5780 section 6.1)."""
        unknown = [a for a in request.attributes if not isinstance(a, stun.Attr) and a < 0x8000]
        if unknown:
            return sock, error_response(request, 420, "Unknown Attribute", unknown)
        change = request.attributes.get(stun.Attr.CHANGE_REQUEST, 0)
        if not self.alternate or sock is self.v6:
            if change:
                return sock, error_response(request, 420, "Unknown Attribute", [stun.Attr.CHANGE_REQUEST])
            return sock, binding_response(request, addr)
        out = self.changed_socket(sock, change)
        other = self.changed_socket(sock, stun.CHANGE_IP | stun.CHANGE_PORT).getsockname()
        return out, binding_response(request, addr, origin=out.getsockname(), other=other)

    def changed_socket(self, sock: socket.socket, change: int) -> socket.socket:
        """The socket on the other address and/or the other port of the one a request arrived at."""
        host, port = sock.getsockname()
        if change & stun.CHANGE_IP:
            host = self.alternate if host == self.primary else self.primary
        if change & stun.CHANGE_PORT:
            port = self.alt_port if port == self.port else self.port
        return self.sockets[(host, port)]


def response_destination(request: stun.Message, addr: Name) -> Name:
    """Where the answer goes: the request's source, at RESPONSE-PORT's port if it names one (RFC 5780 section 7.5).

    natcheck --lifetime asks from a second socket for the answer to reach its first socket's mapping.
    """
    port = request.attributes.get(stun.Attr.RESPONSE_PORT)
    if port is None or not isinstance(addr, tuple):
        return addr
    return (addr[0], port, *addr[2:])


def binding_response(
    request: stun.Message,
    addr: Name,
    *,
    origin: tuple[str, int] | None = None,
    other: tuple[str, int] | None = None,
) -> stun.Message:
    """The success response; with two addresses also RFC 5780's attributes (and RFC 3489's, for classic)."""
    assert isinstance(addr, tuple)
    mapped = (unmap_host(addr[0]), addr[1])
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id, cookie=request.cookie)
    attrs = response.attributes
    if request.classic:
        attrs[stun.Attr.MAPPED_ADDRESS] = mapped
        if origin is not None:
            attrs[stun.Attr.SOURCE_ADDRESS] = origin
        if other is not None:
            attrs[stun.Attr.CHANGED_ADDRESS] = other
    else:
        if other is not None:
            attrs[stun.Attr.MAPPED_ADDRESS] = mapped  # RFC 5780 section 6.1 asks for both forms
        attrs[stun.Attr.XOR_MAPPED_ADDRESS] = mapped
    if origin is not None:
        attrs[stun.Attr.RESPONSE_ORIGIN] = origin
    if other is not None:
        attrs[stun.Attr.OTHER_ADDRESS] = other
    attrs[stun.Attr.SOFTWARE] = SOFTWARE
    return response


def error_response(request: stun.Message, code: int, reason: str, unknown: list[int] | None = None) -> stun.Message:
    """An error response (RFC 8489 section 14.8), listing unknown attributes for a 420."""
    response = stun.Message(stun.Method.BINDING, stun.Class.ERROR, request.transaction_id, cookie=request.cookie)
    response.attributes[stun.Attr.ERROR_CODE] = (code, reason)
    if unknown:
        response.attributes[stun.Attr.UNKNOWN_ATTRIBUTES] = unknown
    response.attributes[stun.Attr.SOFTWARE] = SOFTWARE
    return response
