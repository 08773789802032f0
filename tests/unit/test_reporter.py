"""The reporter: records reach a real PULL socket, and a full queue drops and counts instead of blocking."""

from __future__ import annotations

import socket

import pytest
import zmq

from shared.record import Role, unpack_observation
from shared.reporter import Reporter
from tests.conftest import free_port

pytestmark = pytest.mark.unit


def test_records_arrive_with_the_sockets_own_proto_and_family(zmq_context: zmq.Context) -> None:
    pull = zmq_context.socket(zmq.PULL)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pull.bind(endpoint)
    reporter = Reporter(zmq_context, endpoint, "unit")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        assert reporter.observe(sock, "bind", None, Role.SERVER, local=("::", 9, 0, 0))
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    obs = unpack_observation(pull.recv())
    assert (obs.service, obs.proto, obs.family, obs.method, obs.local) == (
        "unit",
        "udp",
        "ipv6",
        "bind",
        ("::", 9, 0, 0),
    )
    assert obs.host == socket.gethostname()
    reporter.close()
    pull.close()


def test_full_queue_drops_and_the_count_travels_in_later_records(zmq_context: zmq.Context) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    reporter = Reporter(zmq_context, endpoint, "unit", hwm=5)
    with socket.socket() as sock:
        results = [reporter.observe(sock, "connect", "f", Role.CLIENT) for _ in range(200)]
    assert results.count(False) == reporter.dropped > 0, "nobody reads: the queue fills, then records drop"
    assert reporter.sent + reporter.dropped == 200
    pull = zmq_context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    pull.bind(endpoint)
    queued = [unpack_observation(pull.recv()) for _ in range(reporter.sent)]
    dropped_before = reporter.dropped
    with socket.socket() as sock:
        assert reporter.observe(sock, "connect", "f", Role.CLIENT)
    latest = unpack_observation(pull.recv())
    assert [q.drops for q in queued] == [0] * len(queued)
    assert latest.drops == dropped_before, "the next record that fits says how many were lost"
    reporter.close()
    pull.close()
