"""The registry in-process on loopback: requests, what it observes, STUN Binding, and garbage it survives."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from services.registry import SWEEP_EVERY, RegistryServer
from shared import stun
from shared.framing import pack_frame, recv_frame
from shared.names import endpoint
from shared.record import Family
from shared.registry_protocol import (
    REGISTRATION_TTL,
    Registration,
    list_registrations,
    renew_registration,
    request,
)
from shared.reporter import REJECT_BURST, REJECT_RATE, Reporter
from tests.conftest import LiveCollector, Loops, MakeReporter, serving
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

SEEN_AS = {"127.0.0.1": "::ffff:127.0.0.1", "::1": "::1"}


def test_register_lookup_list_and_stats_round_trip(
    registry_server: RegistryServer,
    reporter: Reporter,
) -> None:
    v4, v6 = ("127.0.0.1", registry_server.port), ("::1", registry_server.port)
    ports = {"tcp": 7007, "udp": 7007, "unix": "/run/e.sock"}
    reply = request(v4, {"op": "register", "name": "echo", "ports": ports}, reporter)
    request(v6, {"op": "register", "name": "echo", "ports": ports}, reporter)
    request(v4, {"op": "register", "name": "other"}, reporter)
    entries = request(v4, {"op": "lookup", "name": "echo"}, reporter)["registrations"]
    assert [e["observed"][0] for e in entries] == ["::ffff:127.0.0.1", "::1"], "one registration per family"
    assert entries[0]["observed"] == reply["observed"] and all(e["ports"] == ports for e in entries)
    listed = request(v6, {"op": "list"}, reporter)["registrations"]
    assert sorted(e["name"] for e in listed) == ["echo", "echo", "other"]
    stats = request(v4, {"op": "stats"}, reporter)["stats"]
    assert {k: stats[k] for k in ("op_register", "op_lookup", "op_list", "op_stats")} == {
        "op_register": 3,
        "op_lookup": 1,
        "op_list": 1,
        "op_stats": 1,
    }
    with pytest.raises(LookupError, match="no registration for 'nobody'"):
        request(v4, {"op": "lookup", "name": "nobody"}, reporter)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_reported_and_observed_names_are_kept_side_by_side(
    registry_server: RegistryServer, reporter: Reporter, host: str
) -> None:
    request((host, registry_server.port), {"op": "register", "name": "me"}, reporter)
    [entry] = registry_server.registrations.values()
    assert isinstance(entry.reported, tuple) and isinstance(entry.observed, tuple)
    assert entry.reported[:2] == (host, entry.observed[1]), "what the registrant's getsockname said"
    assert entry.observed == (SEEN_AS[host], entry.reported[1], 0, 0), "what the registry's socket saw"


def test_each_request_is_a_flow_both_ends_report(
    registry_server: RegistryServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    request(("127.0.0.1", registry_server.port), {"op": "list"}, reporter)
    [client_end] = live_collector.wait_for_records(lambda o: o.extra.get("scenario") == "registry-list")
    assert client_end.flow is not None
    flow = live_collector.wait_for_flow(client_end.flow)
    assert flow.verdict == "direct" and flow.server is not None
    assert flow.server.peername == ("::ffff:127.0.0.1", client_end.local[1], 0, 0)  # type: ignore[index]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"op": "list"}, "request has no flow id"),
        ({"op": "list", "flow": ""}, "request has no flow id"),
        ({"op": "dance", "flow": "x"}, "unknown op 'dance'"),
        ({"op": "register", "flow": "x", "name": ""}, "register needs a name"),
        ({"op": "register", "flow": "x"}, "register needs a name of 1 to 255 characters"),
        ({"op": "register", "flow": "x", "name": "n" * 256}, "register needs a name of 1 to 255 characters"),
        ({"op": "register", "flow": "x", "name": "n", "ports": [1]}, "register ports must be a map"),
        ({"op": "register", "flow": "x", "name": "n", "ports": {"tcp": 70000}}, "port numbers or paths"),
        ({"op": "register", "flow": "x", "name": "n", "ports": {str(i): i for i in range(17)}}, "at most 16"),
        ({"op": "list", "flow": "x", "offset": -1}, "list offset must be a count, not -1"),
        ({"op": "register", "flow": "x", "name": "n", "reported": [1]}, "name must have 2 or 4 items"),
        ({"op": "lookup", "flow": "x"}, "'name'"),
    ],
)
def test_bad_requests_get_an_error_are_counted_and_the_connection_still_serves(
    registry_server: RegistryServer, bad: dict[str, object], error: str
) -> None:
    with socket.create_connection(("127.0.0.1", registry_server.port), timeout=5) as sock:
        sock.sendall(pack_frame(bad))
        reply = recv_frame(sock)
        assert reply["ok"] is False and error in reply["error"]
        sock.sendall(pack_frame({"op": "stats", "flow": "y"}))
        assert recv_frame(sock)["stats"]["bad_requests"] == 1
    assert not registry_server.registrations


def test_garbage_closes_only_its_own_connection(registry_server: RegistryServer) -> None:
    address = ("127.0.0.1", registry_server.port)
    with socket.create_connection(address, 5) as good, socket.create_connection(address, 5) as bad:
        good.sendall(pack_frame({"op": "list", "flow": "g"}))
        assert recv_frame(good)["ok"] is True
        bad.sendall(b"\xff" * 8)
        assert bad.recv(10) == b"", "a stream that is not frames is closed"
        good.sendall(pack_frame({"op": "stats", "flow": "g"}))
        assert recv_frame(good)["stats"]["rejected"] == 1, "the other connection still serves"


@pytest.fixture(params=["127.0.0.1", "::1"])
def udp(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    host = request.param
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(5)
        yield sock


def exchange(sock: socket.socket, message: stun.Message, port: int) -> stun.Message:
    sock.sendto(stun.pack_message(message), (sock.getsockname()[0], port))
    response = stun.unpack_message(sock.recvfrom(2048)[0])
    assert response.transaction_id == message.transaction_id
    return response


def test_stun_binding_answers_with_the_clients_own_name(
    registry_server: RegistryServer,
    udp: socket.socket,
) -> None:
    response = exchange(udp, stun.Message(stun.Method.BINDING, stun.Class.REQUEST), registry_server.stun_port)
    assert (response.cls, response.cookie) == (stun.Class.RESPONSE, stun.MAGIC_COOKIE)
    assert response.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == udp.getsockname()[:2]
    assert stun.Attr.MAPPED_ADDRESS not in response.attributes
    assert stun.Attr.FINGERPRINT in response.attributes, "verified by unpack_message"


def test_classic_rfc3489_request_gets_mapped_address(
    registry_server: RegistryServer,
    udp: socket.socket,
) -> None:
    classic = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, cookie=0x0BADF00D)
    response = exchange(udp, classic, registry_server.stun_port)
    assert response.classic and response.cookie == 0x0BADF00D
    assert response.attributes[stun.Attr.MAPPED_ADDRESS] == udp.getsockname()[:2]
    assert stun.Attr.XOR_MAPPED_ADDRESS not in response.attributes


def test_unknown_comprehension_required_attribute_is_a_420(
    registry_server: RegistryServer,
    udp: socket.socket,
) -> None:
    unknown = {0x0042: b"\0\0\0\0", 0x8042: b""}
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes=unknown)
    response = exchange(udp, message, registry_server.stun_port)
    assert response.cls == stun.Class.ERROR
    assert response.attributes[stun.Attr.ERROR_CODE] == (420, "Unknown Attribute")
    assert response.attributes[stun.Attr.UNKNOWN_ATTRIBUTES] == [0x0042], "0x8042 is optional"


def test_malformed_stun_is_counted_reported_and_the_server_keeps_answering(
    registry_server: RegistryServer, live_collector: LiveCollector, udp: socket.socket
) -> None:
    destination = (udp.getsockname()[0], registry_server.stun_port)
    packets = [
        b"\x00\x01",
        b"\xff" * 20,
        stun.pack_message(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)),
        stun.pack_message(stun.Message(0x002, stun.Class.REQUEST)),
    ]
    for packet in packets:
        udp.sendto(packet, destination)
    wait_for(lambda: registry_server.stun.stats["stun_rejected"] == len(packets), "bad packets counted")
    records = live_collector.wait_for_records(lambda o: "rejected" in o.extra, len(packets), "rejections")
    assert {o.method for o in records} == {"recvfrom"}
    assert {endpoint(o.remote) for o in records if o.remote} == {udp.getsockname()[:2]}
    assert {o.extra["rejected"] for o in records} == {
        "STUN message length is less than 20 bytes",
        "STUN message type has its two top bits set",
        "STUN message is not a Binding request",
    }
    response = exchange(udp, stun.Message(stun.Method.BINDING, stun.Class.REQUEST), registry_server.stun_port)
    assert response.cls == stun.Class.RESPONSE


def test_a_flood_of_garbage_datagrams_is_counted_whole_but_reported_and_logged_at_a_bounded_rate(
    registry_server: RegistryServer,
    live_collector: LiveCollector,
    udp: socket.socket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    destination = (udp.getsockname()[0], registry_server.stun_port)
    for _ in range(1000):
        udp.sendto(b"\xff" * 20, destination)
    time.sleep(1.0)  # those the socket's buffer held are read by now
    flood = registry_server.stun.stats["stun_rejected"]
    assert flood >= 100
    udp.sendto(b"\xff" * 20, destination)  # after a quiet second: reported, with the count of those that were not
    wait_for(lambda: registry_server.stun.stats["stun_rejected"] == flood + 1, "the last one counted")
    records = live_collector.wait_for_records(
        lambda o: "unreported" in o.extra, 1, "a rejection carrying the unreported count"
    )
    stored = [o for o in live_collector.records() if "rejected" in o.extra]
    assert len(stored) <= REJECT_BURST + 2 * REJECT_RATE, "records stored stay bounded"
    assert len(stored) + sum(o.extra.get("unreported", 0) for o in stored) == flood + 1, records
    assert live_collector.collector.report().service_rejects["registry"] == flood + 1, "the report counts them all"
    logged = [r for r in caplog.records if "rejected recvfrom input" in r.getMessage()]
    assert len(logged) == len(stored), "a log line per reported rejection only"


def test_a_list_past_one_frame_comes_in_pages_and_holds_every_registration(
    registry_server: RegistryServer, reporter: Reporter
) -> None:
    address = ("127.0.0.1", registry_server.port)
    for i in range(700):  # ≈ 560 registrations filled the 64 KiB frame a single reply had
        registry_server.registrations[(f"svc-{i}", Family.IPV4)] = Registration(
            f"svc-{i}", ("10.0.0.1", 1000 + i), ("::ffff:10.0.0.1", 1000 + i, 0, 0), {"tcp": 7007}
        )
    first = request(address, {"op": "list"}, reporter)
    assert 0 < len(first["registrations"]) < 700 and first["next"] == len(first["registrations"])
    listed = list_registrations(address, reporter)
    assert sorted(r.name for r in listed) == sorted(f"svc-{i}" for i in range(700))
    assert registry_server.stats["rejected"] == 0 and registry_server.stats["reply_too_large"] == 0


def test_registrations_expire_and_past_the_cap_a_new_name_is_refused(
    registry_server: RegistryServer, reporter: Reporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = ("127.0.0.1", registry_server.port)
    request(address, {"op": "register", "name": "old"}, reporter)
    registry_server.registrations[("old", Family.IPV4)].time -= REGISTRATION_TTL + 1
    request(address, {"op": "register", "name": "new"}, reporter)
    assert [name for name, _ in registry_server.registrations] == ["new"]
    assert registry_server.stats["expired"] == 1
    monkeypatch.setattr("services.registry.MAX_REGISTRATIONS", 1)
    with pytest.raises(LookupError, match="the registry holds 1 registrations: full"):
        request(address, {"op": "register", "name": "another"}, reporter)
    request(address, {"op": "register", "name": "new"}, reporter)  # renewing one held is not a new one
    assert registry_server.stats["registry_full"] == 1


def test_an_idle_registry_sleeps_until_its_next_sweep_or_rendezvous_deadline(make_reporter: MakeReporter) -> None:
    server = RegistryServer(make_reporter("registry"), 0, 0)
    try:
        now = time.monotonic()
        server.next_sweep = now + 60
        assert server.next_due(now) == SWEEP_EVERY, "never longer than a sweep's period"
        server.next_sweep = now + 0.1
        assert server.next_due(now) == pytest.approx(0.1)
        server.parked.append(SimpleNamespace(deadline=now + 0.02))  # type: ignore[arg-type]
        assert server.next_due(now) == pytest.approx(0.02), "a rendezvous answered when its wait is over"
        assert server.next_due(now + 1) == 0.0, "overdue: at once"
    finally:
        server.close()


def test_idle_request_streams_are_closed_and_past_the_cap_clients_wait(
    make_reporter: MakeReporter, loops: Loops
) -> None:
    for server in serving(loops, RegistryServer(make_reporter("registry"), 0, 0, max_streams=2, idle_timeout=0.5)):
        address = ("127.0.0.1", server.port)
        held = [socket.create_connection(address, timeout=5) for _ in range(2)]
        with socket.create_connection(address, timeout=5) as late:
            late.sendall(pack_frame({"op": "stats", "flow": "late"}))
            started = time.monotonic()
            assert recv_frame(late)["ok"], "served once the idle streams were closed"
            assert time.monotonic() - started > 0.3, "it waited in the backlog until then"
        assert [sock.recv(10) for sock in held] == [b"", b""]
        assert server.stats["idle_closed"] >= 2 and server.stats["stream_cap"] >= 1
        for sock in held:
            sock.close()


def test_a_registrant_renews_before_its_registration_expires_and_survives_a_registry_outage(
    registry_server: RegistryServer, reporter: Reporter
) -> None:
    address = ("127.0.0.1", registry_server.port)
    request(address, {"op": "register", "name": "echo"}, reporter)
    first = registry_server.registrations[("echo", Family.IPV4)].time
    stop = threading.Event()
    unreachable = ("127.0.0.1", 1)  # a refused connection only delays the next renewal
    renewal = threading.Thread(
        target=renew_registration, args=([unreachable, address], "echo", {}, reporter, stop, 0.05), daemon=True
    )
    renewal.start()
    try:
        wait_for(lambda: registry_server.registrations[("echo", Family.IPV4)].time > first, "a renewed registration")
    finally:
        stop.set()
        renewal.join(timeout=5)
    assert not renewal.is_alive()
