"""registry: register, lookup and list over TCP, STUN Binding on UDP, and the rendezvous of two punchers.

For every registrant it keeps two names side by side: the one the registrant reports for its own
socket (`reported`) and the one the registry's accepted socket observes (`observed`). Behind a NAT
they differ exactly by the NAT's translation. Its request protocol, and the client side of it, is
shared.registry_protocol; its STUN responder is services.stun_server. A `connect` request parks its
stream until the peer it names asks too (or its wait ends), then both streams get each other's names
in the same loop turn, so the two can start punching together. Clients it cannot trust are bounded:
request streams are capped and time out idle, accept backs off when descriptors run out, registrations
are capped and expire, and a `list` reply is paged to fit a frame.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import zmq

from services.stun_server import StunResponder
from shared.config import load_config
from shared.framing import pack_frame
from shared.names import create_dual_stack_socket, name_from_wire, name_to_wire, unmap_host
from shared.readiness import mark_ready
from shared.record import Family, Role, new_flow_id
from shared.registry_protocol import (
    MAX_REGISTRATIONS,
    MAX_WAIT,
    REGISTRATION_TTL,
    Candidate,
    ConnectRequest,
    Registration,
    RegistryOp,
    check_register,
    lookup,
    page,
)
from shared.reporter import Reporter
from shared.streams import AcceptedStream, AcceptGate, close_all

log = logging.getLogger(__name__)
SWEEP_EVERY = 0.25  # seconds between sweeps of idle request streams, and the longest the loop sleeps


@dataclass
class ParkedConnect:
    """A rendezvous request waiting for its peer: the stream its answer goes to, and until when."""

    conn: AcceptedStream
    request: ConnectRequest
    me: Candidate
    deadline: float

    def wants(self, request: ConnectRequest) -> bool:
        """Whether this waiting request and a new one ask for each other, over the same protocol."""
        return (
            self.request.proto == request.proto
            and self.me.name != request.name
            and request.peer in ("", self.me.name)
            and self.request.peer in ("", request.name)
            and (request.peer != "" or self.request.peer != "")
        )


class RegistryServer:
    """The registry's TCP and STUN sockets in one selector loop."""

    def __init__(
        self,
        reporter: Reporter,
        port: int,
        stun_port: int,
        *,
        stun_addresses: tuple[str, ...] = (),
        stun_alt_port: int = 3479,
        max_streams: int = 256,
        idle_timeout: float = MAX_WAIT + 15.0,
        accept_backoff: float = 0.5,
    ) -> None:
        self.reporter = reporter
        self.idle_timeout = idle_timeout
        self.next_sweep = 0.0
        self.streams: list[AcceptedStream] = []
        self.stats: Counter[str] = Counter()
        self.registrations: dict[tuple[str, Family], Registration] = {}
        self.parked: list[ParkedConnect] = []
        self.selector = selectors.DefaultSelector()
        self.tcp = create_dual_stack_socket(socket.SOCK_STREAM, port)
        self.port = self.tcp.getsockname()[1]
        reporter.observe(self.tcp, "bind", None, Role.SERVER, local=self.tcp.getsockname())
        self.stun = StunResponder(reporter, stun_port, stun_addresses, stun_alt_port)
        self.stun_port = self.stun.port
        self.tcp.listen(128)
        self.tcp.setblocking(False)
        listeners = {self.tcp: self.accept_request_stream}
        self.gate = AcceptGate(self.selector, listeners, max_streams, accept_backoff, self.stats)
        self.gate.open()
        for sock in self.stun.all_sockets():
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, functools.partial(self.stun.handle, sock))

    def serve(self, stop: threading.Event) -> None:
        """Run the loop until `stop` is set; each registered socket carries its own handler."""
        while not stop.is_set():
            for key, _events in self.selector.select(timeout=self.next_due(time.monotonic())):
                key.data()
            now = time.monotonic()
            self.expire_parked(now)
            if now >= self.next_sweep:
                self.sweep(now)

    def next_due(self, now: float) -> float:
        """Seconds until the next sweep or rendezvous deadline: an idle registry sleeps instead of polling."""
        due = min([self.next_sweep, *(parked.deadline for parked in self.parked)])
        return min(max(due - now, 0.0), SWEEP_EVERY)

    def sweep(self, now: float) -> None:
        """Close request streams idle too long (not one parked for a rendezvous); accept again after a back-off."""
        self.next_sweep = now + SWEEP_EVERY
        parked = {id(p.conn) for p in self.parked}
        for conn in list(self.streams):
            if id(conn) not in parked and now - conn.last_active > self.idle_timeout:
                self.stats["idle_closed"] += 1
                log.info("request stream from %s idle for %.0f s: closed", conn.accepted_from, self.idle_timeout)
                self.close_stream(conn)
        self.gate.tick(now)

    def close(self) -> None:
        """Close every socket the registry holds."""
        close_all(self.selector)

    def all_stats(self) -> dict[str, int]:
        """Registry and STUN counters together."""
        return dict(self.stats + self.stun.stats)

    def accept_request_stream(self) -> None:
        """Accept one requester; its names are reported once its first request names the flow."""
        if (accepted := self.gate.accept(self.tcp)) is None:
            return
        sock, addr = accepted
        conn = AcceptedStream(sock, addr)
        self.streams.append(conn)
        self.selector.register(sock, selectors.EVENT_READ, functools.partial(self.handle_request_stream, conn))

    def handle_request_stream(self, conn: AcceptedStream) -> None:
        """Serve every whole request that arrived; garbage closes only this connection."""
        try:
            data = conn.sock.recv(65536)
            if not data:
                self.close_stream(conn)
                return
            conn.last_active = time.monotonic()
            conn.frames.feed(data)
            while (frame := conn.frames.next_frame()) is not None:
                if (reply := self.answer(conn, frame)) is not None:
                    conn.sock.sendall(self.pack_reply(reply))
        except ValueError as exc:
            self.stats["rejected"] += 1
            self.reporter.reject(conn.sock, "accept", conn.accepted_from, exc)
            self.close_stream(conn)
        except OSError as exc:
            log.info("stream from %s failed: %s", conn.accepted_from, exc)
            self.close_stream(conn)

    def pack_reply(self, reply: dict[str, Any]) -> bytes:
        """A reply's frame; one too big for a frame is the registry's fault, said as an error, not the client's."""
        try:
            return pack_frame(reply)
        except ValueError as exc:
            self.stats["reply_too_large"] += 1
            log.warning("reply not sent: %s", exc)
            return pack_frame({"ok": False, "error": f"reply too large: {exc}"})

    def close_stream(self, conn: AcceptedStream) -> None:
        """Forget one connection, and any rendezvous it waits for."""
        self.parked = [parked for parked in self.parked if parked.conn is not conn]
        self.streams.remove(conn)
        self.selector.unregister(conn.sock)
        conn.sock.close()
        self.gate.stream_closed()

    def answer(self, conn: AcceptedStream, frame: dict[str, Any]) -> dict[str, Any] | None:
        """Reply to one request (None: a rendezvous waits); a bad request is counted and answered with an error."""
        try:
            return self.serve_request(conn, frame)
        except (ValueError, KeyError, TypeError) as exc:
            self.stats["bad_requests"] += 1
            self.reporter.reject(conn.sock, "accept", conn.accepted_from, exc)
            return {"ok": False, "error": str(exc)}

    def serve_request(self, conn: AcceptedStream, frame: dict[str, Any]) -> dict[str, Any] | None:
        """Do one request; a malformed one raises ValueError, KeyError or TypeError."""
        op = frame.get("op")
        flow = frame.get("flow")
        if not isinstance(flow, str) or not flow:
            raise ValueError("request has no flow id")
        if conn.flow is None:
            conn.flow = flow
            self.observe_requester(conn)
        if op not in RegistryOp.__members__.values():
            raise ValueError(f"unknown op {op!r}")
        self.stats[f"op_{op}"] += 1
        if op == RegistryOp.REGISTER:
            name, ports = check_register(frame)
            observed = conn.sock.getpeername()
            self.expire_registrations(time.time())
            self.check_owner(name, observed)
            entry = Registration(name, name_from_wire(frame.get("reported")), observed, ports)
            if (name, entry.family) not in self.registrations and len(self.registrations) >= MAX_REGISTRATIONS:
                self.stats["registry_full"] += 1
                raise ValueError(f"the registry holds {MAX_REGISTRATIONS} registrations: full")
            self.registrations[(name, entry.family)] = entry
            log.info("registered %s: reported %s, observed %s", name, entry.reported, observed)
            return {"ok": True, "observed": name_to_wire(observed)}
        if op == RegistryOp.LOOKUP:
            found = [r.to_wire() for (n, _), r in self.registrations.items() if n == frame["name"]]
            if not found:
                return {"ok": False, "error": f"no registration for {frame['name']!r}"}
            return {"ok": True, "registrations": found}
        if op == RegistryOp.CONNECT:
            return self.rendezvous(conn, ConnectRequest.from_frame(frame))
        if op == RegistryOp.LIST:
            offset = frame.get("offset") or 0
            if not isinstance(offset, int) or offset < 0:
                raise ValueError(f"list offset must be a count, not {offset!r}")
            self.expire_registrations(time.time())
            found, after = page([r.to_wire() for r in self.registrations.values()], offset)
            return {"ok": True, "registrations": found, "next": after}
        return {"ok": True, "stats": self.all_stats()}

    def expire_registrations(self, now: float) -> None:
        """Forget registrations not renewed for REGISTRATION_TTL seconds."""
        for key in [key for key, entry in self.registrations.items() if now - entry.time > REGISTRATION_TTL]:
            self.stats["expired"] += 1
            del self.registrations[key]

    def check_owner(self, name: str, observed: Any) -> None:
        """A name belongs to the address that registered it: another address claiming it is refused."""
        host = unmap_host(observed[0])
        family = Family.IPV6 if ":" in host else Family.IPV4
        owner = self.registrations.get((name, family))
        if owner is not None and owner.host != host:
            self.stats["forged"] += 1
            raise ValueError(f"{name!r} is registered from {owner.host}, not from {host}: not yours to claim")

    def rendezvous(self, conn: AcceptedStream, request: ConnectRequest) -> dict[str, Any] | None:
        """Pair a connect with the peer's waiting one and answer both at once, or park it until the peer asks."""
        observed = conn.sock.getpeername()
        self.check_owner(request.name, observed)
        public = (unmap_host(observed[0]), observed[1])
        if request.proto == "udp":
            seen = self.stun.sources.get(request.stun)
            if not isinstance(seen, tuple):
                raise ValueError(f"no STUN Binding request {request.stun.hex()} reached the registry")
            if unmap_host(seen[0]) != public[0]:
                raise ValueError(f"STUN request {request.stun.hex()} came from {seen[0]}, not from {public[0]}")
            public = (unmap_host(seen[0]), seen[1])
        me = Candidate(request.name, public, request.private)
        waiting = next((parked for parked in self.parked if parked.wants(request)), None)
        if waiting is None:
            if request.peer and not self.known(request.peer):
                return {"ok": False, "error": f"unknown peer {request.peer!r}: it has not registered"}
            self.replace_parked(request)
            self.parked.append(ParkedConnect(conn, request, me, time.monotonic() + request.wait))
            return None
        self.parked.remove(waiting)
        rendezvous = new_flow_id()
        self.stats["rendezvous"] += 1
        log.info(
            "rendezvous %s: %s (%s) with %s (%s)", rendezvous, me.name, me.public, waiting.me.name, waiting.me.public
        )
        answer = {"ok": True, "rendezvous": rendezvous, "proto": request.proto}
        try:
            waiting.conn.sock.sendall(
                pack_frame({**answer, "role": "server", "self": waiting.me.to_wire(), "peer": me.to_wire()})
            )
        except OSError as exc:
            return {"ok": False, "error": f"peer {waiting.me.name!r} left before the rendezvous: {exc}"}
        return {**answer, "role": "client", "self": me.to_wire(), "peer": waiting.me.to_wire()}

    def replace_parked(self, request: ConnectRequest) -> None:
        """A newer wait for the same peer replaces an older one, whose stream may be dead (a router flushed it)."""
        same = (request.name, request.proto, request.peer)
        for old in [p for p in self.parked if (p.request.name, p.request.proto, p.request.peer) == same]:
            self.parked.remove(old)
            try:
                old.conn.sock.sendall(
                    pack_frame({"ok": False, "error": "replaced by a newer request for the same peer"})
                )
            except OSError as exc:
                log.info("a replaced rendezvous request's stream is gone: %s", exc)

    def known(self, name: str) -> bool:
        """Whether a name has registered, or waits for a rendezvous."""
        return any(n == name for n, _ in self.registrations) or any(p.me.name == name for p in self.parked)

    def expire_parked(self, now: float) -> None:
        """Tell each request whose peer never asked in time so, and forget it."""
        for parked in [parked for parked in self.parked if parked.deadline <= now]:
            self.parked.remove(parked)
            who = f"peer {parked.request.peer!r} never" if parked.request.peer else "no peer"
            error = f"{who} asked for a rendezvous with {parked.me.name!r} within {parked.request.wait:g} s"
            try:
                parked.conn.sock.sendall(pack_frame({"ok": False, "error": error}))
            except OSError as exc:
                log.info("rendezvous of %s expired on a closed stream: %s", parked.me.name, exc)

    def observe_requester(self, conn: AcceptedStream) -> None:
        """Report the accepted socket's names under the flow its first request named."""
        sock, flow = conn.sock, conn.flow
        self.reporter.observe(sock, "accept", flow, Role.SERVER, remote=conn.accepted_from)
        self.reporter.observe(sock, "getsockname", flow, Role.SERVER, local=sock.getsockname())
        self.reporter.observe(sock, "getpeername", flow, Role.SERVER, remote=sock.getpeername())


def main(argv: list[str] | None = None) -> None:
    """Run the registry, or ask a running one about a name (--lookup) and print its answer as JSON."""
    cfg = load_config("registry")
    parser = argparse.ArgumentParser(prog="socklab registry", description=main.__doc__)
    parser.add_argument("--port", type=int, default=cfg.registry_port)
    parser.add_argument("--stun-port", type=int, default=cfg.stun_port)
    parser.add_argument("--lookup", metavar="NAME", help="print NAME's registrations at SOCKLAB_REGISTRY")
    args = parser.parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)
    reporter.report_topology()
    if args.lookup:
        try:
            print(json.dumps([entry.to_wire() for entry in lookup(cfg.registries[0], args.lookup, reporter)]))
        finally:
            reporter.close()
            context.term()
        return
    server = RegistryServer(
        reporter, args.port, args.stun_port, stun_addresses=cfg.stun_addresses, stun_alt_port=cfg.stun_alt_port
    )
    log.info("registry serving on tcp %d, stun udp %d", server.port, server.stun_port)
    mark_ready(cfg.service, f"listening on tcp {server.port}, stun udp {server.stun_port}")
    try:
        server.serve(threading.Event())
    finally:
        reporter.close()
        context.term()
