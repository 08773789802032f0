"""echo: TCP, UDP and Unix echo on one dual-stack port, and whoami beside it; reports every name it sees.

Port 7007 (TCP, UDP, and a Unix socket) speaks socklab's framed protocol (shared.echo_protocol) and
tells the client how it saw it (the reflexive name), and echoes raw bytes to any other client. Port
7008 (TCP and UDP) answers every client with one line, `you are <peer> at <local>`, and 7080 with
the same facts over HTTP (services.whoami). Every socket lives in one selector loop, so no report
ever waits on another flow; flows of clients that are not socklab's are reported one-sided
(services.oneside). Bad input closes only its own connection: idle streams time out, streams are
capped, and accept backs off when the process runs out of descriptors.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from services.oneside import RAW_ECHO, WHOAMI, WHOAMI_HTTP, UdpPair, UdpPairs, first_evidence
from services.whoami import HttpError, Seen, answer, parse_request, refuse
from shared.config import load_config
from shared.echo_protocol import (
    MAX_DATAGRAM,
    Reflection,
    StreamKind,
    classify_stream,
    pack_greeting,
    pack_reflection_datagram,
    unpack_datagram,
    unpack_hello,
)
from shared.names import Name, arrival_address, create_dual_stack_socket, enable_pktinfo, pktinfo_space
from shared.readiness import mark_ready
from shared.record import Proto, Role, new_flow_id
from shared.registry_protocol import register, renew_registration
from shared.reporter import Reporter
from shared.streams import AcceptedStream, AcceptGate, close_all

log = logging.getLogger(__name__)

MAX_PENDING = 256 * 1024
ECHO = "echo"  # what a listener serves: echo (7007, Unix), WHOAMI (7008) or WHOAMI_HTTP (7080)
SWEEP_INTERVAL = 0.25
DATAGRAMS_PER_WAKEUP = 16  # read while waiting, before the loop looks at other sockets again


@dataclass(frozen=True)
class Limits:
    """What bounds echo's work for clients it cannot trust to behave."""

    max_streams: int = 512
    idle_timeout: float = 300.0  # an echo stream with no traffic (a person may type slowly)
    http_timeout: float = 10.0  # a whoami or HTTP client that neither sends its request nor closes
    accept_backoff: float = 0.5  # accept paused this long when the process runs out of descriptors
    max_udp_pairs: int = 1024
    report_interval: float = 1.0  # how often grown UDP counts are reported


@dataclass
class StreamConn(AcceptedStream):
    """One accepted stream and what is still to be echoed, or answered."""

    kind: str = ECHO
    pending: bytearray = field(default_factory=bytearray)
    remaining: int | None = None
    mode: StreamKind | None = None  # echo only: framed or raw, once the first bytes tell
    head: bytearray = field(default_factory=bytearray)  # bytes not yet classified, or an HTTP request head
    seen: Seen | None = None  # a one-sided flow: the names echo reports it under
    scenario: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    done_writing: bool = False  # nothing more will be queued: close once flushed and the peer is done
    peer_eof: bool = False
    shut: bool = False


