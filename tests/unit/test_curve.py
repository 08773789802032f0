"""CurveZMQ at the collector: the stack's key gets in, an unknown key or none is refused and counted."""

from __future__ import annotations

import shutil
import socket
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth

from shared.collector_protocol import query_collector
from shared.curve import (
    AUTHORIZED,
    HOST,
    MALFORMED,
    NO_KEY,
    UNKNOWN_KEY,
    WRONG_SERVER_KEY,
    load_client_keys,
    make_keys,
    refusals,
    secure_client,
)
from shared.polling import wait_for
from shared.record import Family, Method, Observation, Proto, Role, pack_observation
from shared.reporter import Reporter
from tests.conftest import LiveCollector, ZmqSocket

pytestmark = pytest.mark.unit


def record(flow: str, service: str = "forger") -> Observation:
    """One client record, as any reporter would send it."""
    return Observation(service, "h", flow, Role.CLIENT, Proto.TCP, Family.IPV4, Method.CONNECT)


def stranger_keys(tmp_path: Path, keys: Path, name: str = "stranger") -> Path:
    """A client directory with the stack's server key and a pair of its own the collector never saw."""
    directory = tmp_path / name
    directory.mkdir()
    shutil.copy(keys / "server.key", directory / "server.key")
    zmq.auth.create_certificates(directory, "client")
    return directory


def wait_for_refusal(reason: str, before: dict[str, int]) -> int:
    """Wait until the collector has counted one more refusal for `reason`; return the new count."""
    return wait_for(lambda: refusals().get(reason, 0) > before.get(reason, 0) and refusals()[reason], reason)


def test_make_keys_makes_them_once_for_every_user_of_the_volume(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert make_keys(keys)
    member, host = load_client_keys(keys), load_client_keys(keys / HOST)
    assert member.server_public == host.server_public and member.public != host.public
    assert sorted(p.name for p in (keys / AUTHORIZED).iterdir()) == ["host.key", "member.key"]
    assert stat.S_IMODE((keys / "client.key_secret").stat().st_mode) == 0o644, "the router's root reads it"
    assert stat.S_IMODE((keys / HOST).stat().st_mode) == 0o755
    assert not make_keys(keys), "a second start keeps the stack's keys"
    assert load_client_keys(keys) == member
    assert [p.name for p in keys.iterdir() if p.name.startswith(".")] == [], "no half-made keys left"


def test_a_client_waits_for_keys_and_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no CurveZMQ keys in {tmp_path} after 0.1 s"):
        load_client_keys(tmp_path, timeout=0.1)


def test_the_stacks_and_the_hosts_keys_are_let_in(
    live_collector: LiveCollector, zmq_context: zmq.Context, curve_keys: Path
) -> None:
    before = refusals()
    member = Reporter(zmq_context, live_collector.ingest, "member")
    host = Reporter(zmq_context, live_collector.ingest, "host", keys=str(curve_keys / HOST))
    try:
        for reporter in (member, host):
            assert reporter.report(record(f"f-{reporter.service}", reporter.service))
        live_collector.wait_for_records(count=2)
        assert query_collector(zmq_context, live_collector.query, {"op": "ping"}, keys=str(curve_keys / HOST))["ok"]
    finally:
        member.close()
        host.close()
    assert refusals() == before


def test_an_unknown_key_is_refused_counted_and_its_records_never_stored(
    live_collector: LiveCollector, zmq_context: zmq.Context, zmq_socket: ZmqSocket, tmp_path: Path, curve_keys: Path
) -> None:
    before = refusals()
    push = zmq_socket(zmq.DEALER)
    secure_client(push, stranger_keys(tmp_path, curve_keys))
    push.connect(live_collector.ingest)
    push.send(pack_observation(record("forged")), zmq.NOBLOCK)
    assert wait_for_refusal(UNKNOWN_KEY, before) > before.get(UNKNOWN_KEY, 0)
    with pytest.raises(TimeoutError):
        query_collector(zmq_context, live_collector.query, {"op": "ping"}, 0.5, keys=str(tmp_path / "stranger"))
    assert live_collector.collector.report().refused[UNKNOWN_KEY] >= before.get(UNKNOWN_KEY, 0) + 2
    assert live_collector.records() == []


def test_no_key_is_refused_and_counted(live_collector: LiveCollector, zmq_socket: ZmqSocket) -> None:
    before = refusals()
    push = zmq_socket(zmq.DEALER)
    push.connect(live_collector.ingest)
    push.send(pack_observation(record("forged")), zmq.NOBLOCK)
    assert wait_for_refusal(NO_KEY, before) > before.get(NO_KEY, 0)
    assert live_collector.collector.rejected == 0, "refused at the door: the record was never read"
    assert live_collector.records() == []


def test_a_wrong_server_key_fails_the_handshake_and_is_counted_as_such(
    live_collector: LiveCollector, zmq_socket: ZmqSocket, tmp_path: Path
) -> None:
    before = refusals()
    other = tmp_path / "other"
    make_keys(other)
    push = zmq_socket(zmq.DEALER)
    secure_client(push, other)
    push.connect(live_collector.ingest)
    assert wait_for_refusal(WRONG_SERVER_KEY, before) > before.get(WRONG_SERVER_KEY, 0)
    assert refusals().get(NO_KEY, 0) == before.get(NO_KEY, 0), "it has a key: not counted as keyless"


def tcp_address(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


# A ZMTP 3.0 greeting that asks for CURVE (RFC 23: signature, version 3.0, mechanism, as-server 0, filler),
# then a short command frame whose body is no CurveZMQ HELLO.
CURVE_GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\0") + b"\0" + bytes(31)
NOT_A_HELLO = b"\x04\x10" + b"junk" * 4


def test_a_curve_command_that_does_not_parse_is_counted_malformed(live_collector: LiveCollector) -> None:
    before = refusals()
    with socket.create_connection(tcp_address(live_collector.ingest)) as sock:
        sock.sendall(CURVE_GREETING + NOT_A_HELLO)
        assert wait_for_refusal(MALFORMED, before) > before.get(MALFORMED, 0)


def test_a_connection_closed_before_its_handshake_presented_no_key(live_collector: LiveCollector) -> None:
    before = refusals()
    socket.create_connection(tcp_address(live_collector.ingest)).close()  # what a port scan or `nc -z` does
    assert wait_for_refusal(NO_KEY, before) > before.get(NO_KEY, 0)


def test_a_key_added_to_authorized_is_let_in_without_a_restart(
    live_collector: LiveCollector, zmq_context: zmq.Context, tmp_path: Path, curve_keys: Path
) -> None:
    laptop = stranger_keys(tmp_path, curve_keys, "laptop")
    shutil.copy(laptop / "client.key", curve_keys / AUTHORIZED / "laptop.key")
    try:
        assert query_collector(zmq_context, live_collector.query, {"op": "ping"}, keys=str(laptop))["ok"]
    finally:
        (curve_keys / AUTHORIZED / "laptop.key").unlink()
