"""Run inside client-wan by test_bad_input: garbage to echo, the registry and the collector from another container.

argv: echo's and the registry's wan addresses. Prints one JSON line: the registry's stats before and after.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from typing import Any

import msgpack
import zmq

from shared.curve import secure_client
from shared.delivery import MessageKind, pack_message
from shared.framing import pack_frame, recv_frame
from shared.registry_protocol import request
from shared.reporter import Reporter

ECHO_PORT, REGISTRY_PORT, STUN_PORT = 7007, 5300, 3478
BAD_FRAMES = (struct.pack("!I", 1) + b"\x01", struct.pack("!I", 1) + b"\xc1", pack_frame({"length": 3}))
RAW = (b"GET / HTTP/1.0\r\n\r\n", struct.pack("!I", 1 << 30), b"\xc1 not msgpack", msgpack.packb([1, 2, 3]))
NOT_STUN = (b"\x00\x01\x00\x00", b"\xff" * 20, b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"\x00" * 12)
BAD_REQUESTS = ({"op": "lookup"}, {"op": "dance", "flow": "x"}, {"op": "lookup", "flow": "y"})


def closed_by_server(address: tuple[str, int], payload: bytes) -> None:
    """Send what is not a frame; the server must close the stream."""
    with socket.create_connection(address, timeout=3) as sock:
        sock.sendall(payload)
        assert sock.recv(100) == b"", "server should close a stream that is not frames"


def echoed_as_is(address: tuple[str, int], payload: bytes) -> None:
    """Send what is not socklab's protocol; echo must echo it byte for byte (any client is welcome)."""
    with socket.create_connection(address, timeout=3) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data == payload, f"echo answered {data!r} to {payload!r}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(3)
        udp.sendto(payload, address)
        assert udp.recv(65536) == payload


def send_garbage(echo: str, registry: str) -> None:
    """Three bad frames to echo (raw bytes it echoes), one bad stream, three bad requests and three bad STUN
    packets to the registry."""
    for payload in BAD_FRAMES:
        closed_by_server((echo, ECHO_PORT), payload)
    for payload in RAW:
        echoed_as_is((echo, ECHO_PORT), payload)
    closed_by_server((registry, REGISTRY_PORT), b"\xff" * 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for packet in NOT_STUN:
            udp.sendto(packet, (registry, STUN_PORT))
    with socket.create_connection((registry, REGISTRY_PORT), timeout=3) as sock:
        for bad in BAD_REQUESTS:
            sock.sendall(pack_frame(bad))
            assert recv_frame(sock)["ok"] is False


def send_bad_records(context: zmq.Context, collector: str) -> None:
    """Two messages the collector must reject: no delivery header, and a numbered map that is no record."""
    dealer = context.socket(zmq.DEALER)
    secure_client(dealer)  # a stack member's bad messages: let in, then rejected
    dealer.connect(collector)
    dealer.send(b"\xc1 not a record")
    dealer.send(pack_message(MessageKind.RECORD, os.urandom(16), 1, msgpack.packb({"v": 1, "service": "x"})))
    dealer.close(linger=3000)


def main() -> None:
    """Garbage everywhere, with the registry's counters read before and after."""
    echo, registry = sys.argv[1], sys.argv[2]
    context = zmq.Context()
    reporter = Reporter(context, "tcp://collector:5555", "garbage")
    try:
        stats: list[dict[str, Any]] = [request((registry, REGISTRY_PORT), {"op": "stats"}, reporter)["stats"]]
        send_garbage(echo, registry)
        send_bad_records(context, "tcp://collector:5555")
        stats.append(request((registry, REGISTRY_PORT), {"op": "stats"}, reporter)["stats"])
    finally:
        reporter.close()
        context.term()
    print(json.dumps({"before": stats[0], "after": stats[1]}))


main()
