"""echo: TCP, UDP and Unix echo on one dual-stack port; reports every name it sees and tells the
client how it saw it (the reflexive name). Its wire protocol is shared.echo_protocol.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

import zmq

from shared.config import load_config
from shared.echo_protocol import (
    MAX_DATAGRAM,
    Reflection,
    pack_greeting,
    pack_reflection_datagram,
    unpack_datagram,
    unpack_hello,
)
from shared.names import arrival_address, create_dual_stack_socket, enable_pktinfo, pktinfo_space
from shared.readiness import mark_ready
from shared.record import Role
from shared.registry_protocol import register
from shared.reporter import Reporter
from shared.streams import AcceptedStream, close_all

log = logging.getLogger(__name__)

MAX_PENDING = 256 * 1024


@dataclass
class StreamConn(AcceptedStream):
    """One accepted stream and what is still to be echoed."""

    pending: bytearray = field(default_factory=bytearray)
    remaining: int | None = None


class EchoServer:
    """All of echo's sockets in one selector loop, so no report ever waits on another flow."""

    def __init__(self, reporter: Reporter, port: int, unix_path: str | None = None) -> None:
        self.reporter = reporter
        self.stats: Counter[str] = Counter()
        self.selector = selectors.DefaultSelector()
        self.tcp = create_dual_stack_socket(socket.SOCK_STREAM, port)
        self.port = self.tcp.getsockname()[1]
        self.udp = create_dual_stack_socket(socket.SOCK_DGRAM, self.port)
        enable_pktinfo(self.udp)
        self.unix: socket.socket | None = None
        if unix_path:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.unix.bind(unix_path)
        for sock in self.listeners():
            reporter.observe(sock, "bind", None, Role.SERVER, local=sock.getsockname())

    def listeners(self) -> list[socket.socket]:
        """The sockets echo was bound to."""
        return [s for s in (self.tcp, self.udp, self.unix) if s is not None]

    def listen(self) -> None:
        """Start accepting; until now a connection attempt is refused, which is what health checks see."""
        self.tcp.listen(128)
        if self.unix is not None:
            self.unix.listen(128)
        for sock in self.listeners():
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, None)

    def serve(self, stop: threading.Event) -> None:
        """Run the loop until `stop` is set."""
        while not stop.is_set():
            for key, events in self.selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data is not None:
                    self.handle_stream(key.data, events)
                elif sock is self.udp:
                    self.handle_datagram()
                else:
                    self.accept_stream(sock)

    def accept_stream(self, listener: socket.socket) -> None:
        """Accept one connection; its names are reported once its hello names the flow."""
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            log.warning("accept failed: %s", exc)
            return
        sock.setblocking(False)
        self.stats["accepted"] += 1
        self.selector.register(sock, selectors.EVENT_READ, StreamConn(sock, addr))

    def handle_stream(self, conn: StreamConn, events: int) -> None:
        """Read, echo and write one connection's bytes; a broken peer closes only itself."""
        try:
            if events & selectors.EVENT_READ and not self.read_stream(conn):
                self.close_stream(conn)
                return
            self.flush_stream(conn)
        except ValueError as exc:
            self.stats["rejected"] += 1
            self.reporter.reject(conn.sock, "accept", conn.accepted_from, exc)
            self.close_stream(conn)
        except OSError as exc:
            self.stats["errors"] += 1
            log.info("stream from %s failed: %s", conn.accepted_from, exc)
            self.close_stream(conn)

    def read_stream(self, conn: StreamConn) -> bool:
        """Take in what arrived; False at EOF before a hello."""
        data = conn.sock.recv(65536)
        if not data:
            if conn.flow is None:
                self.stats["no_hello"] += 1
                return False
            conn.remaining = 0  # the client is done sending: close once everything pending is echoed
            return True
        if conn.flow is None:
            conn.frames.feed(data)
            hello = conn.frames.next_frame()
            if hello is None:
                return True
            checked = unpack_hello(hello)
            conn.flow, conn.remaining = checked.flow, checked.length
            self.greet_stream(conn)
            data = conn.frames.take_rest()
        conn.pending += data
        if conn.remaining is not None:
            conn.remaining -= len(data)
        return True

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
        if not conn.pending and conn.remaining is not None and conn.remaining <= 0:
            self.close_stream(conn)
            return
        events = selectors.EVENT_WRITE if conn.pending else 0
        if len(conn.pending) < MAX_PENDING and (conn.remaining is None or conn.remaining > 0):
            events |= selectors.EVENT_READ
        self.selector.modify(conn.sock, events, conn)

    def close_stream(self, conn: StreamConn) -> None:
        """Forget one connection."""
        self.selector.unregister(conn.sock)
        conn.sock.close()

    def handle_datagram(self) -> None:
        """Answer one datagram with the names it came from and arrived at."""
        try:
            data, ancdata, _flags, addr = self.udp.recvmsg(MAX_DATAGRAM, pktinfo_space())
        except OSError as exc:
            log.warning("recvmsg failed: %s", exc)
            return
        try:
            request = unpack_datagram(data)
        except ValueError as exc:
            self.stats["rejected"] += 1
            self.reporter.reject(self.udp, "recvmsg", addr, exc)
            return
        flow = request.flow
        arrived = arrival_address(ancdata)
        local = (arrived, self.port, 0, 0) if arrived else self.udp.getsockname()
        self.reporter.observe(self.udp, "recvmsg", flow, Role.SERVER, local=local, remote=addr)
        reply = pack_reflection_datagram(Reflection(flow, addr, local, request.data))
        try:
            self.udp.sendto(reply, addr)
        except OSError as exc:
            log.warning("sendto %s failed: %s", addr, exc)
            return
        self.reporter.observe(self.udp, "sendto", flow, Role.SERVER, remote=addr)
        self.stats["datagrams"] += 1

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
    parser.add_argument("--unix", default=cfg.unix_path, help="Unix socket path ('' for none)")
    args = parser.parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service)
    reporter.report_topology()
    server = EchoServer(reporter, args.port, args.unix or None)
    ports = {"tcp": server.port, "udp": server.port, "unix": args.unix}
    for address in cfg.registries:
        register(address, cfg.service, ports, reporter)
    server.listen()
    log.info("echo serving on port %d and %s", server.port, args.unix or "no Unix socket")
    mark_ready(cfg.service, f"registered, listening on port {server.port}")
    try:
        server.serve(threading.Event())
    finally:
        server.close()
        reporter.close()
        context.term()