class EchoServer:
    """All of echo's sockets in one selector loop, so no report ever waits on another flow."""

    def __init__(
        self,
        reporter: Reporter,
        port: int,
        unix_path: str | None = None,
        *,
        whoami_port: int | None = None,
        http_port: int | None = None,
        limits: Limits = Limits(),
    ) -> None:
        self.reporter = reporter
        self.limits = limits
        self.stats: Counter[str] = Counter()
        self.selector = selectors.DefaultSelector()
        self.kinds: dict[socket.socket, str] = {}
        self.datagram_ports: dict[socket.socket, int] = {}  # asked once: not a getsockname per datagram
        self.ancillary = pktinfo_space()
        self.tcp = self.bind(socket.SOCK_STREAM, port, ECHO)
        self.port = self.tcp.getsockname()[1]
        self.udp = self.bind(socket.SOCK_DGRAM, self.port, ECHO)
        self.unix: socket.socket | None = None
        if unix_path:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.unix.bind(unix_path)
            self.kinds[self.unix] = ECHO
        self.whoami_port: int | None = None
        self.http_port: int | None = None
        if whoami_port is not None:
            self.whoami_port = self.bind(socket.SOCK_STREAM, whoami_port, WHOAMI).getsockname()[1]
            self.bind(socket.SOCK_DGRAM, self.whoami_port, WHOAMI)
        if http_port is not None:
            self.http_port = self.bind(socket.SOCK_STREAM, http_port, WHOAMI_HTTP).getsockname()[1]
        self.udp_pairs = UdpPairs(limits.max_udp_pairs)
        self.gate = AcceptGate(
            self.selector,
            {sock: kind for sock, kind in self.kinds.items() if sock.type == socket.SOCK_STREAM},
            limits.max_streams,
            limits.accept_backoff,
            self.stats,
        )
        # socklab's own datagrams: a record per peer name a flow shows, then counts (one by one when the table is full)
        self.udp_flows = UdpPairs(limits.max_udp_pairs, when_full="reported one by one")
        self.next_sweep = self.next_report = 0.0
        for sock in self.listeners():
            reporter.observe(sock, "bind", None, Role.SERVER, local=sock.getsockname())

    def bind(self, kind: int, port: int, serves: str) -> socket.socket:
        """A dual-stack socket on `port` for one of echo's services."""
        sock = create_dual_stack_socket(kind, port)
        if kind == socket.SOCK_DGRAM:
            enable_pktinfo(sock)
            self.datagram_ports[sock] = sock.getsockname()[1]
        self.kinds[sock] = serves
        return sock

    def listeners(self) -> list[socket.socket]:
        """The sockets echo was bound to."""
        return list(self.kinds)

    def stream_listeners(self) -> list[socket.socket]:
        """The listeners that accept."""
        return [s for s in self.kinds if s.type == socket.SOCK_STREAM]

    def listen(self) -> None:
        """Start accepting; until now a connection attempt is refused, which is what health checks see."""
        for sock in self.stream_listeners():
            sock.listen(128)
        for sock in self.listeners():
            sock.setblocking(False)
            if sock.type == socket.SOCK_DGRAM:
                self.selector.register(sock, selectors.EVENT_READ, self.kinds[sock])
        self.gate.open()

    def serve(self, stop: threading.Event) -> None:
        """Run the loop until `stop` is set."""
        while not stop.is_set():
            for key, events in self.selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if isinstance(key.data, StreamConn):
                    self.handle_stream(key.data, events)
                elif sock in self.datagram_ports:
                    for _ in range(DATAGRAMS_PER_WAKEUP):
                        if not self.handle_datagram(sock, key.data):
                            break
                else:
                    self.accept_stream(sock, key.data)
            now = time.monotonic()
            if now >= self.next_sweep:
                self.sweep(now)

    def accept_stream(self, listener: socket.socket, kind: str) -> None:
        """Accept one connection: echo waits for its first bytes, whoami answers at once."""
        if (accepted := self.gate.accept(listener)) is None:
            return
        sock, addr = accepted
        conn = StreamConn(sock, addr, kind=kind)
        self.selector.register(sock, selectors.EVENT_READ, conn)
        try:
            if kind == WHOAMI:
                self.start_oneside(conn, WHOAMI)
                assert conn.seen is not None
                conn.pending += conn.seen.line().encode()
                conn.done_writing = True
                self.flush_stream(conn)
            elif kind == WHOAMI_HTTP:
                self.start_oneside(conn, WHOAMI_HTTP)
        except OSError as exc:  # reset before we asked its names
            self.stats["errors"] += 1
            log.info("stream from %s failed: %s", addr, exc)
            self.close_stream(conn, f"error: {exc}")

    def start_oneside(self, conn: StreamConn, scenario: str) -> None:
        """Name a stream from a client that is not socklab's and report its names under a new flow id."""
        sock = conn.sock
        local, peer = sock.getsockname(), sock.getpeername()
        flow = new_flow_id()
        conn.flow, conn.scenario = flow, scenario
        conn.seen = Seen(flow, str(Proto.of(sock)), peer, local)
        evidence = {"evidence": first_evidence(conn.seen)}
        self.reporter.observe(sock, "accept", flow, Role.SERVER, remote=conn.accepted_from)
        self.reporter.observe(sock, "getsockname", flow, Role.SERVER, local=local)
        self.reporter.observe(sock, "getpeername", flow, Role.SERVER, remote=peer, extra=evidence)
        self.stats["oneside_flows"] += 1

    def finish_oneside(self, conn: StreamConn, why: str) -> None:
        """Report what a one-sided stream carried; its scenario marks the flow complete."""
        if conn.seen is None:
            return
        evidence = {**conn.evidence, "bytes_in": conn.bytes_in, "bytes_out": conn.bytes_out, "closed": why}
        extra = {"scenario": conn.scenario, "evidence": evidence}
        self.reporter.observe(conn.sock, "getpeername", conn.seen.flow, Role.SERVER, remote=conn.seen.peer, extra=extra)

    def handle_stream(self, conn: StreamConn, events: int) -> None:
        """Read, echo and write one connection's bytes; a broken peer closes only itself."""
        try:
            if events & selectors.EVENT_READ and not self.read_stream(conn):
                self.close_stream(conn, "eof")
                return
            self.flush_stream(conn)
        except ValueError as exc:
            self.stats["rejected"] += 1
            self.reporter.reject(conn.sock, "accept", conn.accepted_from, exc)
            self.close_stream(conn, "rejected")
        except OSError as exc:
            self.stats["errors"] += 1
            log.info("stream from %s failed: %s", conn.accepted_from, exc)
            self.close_stream(conn, f"error: {exc}")

    def read_stream(self, conn: StreamConn) -> bool:
        """Take in what arrived; False when the connection is over."""
        data = conn.sock.recv(65536)
        conn.last_active = time.monotonic()
        conn.bytes_in += len(data)
        if not data:
            return self.end_of_input(conn)
        if conn.shut and conn.bytes_in > MAX_PENDING:
            return False  # answered, yet it keeps sending: enough
        if conn.kind == WHOAMI_HTTP:
            self.read_http(conn, data)
        elif conn.kind == ECHO:
            self.read_echo(conn, data)
        return True  # whoami reads only to see the client go

    def end_of_input(self, conn: StreamConn) -> bool:
        """The client is done sending: finish what it is owed; False when nothing is owed."""
        conn.peer_eof = True
        if conn.kind == ECHO and conn.mode is None and conn.head:  # a lone 0x00, then EOF: raw after all
            conn.pending += self.settle(conn, StreamKind.RAW)
        if conn.kind == ECHO and conn.mode == StreamKind.FRAMED and conn.flow is not None:
            conn.remaining = 0  # close once everything pending is echoed
            return True
        if conn.kind == ECHO and conn.mode != StreamKind.RAW:
            self.stats["no_hello"] += 1
            return False
        conn.done_writing = conn.done_writing or conn.kind == ECHO
        return bool(conn.pending) or conn.done_writing

    def read_echo(self, conn: StreamConn, data: bytes) -> None:
        """Echo's bytes: classified on the first ones, then echoed raw or read as a hello and echoed."""
        if conn.mode is None:
            conn.head += data
            mode = classify_stream(bytes(conn.head))
            if mode is None:
                return
            data = self.settle(conn, mode)
        if conn.mode == StreamKind.RAW:
            conn.pending += data
            return
        if conn.flow is None:
            conn.frames.feed(data)
            hello = conn.frames.next_frame()
            if hello is None:
                return
            checked = unpack_hello(hello)
            conn.flow, conn.remaining = checked.flow, checked.length
            self.greet_stream(conn)
            data = conn.frames.take_rest()
        conn.pending += data
        if conn.remaining is not None:
            conn.remaining -= len(data)

    def settle(self, conn: StreamConn, mode: StreamKind) -> bytes:
        """Settle how an echo stream is spoken (a raw one becomes a one-sided flow); give back the held bytes."""
        conn.mode = mode
        held = bytes(conn.head)
        conn.head.clear()
        if mode == StreamKind.RAW:
            self.start_oneside(conn, RAW_ECHO)
        return held

    def read_http(self, conn: StreamConn, data: bytes) -> None:
        """Collect a request head and answer it once whole; garbage gets 400, an endless head 431."""
        if conn.done_writing:
            return  # answered already: what follows is read only to see the client go
        conn.head += data
        assert conn.seen is not None
        try:
            request = parse_request(bytes(conn.head))
        except HttpError as exc:
            self.stats["http_rejected"] += 1
            self.reporter.reject(conn.sock, "accept", conn.accepted_from, exc)
            conn.evidence.update(status=exc.status, error=str(exc))
            conn.pending += refuse(exc)
        else:
            if request is None:
                return
            status, reply = answer(request, conn.seen)
            conn.evidence.update(request_line=request.line, user_agent=request.headers.get("user-agent"), status=status)
            conn.pending += reply
        conn.head.clear()
        conn.done_writing = True

    def greet_stream(self, conn: StreamConn) -> None:
        """Report the accepted socket's names and send them back to the client."""
        sock, flow = conn.sock, conn.flow
        assert flow is not None
        local, peer = sock.getsockname(), sock.getpeername()
        self.reporter.observe(sock, "accept", flow, Role.SERVER, remote=conn.accepted_from)
        self.reporter.observe(sock, "getsockname", flow, Role.SERVER, local=local)
        self.reporter.observe(sock, "getpeername", flow, Role.SERVER, remote=peer)
        conn.pending += pack_greeting(Reflection(flow, peer, local))
        self.stats["flows"] += 1

    def flush_stream(self, conn: StreamConn) -> None:
        """Send what is pending; wait for writability instead of blocking, and stop reading when full."""
        if conn.pending:
            try:
                sent = conn.sock.send(conn.pending)
            except BlockingIOError:  # the peer's window is full: wait for EVENT_WRITE below
                sent = 0
            del conn.pending[:sent]
            conn.bytes_out += sent
            if sent:
                conn.last_active = time.monotonic()
        framed = conn.mode == StreamKind.FRAMED
        if not conn.pending and (
            (framed and conn.remaining is not None and conn.remaining <= 0)
            or (not framed and conn.done_writing and conn.peer_eof)
        ):
            self.close_stream(conn, "done")
            return
        if not conn.pending and conn.done_writing and not conn.shut:
            conn.sock.shutdown(socket.SHUT_WR)  # answered: the client sees EOF, we wait for its close
            conn.shut = True
        events = selectors.EVENT_WRITE if conn.pending else 0
        wants_more = conn.remaining is None or conn.remaining > 0
        if len(conn.pending) < MAX_PENDING and not conn.peer_eof and wants_more:
            events |= selectors.EVENT_READ
        self.selector.modify(conn.sock, events, conn)

    def close_stream(self, conn: StreamConn, why: str) -> None:
        """Forget one connection, report what a one-sided one carried, and accept again if the cap held us."""
        self.selector.unregister(conn.sock)
        self.finish_oneside(conn, why)
        conn.sock.close()
        self.gate.stream_closed()

    def sweep(self, now: float) -> None:
        """Close streams idle too long, report grown UDP counts, and accept again after a back-off."""
        self.next_sweep = now + SWEEP_INTERVAL
        for key in list(self.selector.get_map().values()):
            conn = key.data
            if isinstance(conn, StreamConn) and now - conn.last_active > self.timeout_for(conn):
                self.stats["idle_closed"] += 1
                self.close_stream(conn, "idle timeout")
        if now >= self.next_report:
            self.next_report = now + self.limits.report_interval
            for table in (self.udp_pairs, self.udp_flows):
                for pair in table.changed():
                    self.report_pair(pair)
                table.expire(now)
        self.gate.tick(now)

    def timeout_for(self, conn: StreamConn) -> float:
        """How long a stream may sit idle: an answered or whoami client briefly, an echo stream long."""
        return self.limits.idle_timeout if conn.kind == ECHO and not conn.shut else self.limits.http_timeout

    def handle_datagram(self, sock: socket.socket, kind: str) -> bool:
        """Answer one datagram: echo's own with the names, any other echoed as is or told whoami; False when
        none was waiting."""
        try:
            data, ancdata, _flags, addr = sock.recvmsg(MAX_DATAGRAM, self.ancillary)
        except BlockingIOError:
            return False
        except OSError as exc:
            log.warning("recvmsg failed: %s", exc)
            return False
        arrived = arrival_address(ancdata)
        local = (arrived, self.datagram_ports[sock], 0, 0) if arrived else sock.getsockname()
        if kind == WHOAMI:
            self.answer_oneside_datagram(sock, WHOAMI, data, addr, local)
            return True
        try:
            request = unpack_datagram(data)
        except ValueError:
            self.answer_oneside_datagram(sock, RAW_ECHO, data, addr, local)
            return True
        flow = request.flow
        pair, new = self.udp_flows.find(ECHO, addr, local, time.monotonic(), flow)
        told = pair is None or new  # a peer name this flow has not shown yet (or a full table): report it in full
        if told:
            self.reporter.observe(sock, "recvmsg", flow, Role.SERVER, local=local, remote=addr)
        reply = pack_reflection_datagram(Reflection(flow, addr, local, request.data))
        try:
            sock.sendto(reply, addr)
        except OSError as exc:
            log.warning("sendto %s failed: %s", addr, exc)
            if new:
                self.udp_flows.forget(addr, local, flow)
            return True
        if told:
            self.reporter.observe(sock, "sendto", flow, Role.SERVER, remote=addr)
        self.stats["datagrams"] += 1
        if pair is not None:
            pair.datagrams += 1
            pair.bytes_in += len(data)
            pair.bytes_out += len(reply)
            if new:
                pair.reported = pair.datagrams  # its records said one datagram; later ones are counted
        return True

    def answer_oneside_datagram(self, sock: socket.socket, scenario: str, data: bytes, addr: Name, local: Name) -> None:
        """Echo a datagram as is (raw) or tell whoami; count it in its (peer, local) pair's flow."""
        pair, new = self.udp_pairs.find(scenario, addr, local, time.monotonic())
        if new:
            assert pair is not None
            extra = {"scenario": scenario, "evidence": first_evidence(pair.seen)}
            self.reporter.observe(sock, "recvmsg", pair.seen.flow, Role.SERVER, local=local, remote=addr, extra=extra)
            self.stats["oneside_flows"] += 1
        reply = data if scenario == RAW_ECHO else Seen("", "udp", addr, local).line().encode()
        try:
            sock.sendto(reply, addr)
        except OSError as exc:
            log.warning("sendto %s failed: %s", addr, exc)
            return
        self.stats["oneside_datagrams"] += 1
        if pair is not None:
            pair.datagrams += 1
            pair.bytes_in += len(data)
            pair.bytes_out += len(reply)
            if new:
                self.report_pair(pair)

    def report_pair(self, pair: UdpPair) -> None:
        """Report a UDP flow's grown counts (at most once a report interval), one-sided or socklab's own; any of
        echo's UDP sockets tags the record alike (udp, ipv6)."""
        pair.reported = pair.datagrams
        extra = {"evidence": pair.counts()}
        self.reporter.observe(self.udp, "sendto", pair.seen.flow, Role.SERVER, remote=pair.seen.peer, extra=extra)

    def close(self) -> None:
        """Close every socket."""
        close_all(self.selector)
        for sock in self.listeners():
            sock.close()


