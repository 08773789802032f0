"""echo in-process on loopback: TCP, UDP and Unix flows, the names it reports, and garbage it survives."""

from __future__ import annotations

import socket
import struct

import msgpack
import pytest

from services.client import Target, run_stream, run_udp_connected, run_udp_sendto
from services.echo import EchoServer
from services.flows import FlowVerdict
from shared.reporter import Reporter
from tests.conftest import LiveCollector, wait_until

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_flow_is_direct_and_both_ends_agree(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector, host: str
) -> None:
    outcome = run_stream(reporter, Target("tcp", (host, echo_server.port)))
    flow = live_collector.wait_for_flow(outcome.flow)
    assert flow.client and flow.server
    assert flow.verdict == FlowVerdict.DIRECT
    assert flow.client.sockname == outcome.local and flow.client.peername == outcome.remote
    assert outcome.reflexive == flow.server.peername, "echo told the client the name it saw"
    expected_peer = ("::ffff:127.0.0.1" if host == "127.0.0.1" else "::1", outcome.local[1], 0, 0)
    assert flow.server.peername == expected_peer


def test_udp_arrival_address_is_concrete_not_the_wildcard(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    for run in (run_udp_connected, run_udp_sendto):
        outcome = run(reporter, Target("udp", ("127.0.0.1", echo_server.port)))
        flow = live_collector.wait_for_flow(outcome.flow)
        assert flow.server and flow.verdict == FlowVerdict.DIRECT
        assert flow.server.sockname == ("::ffff:127.0.0.1", echo_server.port, 0, 0)
    wanted = {"recvmsg", "sendto", "recvfrom", "connect", "bind"}
    wait_until(lambda: wanted <= {o.method for o in live_collector.collector.observations}, f"records of {wanted}")


def test_unix_flow_names_are_paths(echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector) -> None:
    assert echo_server.unix is not None
    path = echo_server.unix.getsockname()
    outcome = run_stream(reporter, Target("unix", path))
    flow = live_collector.wait_for_flow(outcome.flow)
    assert flow.client and flow.server
    assert (flow.client.sockname, flow.client.peername) == ("", path)
    assert (flow.server.peername, flow.server.sockname) == ("", path)
    assert flow.verdict == FlowVerdict.DIRECT


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.0\r\n\r\n",
        struct.pack("!I", 1 << 30),
        struct.pack("!I", 1) + b"\x07",
        struct.pack("!I", 1) + b"\x80",
    ],
)
def test_stream_garbage_is_counted_reported_and_survived(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        sock.sendall(garbage)
        assert sock.recv(100) == b"", "echo closes a stream that is not frames"
    assert echo_server.stats["rejected"] == 1
    wait_until(
        lambda: any("rejected" in o.extra for o in live_collector.collector.observations), "the rejection record"
    )
    outcome = run_stream(reporter, Target("tcp", ("127.0.0.1", echo_server.port)))
    assert live_collector.wait_for_flow(outcome.flow).verdict == FlowVerdict.DIRECT


@pytest.mark.parametrize(
    "garbage", [b"\xc1", msgpack.packb([1]), msgpack.packb({"flow": 1}), msgpack.packb({"flow": "f"})]
)
def test_datagram_garbage_is_counted_and_survived(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector, garbage: bytes
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(garbage, ("127.0.0.1", echo_server.port))
    wait_until(lambda: echo_server.stats["rejected"] == 1, "echo to count the bad datagram")
    outcome = run_udp_connected(reporter, Target("udp", ("127.0.0.1", echo_server.port)))
    assert live_collector.wait_for_flow(outcome.flow).verdict == FlowVerdict.DIRECT


def test_a_connection_without_hello_reports_nothing(echo_server: EchoServer, live_collector: LiveCollector) -> None:
    live_collector.wait_for_records(len(echo_server.listeners()))
    before = len(live_collector.collector.observations)
    socket.create_connection(("127.0.0.1", echo_server.port)).close()
    wait_until(lambda: echo_server.stats["no_hello"] == 1, "echo to see the health check's EOF")
    assert len(live_collector.collector.observations) == before
