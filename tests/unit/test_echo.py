"""echo in-process on loopback: what its hello reply and its records say, and garbage it survives."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from typing import Any

import msgpack
import pytest

from services.echo import MAX_PENDING, EchoServer, StreamConn
from shared.framing import pack_frame, recv_frame
from shared.names import name_from_wire
from shared.record import Method, Role
from tests.conftest import LiveCollector
from tests.helpers import host_port, wait_for

pytestmark = pytest.mark.unit

SEEN_AS = {"127.0.0.1": "::ffff:127.0.0.1", "::1": "::1"}
PAYLOAD = bytes(range(256)) * 40


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def read_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def stream_round(fam: int, address: Any, flow: str, hello: dict[str, Any], payload: bytes) -> tuple[Any, ...]:
    """Connect, send the hello and the payload, return (hello reply, echoed bytes, my name)."""
    with socket.socket(fam, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(pack_frame({"flow": flow, **hello}) + payload)
        reply = recv_frame(sock)
        return reply, read_to_eof(sock), sock.getsockname()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_hello_reply_names_the_client_and_the_payload_comes_back(
    echo_server: EchoServer, live_collector: LiveCollector, host: str
) -> None:
    address = (host, echo_server.port)
    reply, echoed, mine = stream_round(family(host), address, "t1", {"length": len(PAYLOAD)}, PAYLOAD)
    assert echoed == PAYLOAD
    peer, local = (SEEN_AS[host], mine[1], 0, 0), (SEEN_AS[host], echo_server.port, 0, 0)
    assert reply == {"flow": "t1", "peer": list(peer), "local": list(local)}
    records = live_collector.wait_for_records(lambda o: o.flow == "t1", count=3, what="echo's records of t1")
    assert {o.method: (o.local, o.remote) for o in records} == {
        "accept": (None, peer),
        "getsockname": (local, None),
        "getpeername": (None, peer),
    }
    assert {(o.role, o.proto, o.family) for o in records} == {(Role.SERVER, "tcp", "ipv6")}


def test_unix_hello_reply_names_are_paths(echo_server: EchoServer, live_collector: LiveCollector) -> None:
    assert echo_server.unix is not None
    path = echo_server.unix.getsockname()
    reply, echoed, mine = stream_round(socket.AF_UNIX, path, "u1", {"length": len(PAYLOAD)}, PAYLOAD)
    assert echoed == PAYLOAD and mine == ""
    assert reply == {"flow": "u1", "peer": "", "local": path}
    records = live_collector.wait_for_records(lambda o: o.flow == "u1", count=3, what="echo's records of u1")
    assert {(o.proto, o.family) for o in records} == {("unix", "unix")}


def test_without_length_echo_runs_until_the_client_half_closes(echo_server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        sock.sendall(pack_frame({"flow": "eof"}) + PAYLOAD)
        sock.shutdown(socket.SHUT_WR)
        assert recv_frame(sock)["flow"] == "eof"
        assert read_to_eof(sock) == PAYLOAD


def held_back(server: EchoServer) -> int:
    """Bytes echo has read but not yet written back."""
    conns = [key.data for key in list(server.selector.get_map().values()) if isinstance(key.data, StreamConn)]
    return sum(len(conn.pending) for conn in conns)


def test_a_slow_reader_gets_every_byte_back_even_after_it_half_closes(echo_server: EchoServer) -> None:
    payload = random.Random(1).randbytes(2 * 1024 * 1024)
    echo_server.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit it
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", echo_server.port))

        def send() -> None:
            sock.sendall(pack_frame({"flow": "slow"}) + payload)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_for(
            lambda: echo_server.stats["errors"] or held_back(echo_server) >= MAX_PENDING,
            "echo to hold back a full buffer for the client that does not read",
        )
        assert echo_server.stats["errors"] == 0, "a full send buffer is a reason to wait, not a failure"
        assert recv_frame(sock)["flow"] == "slow"
        echoed = read_to_eof(sock)
        sender.join(5)
    assert len(echoed) == len(payload) and echoed == payload


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("connected", [True, False], ids=["connected", "unconnected"])
def test_datagram_reply_and_record_name_the_arrival_address(
    echo_server: EchoServer, live_collector: LiveCollector, host: str, connected: bool
) -> None:
    address, flow = (host, echo_server.port), f"d-{host}-{connected}"
    request = msgpack.packb({"flow": flow, "data": b"ping"}, use_bin_type=True)
    with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        if connected:
            sock.connect(address)
            sock.send(request)
            data, source = sock.recv(65535), sock.getpeername()
        else:
            sock.sendto(request, address)
            data, source = sock.recvfrom(65535)
        peer = (SEEN_AS[host], sock.getsockname()[1], 0, 0)
    arrived = (SEEN_AS[host], echo_server.port, 0, 0)
    assert msgpack.unpackb(data, raw=False) == {
        "flow": flow,
        "peer": list(peer),
        "local": list(arrived),
        "data": b"ping",
    }
    assert source[:2] == address, "the answer leaves from the address the request arrived at"
    records = live_collector.wait_for_records(lambda o: o.flow == flow, count=2, what=f"records of {flow}")
    by_method = {o.method: o for o in records}
    recvmsg = by_method[Method.RECVMSG]
    assert (recvmsg.local, recvmsg.remote) == (arrived, peer), "the arrival address, not the wildcard '::'"
    assert by_method[Method.SENDTO].remote == peer


def rejected_from(live_collector: LiveCollector, name: Any) -> list[Any]:
    return live_collector.wait_for_records(
        lambda o: "rejected" in o.extra and o.remote == name, what=f"a rejection record for {name}"
    )


def assert_closed_by_server(sock: socket.socket) -> None:
    with contextlib.suppress(ConnectionResetError):  # closed with garbage unread: a reset says the same
        assert sock.recv(100) == b""


RANDOM = random.Random(0).randbytes(512)


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (struct.pack("!I", 1) + b"\xc1", "frame is not msgpack"),
        (struct.pack("!I", 1) + b"\x07", "frame is a int, not a map"),
        (pack_frame({"length": 3}), "hello frame has no flow id"),
        (pack_frame({"flow": "g", "length": -1}), "hello frame length is not a count of bytes"),
    ],
    ids=["not-msgpack", "not-a-map", "no-flow", "bad-length"],
)
def test_stream_garbage_is_counted_reported_and_survived(
    echo_server: EchoServer, live_collector: LiveCollector, garbage: bytes, reason: str
) -> None:
    assert garbage[:2] == b"\0\0", "a stream starting otherwise is raw, and echoed"
    address = ("127.0.0.1", echo_server.port)
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(garbage)
        assert_closed_by_server(sock)
        me = ("::ffff:127.0.0.1", sock.getsockname()[1], 0, 0)
    assert echo_server.stats["rejected"] == 1
    [record] = rejected_from(live_collector, me)
    assert reason in record.extra["rejected"] and record.method == "accept" and record.flow is None
    reply, echoed, _ = stream_round(socket.AF_INET, address, "after", {"length": 4}, b"good")
    assert (reply["flow"], echoed) == ("after", b"good")


@pytest.mark.parametrize(
    "datagram",
    [
        RANDOM,
        msgpack.packb([1]),
        msgpack.packb({"flow": 1, "data": b""}),
        msgpack.packb({"flow": "f", "data": "text"}),
        b"",
    ],
    ids=["random", "not-a-map", "no-flow", "no-bytes", "empty"],
)
def test_a_datagram_that_is_not_echos_own_comes_back_as_is(echo_server: EchoServer, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(datagram, ("127.0.0.1", echo_server.port))
        assert sock.recv(65535) == datagram
        me = ("::ffff:127.0.0.1", sock.getsockname()[1], 0, 0)
        sock.sendto(msgpack.packb({"flow": "after", "data": b"good"}), ("127.0.0.1", echo_server.port))
        reply = msgpack.unpackb(sock.recv(65535), raw=False)
    assert (reply["flow"], reply["data"], name_from_wire(reply["peer"])) == ("after", b"good", me)
    assert echo_server.stats["rejected"] == 0


def test_a_connection_without_hello_reports_nothing(
    echo_server: EchoServer,
    live_collector: LiveCollector,
) -> None:
    with socket.create_connection(("127.0.0.1", echo_server.port)) as health_check:
        silent_port = health_check.getsockname()[1]
    wait_for(lambda: echo_server.stats["no_hello"] == 1, "echo to see the health check's EOF")
    stream_round(socket.AF_INET, ("127.0.0.1", echo_server.port), "later", {"length": 0}, b"")
    live_collector.wait_for_records(lambda o: o.flow == "later", count=3, what="the later flow's records")
    records = live_collector.records()
    assert {o.flow for o in records} == {None, "later"}, "records come in order: none of the silent one"
    assert not [o for o in records if isinstance(o.remote, tuple) and o.remote[1] == silent_port]
    binds = [o for o in records if o.method == "bind"]
    echo, whoami, http = echo_server.port, echo_server.whoami_port, echo_server.http_port
    assert echo_server.unix is not None and len({echo, whoami, http}) == 3
    bound = sorted((o.proto, o.local if isinstance(o.local, str) else host_port(o.local)[1]) for o in binds)
    unix = ("unix", echo_server.unix.getsockname())
    assert bound == sorted([("tcp", echo), ("udp", echo), unix, ("tcp", whoami), ("udp", whoami), ("tcp", http)])
    assert all(o.flow is None for o in binds)


def test_a_flows_datagrams_are_reported_once_per_peer_name_then_counted(
    echo_server: EchoServer, live_collector: LiveCollector
) -> None:
    flow, request = "many", msgpack.packb({"flow": "many", "data": b"x" * 64}, use_bin_type=True)
    peers = []
    for sends in (50, 3):  # two sockets: the same flow seen from two peer names (as after a NAT rebinding)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.1", echo_server.port))
            for _ in range(sends):
                sock.send(request)
                sock.recv(65535)
            peers.append(("::ffff:127.0.0.1", sock.getsockname()[1], 0, 0))
    counted = live_collector.wait_for_records(
        lambda o: o.flow == flow and "evidence" in o.extra, count=2, what="both peers' counts"
    )
    assert {o.remote: o.extra["evidence"]["datagrams"] for o in counted} == {peers[0]: 50, peers[1]: 3}
    records = live_collector.records(flow)
    told = [(o.method, o.remote) for o in records if "evidence" not in o.extra]
    assert sorted(told) == sorted((m, p) for p in peers for m in (Method.RECVMSG, Method.SENDTO)), (
        "each peer name in full once, not a record per datagram"
    )
