"""echo's data path vs a bare asyncio echo: 1 KiB over 4 TCP connections, and 64 B datagrams from 4 UDP sockets.

Each server runs alone in a child process; this process drives it, one message outstanding per
connection or socket, for a fixed time. echo reports to a live collector (a third process) exactly as
in the stack; the asyncio servers are the plainest echo Python has (a Protocol, a DatagramProtocol).
Both get the same bytes: a framed hello then raw 1 KiB chunks, or framed datagrams that asyncio echoes
as they are and echo answers with its reflection.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import selectors
import socket
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, cast

import zmq

from bench.common import Sample, cpu_seconds, free_port, interleave, run_collector, save, stop_flag, summarize
from services.echo import EchoServer
from shared.echo_protocol import Datagram, Hello, pack_datagram, pack_hello
from shared.framing import recv_frame
from shared.reporter import Reporter

CHUNK = b"x" * 1024
DATAGRAM_DATA = b"x" * 64
CONNECTIONS = 4
CLOSE_GRACE = 10.0  # seconds echo's reporter waits at the end for the collector to acknowledge what it holds


class SilentReporter(Reporter):
    """Reporting off: no record is made, packed or queued."""

    def report(self, record: Any) -> bool:
        return False

    def observe(self, *args: Any, **kwargs: Any) -> bool:
        return False


def run_echo(collector: str | None, ready: Queue[Any], stop: Event) -> None:
    """socklab's echo, reporting to `collector`, or with reporting off when None."""
    context = zmq.Context()
    kind = SilentReporter if collector is None else Reporter
    reporter = kind(context, collector or "tcp://127.0.0.1:9", "bench-echo")
    server = EchoServer(reporter, 0, None)
    server.listen()
    ready.put(server.port)
    server.serve(stop_flag(stop))
    server.close()
    reporter.close(grace=CLOSE_GRACE)
    # made: every record, sent or dropped; lost: dropped (the window was full: the collector fell behind) or never
    # acknowledged by the time the reporter closed
    ready.put((reporter.sent + reporter.window_drops, reporter.dropped + reporter.unacked))
    context.term()


class EchoProtocol(asyncio.Protocol):
    """The bare asyncio TCP echo."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoDatagramProtocol(asyncio.DatagramProtocol):
    """The bare asyncio UDP echo."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


def run_asyncio(ready: Queue[Any], stop: Event) -> None:
    """Both bare asyncio echoes on one port, until told to stop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        udp, _ = await loop.create_datagram_endpoint(EchoDatagramProtocol, local_addr=("127.0.0.1", port))
        ready.put(port)
        await loop.run_in_executor(None, stop.wait)
        udp.close()
        server.close()

    asyncio.run(main())
    ready.put((0, 0))


def tcp_round_trips(port: int, seconds: float, framed: bool) -> int:
    """1 KiB round trips over 4 connections for `seconds`; echo's connections start with a framed hello."""
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, int] = {}
    for i in range(CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if framed:
            sock.sendall(pack_hello(Hello(f"bench-tcp-{i}", 1 << 40)))
            recv_frame(sock)
        sock.setblocking(False)
        sock.send(CHUNK)
        pending[sock] = len(CHUNK)
        selector.register(sock, selectors.EVENT_READ)
    trips, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for key, _ in selector.select(1.0):
            sock = cast(socket.socket, key.fileobj)
            pending[sock] -= len(sock.recv(65536))
            if pending[sock] <= 0:
                trips += 1
                sock.send(CHUNK)
                pending[sock] += len(CHUNK)
    for sock in pending:
        sock.close()
    return trips


def udp_round_trips(port: int, seconds: float, flows: bool) -> int:
    """64 B datagram round trips from 4 sockets for `seconds`; with `flows`, every datagram a new flow."""
    selector = selectors.DefaultSelector()
    socks = []
    for i in range(CONNECTIONS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, f"bench-udp-{i}")
        socks.append(sock)
        sock.send(pack_datagram(Datagram(f"bench-udp-{i}", DATAGRAM_DATA)))
    trips, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        events = selector.select(0.2)
        if not events:  # a datagram lost on loopback under load: send again on every socket
            for sock in socks:
                sock.send(pack_datagram(Datagram("bench-udp-retry", DATAGRAM_DATA)))
        for key, _ in events:
            sock = cast(socket.socket, key.fileobj)
            sock.recv(65536)
            trips += 1
            sock.send(pack_datagram(Datagram(f"{key.data}-{trips}" if flows else key.data, DATAGRAM_DATA)))
    for sock in socks:
        sock.close()
    return trips


def measure(server: str, drive: Callable[[int], int], reporting: bool = True) -> Sample:
    """Start a server (echo with reporting on or off, or asyncio), drive it, and count its CPU time."""
    stop, halt = mp.Event(), mp.Event()  # echo stops first, so its last records can still be acknowledged
    ready: Queue[Any] = mp.Queue()
    helpers = []
    if server == "echo":
        collector = None
        if reporting:
            port = free_port()
            helpers.append(
                mp.Process(target=run_collector, args=(f"tcp://127.0.0.1:{port}", "tcp://127.0.0.1:*", halt))
            )
            collector = f"tcp://127.0.0.1:{port}"
        child = mp.Process(target=run_echo, args=(collector, ready, stop))
    else:
        child = mp.Process(target=run_asyncio, args=(ready, stop))
    for process in [*helpers, child]:
        process.start()
    port = ready.get(timeout=10)
    cpu0, start = cpu_seconds(child.pid or 0), time.perf_counter()
    trips = drive(port)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(child.pid or 0) - cpu0
    stop.set()
    made, lost = ready.get(timeout=CLOSE_GRACE + 10)
    child.join(10)
    halt.set()
    for process in helpers:
        process.join(10)
    return Sample(trips / elapsed, cpu / trips * 1e6, lost, made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each run drives its server")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    seconds = args.seconds
    tcp = interleave(
        {
            "echo (reporting to a collector)": lambda: measure("echo", lambda p: tcp_round_trips(p, seconds, True)),
            "asyncio Protocol": lambda: measure("asyncio", lambda p: tcp_round_trips(p, seconds, False)),
        },
        args.rounds,
    )
    tcp_summary = summarize("TCP echo, 1 KiB x 4 connections", "round trips/s", tcp, "asyncio Protocol")
    udp = interleave(
        {
            "echo (reporting to a collector)": lambda: measure("echo", lambda p: udp_round_trips(p, seconds, False)),
            "asyncio DatagramProtocol": lambda: measure("asyncio", lambda p: udp_round_trips(p, seconds, False)),
        },
        args.rounds,
    )
    udp_summary = summarize("UDP echo, 64 B x 4 sockets", "round trips/s", udp, "asyncio DatagramProtocol")
    save(
        {
            "echo_vs_asyncio_ratio": tcp_summary["echo (reporting to a collector)"]["ratio"],
            "udp_echo_vs_asyncio_ratio": udp_summary["echo (reporting to a collector)"]["ratio"],
            "echo_tcp": tcp_summary,
            "echo_udp": udp_summary,
        }
    )


if __name__ == "__main__":
    main()
