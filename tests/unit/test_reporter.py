"""The reporter: records reach a real PULL socket, and a full queue drops and counts instead of blocking."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import zmq

from shared.record import Proto, Role, unpack_observation
from shared.reporter import Reporter
from tests.conftest import LiveCollector, ZmqSocket

pytestmark = pytest.mark.unit


def test_records_arrive_with_the_sockets_own_proto_and_family(
    zmq_context: zmq.Context,
    zmq_socket: ZmqSocket,
) -> None:
    pull = zmq_socket(zmq.PULL)
    pull.bind("tcp://127.0.0.1:*")
    reporter = Reporter(zmq_context, pull.getsockopt_string(zmq.LAST_ENDPOINT), "unit")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        assert reporter.observe(sock, "bind", None, Role.SERVER, local=("::", 9, 0, 0))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        assert reporter.observe(sock, "connect", "f", Role.CLIENT, remote="/run/e.sock", extra={"k": 1})
    first, second = unpack_observation(pull.recv()), unpack_observation(pull.recv())
    assert (first.service, first.host) == ("unit", socket.gethostname())
    assert (first.proto, first.family, first.method, first.flow, first.local) == (
        Proto.UDP,
        "ipv6",
        "bind",
        None,
        ("::", 9, 0, 0),
    )
    assert (second.proto, second.family, second.role, second.remote, second.extra) == (
        Proto.UNIX,
        "unix",
        Role.CLIENT,
        "/run/e.sock",
        {"k": 1},
    )
    assert (reporter.sent, reporter.dropped) == (2, 0)
    reporter.close()


def test_full_queue_drops_and_the_count_travels_in_later_records(
    zmq_context: zmq.Context, zmq_socket: ZmqSocket, tmp_path: Path
) -> None:
    endpoint = f"ipc://{tmp_path}/collector"  # nobody binds it until the test does: no port to race for
    reporter = Reporter(zmq_context, endpoint, "unit", hwm=5)
    with socket.socket() as sock:
        results = [reporter.observe(sock, "connect", "f", Role.CLIENT) for _ in range(200)]
    assert results.count(False) == reporter.dropped > 0, "nobody reads: the queue fills, then records drop"
    assert results.count(True) == reporter.sent and reporter.sent + reporter.dropped == 200
    assert results[: reporter.sent] == [True] * reporter.sent, "records drop only once the queue is full"
    pull = zmq_socket(zmq.PULL)
    pull.bind(endpoint)
    queued = [unpack_observation(pull.recv()) for _ in range(reporter.sent)]
    assert [q.drops for q in queued] == [0] * len(queued), "queued before any drop"
    dropped_before = reporter.dropped
    with socket.socket() as sock:
        assert reporter.observe(sock, "connect", "f", Role.CLIENT)
    latest = unpack_observation(pull.recv())
    assert latest.drops == dropped_before, "the next record that fits says how many were lost"
    reporter.close()


def test_reject_reports_who_sent_garbage(reporter: Reporter, live_collector: LiveCollector) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sender = ("::ffff:192.0.2.9", 4000, 0, 0)
        reporter.reject(sock, "recvmsg", sender, ValueError("datagram has no flow id"))
    [record] = live_collector.wait_for_records(lambda o: "rejected" in o.extra, what="rejection record")
    assert (record.method, record.role, record.flow) == ("recvmsg", Role.SERVER, None)
    assert record.remote == ("::ffff:192.0.2.9", 4000, 0, 0)
    assert record.extra == {"rejected": "datagram has no flow id"}