def main(argv: list[str] | None = None) -> None:
    """Run echo: bind, register with the registry, then serve."""
    cfg = load_config("echo")
    parser = argparse.ArgumentParser(prog="socklab echo", description=main.__doc__)
    parser.add_argument("--port", type=int, default=cfg.echo_port)
    parser.add_argument("--whoami-port", type=int, default=cfg.whoami_port)
    parser.add_argument("--http-port", type=int, default=cfg.http_whoami_port)
    parser.add_argument("--unix", default=cfg.unix_path, help="Unix socket path ('' for none)")
    args = parser.parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)
    reporter.report_topology()
    server = EchoServer(reporter, args.port, args.unix or None, whoami_port=args.whoami_port, http_port=args.http_port)
    ports = {"tcp": server.port, "udp": server.port, "unix": args.unix}
    for address in cfg.registries:
        register(address, cfg.service, ports, reporter)
    stop = threading.Event()
    renewal = threading.Thread(
        target=renew_registration, args=(cfg.registries, cfg.service, ports, reporter, stop), daemon=True
    )
    renewal.start()
    server.listen()
    log.info(
        "echo serving on port %d, whoami on %s, HTTP whoami on %s, and %s",
        server.port,
        server.whoami_port,
        server.http_port,
        args.unix or "no Unix socket",
    )
    mark_ready(cfg.service, f"registered, listening on ports {server.port}, {server.whoami_port}, {server.http_port}")
    try:
        server.serve(threading.Event())
    finally:
        stop.set()
        server.close()
        reporter.close()
        context.term()
