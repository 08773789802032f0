"""The registry in-process on loopback: requests, what it observes, STUN with RFC 5780, and garbage."""

from __future__ import annotations

import socket

import pytest

from services.registry import RegistryServer, request
from shared import stun
from shared.framing import pack_frame, recv_frame
from shared.reporter import Reporter
from tests.conftest import LiveCollector, run_in_thread, wait_until

pytestmark = pytest.mark.unit


def test_register_keeps_reported_and_observed_names(registry_server: RegistryServer, reporter: Reporter) -> None:
    address = ("127.0.0.1", registry_server.port)
    reply = request(address, {"op": "register", "name": "echo", "ports": {"tcp": 7007}}, reporter)
    [entry] = request(address, {"op": "lookup", "name": "echo"}, reporter)["registrations"]
    assert entry["ports"] == {"tcp": 7007}
    assert entry["observed"] == reply["observed"]
    assert entry["observed"][0] == "::ffff:127.0.0.1" and entry["reported"][0] == "127.0.0.1"
    assert entry["observed"][1] == entry["reported"][1], "no NAT on loopback: same port both ways"
    assert [r["name"] for r in request(address, {"op": "list"}, reporter)["registrations"]] == ["echo"]
    with pytest.raises(LookupError, match="no registration for 'nobody'"):
        request(address, {"op": "lookup", "name": "nobody"}, reporter)


def test_requests_are_reported_as_joined_flows(
    registry_server: RegistryServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    request(("127.0.0.1", registry_server.port), {"op": "list"}, reporter)
    flows = wait_until(
        lambda: [o.flow for o in live_collector.collector.observations if o.method == "accept" and o.flow],
        "the registry's accept record",
    )
    flow = live_collector.wait_for_flow(flows[0])
    assert flow.verdict == "direct"


def test_bad_requests_get_errors_and_garbage_closes_only_its_connection(
    registry_server: RegistryServer, reporter: Reporter
) -> None:
    address = ("127.0.0.1", registry_server.port)
    with socket.create_connection(address, timeout=5) as sock:
        for bad in ({"op": "list"}, {"op": "dance", "flow": "x"}, {"op": "register", "flow": "y", "name": ""}):
            sock.sendall(pack_frame(bad))
            reply = recv_frame(sock)
            assert reply["ok"] is False and reply["error"]
        sock.sendall(pack_frame({"op": "list", "flow": "z"}))
        assert recv_frame(sock)["ok"] is True, "the same connection still serves"
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"\xff" * 8)
        assert sock.recv(10) == b""
    stats = request(address, {"op": "stats"}, reporter)["stats"]
    assert stats["bad_requests"] == 3 and stats["rejected"] == 1


def binding(sock: socket.socket, destination: tuple[str, int], change: int = 0) -> tuple[stun.Message, tuple[str, int]]:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    if change:
        request.attributes[stun.Attr.CHANGE_REQUEST] = change
    sock.sendto(stun.pack_message(request), destination)
    data, source = sock.recvfrom(2048)
    response = stun.unpack_message(data)
    assert response.transaction_id == request.transaction_id
    return response, source


@pytest.fixture
def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_stun_binding_says_the_clients_own_name(registry_server: RegistryServer, udp: socket.socket) -> None:
    primary = ("127.0.0.1", registry_server.stun_port)
    response, source = binding(udp, primary)
    assert response.cls == stun.Class.RESPONSE
    assert response.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == udp.getsockname()
    assert response.attributes[stun.Attr.RESPONSE_ORIGIN] == source == primary
    assert response.attributes[stun.Attr.OTHER_ADDRESS] == ("127.0.0.2", registry_server.stun.alt_port)
    assert stun.Attr.FINGERPRINT in response.attributes


@pytest.mark.parametrize(
    ("change", "host", "alternate_port"),
    [
        (stun.CHANGE_IP, "127.0.0.2", False),
        (stun.CHANGE_PORT, "127.0.0.1", True),
        (stun.CHANGE_IP | stun.CHANGE_PORT, "127.0.0.2", True),
    ],
)
def test_change_request_answers_from_the_other_name(
    registry_server: RegistryServer, udp: socket.socket, change: int, host: str, alternate_port: bool
) -> None:
    response, source = binding(udp, ("127.0.0.1", registry_server.stun_port), change)
    port = registry_server.stun.alt_port if alternate_port else registry_server.stun_port
    assert source == (host, port), "recvfrom on the client says where the answer really came from"
    assert response.attributes[stun.Attr.RESPONSE_ORIGIN] == source


def test_classic_rfc3489_request_gets_mapped_address(registry_server: RegistryServer, udp: socket.socket) -> None:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, cookie=0x0BADF00D)
    udp.sendto(stun.pack_message(request), ("127.0.0.1", registry_server.stun_port))
    response = stun.unpack_message(udp.recvfrom(2048)[0])
    assert response.cookie == 0x0BADF00D
    assert response.attributes[stun.Attr.MAPPED_ADDRESS] == udp.getsockname()
    assert response.attributes[stun.Attr.CHANGED_ADDRESS] == ("127.0.0.2", registry_server.stun.alt_port)


def test_change_request_without_alternate_is_a_420(reporter: Reporter, udp: socket.socket) -> None:
    server = RegistryServer(reporter, 0, 0)
    halt = run_in_thread(server.serve)
    try:
        response, _ = binding(udp, ("127.0.0.1", server.stun_port), stun.CHANGE_IP)
    finally:
        halt()
        server.close()
    assert response.cls == stun.Class.ERROR
    assert response.attributes[stun.Attr.ERROR_CODE][0] == 420
    assert response.attributes[stun.Attr.UNKNOWN_ATTRIBUTES] == [stun.Attr.CHANGE_REQUEST]


def test_unknown_comprehension_required_attribute_is_a_420(registry_server: RegistryServer, udp: socket.socket) -> None:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, attributes={0x0042: b"\0\0\0\0"})
    udp.sendto(stun.pack_message(request), ("127.0.0.1", registry_server.stun_port))
    response = stun.unpack_message(udp.recvfrom(2048)[0])
    assert response.attributes[stun.Attr.ERROR_CODE][0] == 420
    assert response.attributes[stun.Attr.UNKNOWN_ATTRIBUTES] == [0x0042]


def test_malformed_stun_is_counted_and_the_server_keeps_answering(
    registry_server: RegistryServer, udp: socket.socket
) -> None:
    primary = ("127.0.0.1", registry_server.stun_port)
    for packet in (
        b"\x00\x01",
        b"\xff" * 20,
        stun.pack_message(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)),
    ):
        udp.sendto(packet, primary)
    wait_until(lambda: registry_server.stun.stats["stun_rejected"] == 3, "three rejected STUN packets")
    response, _ = binding(udp, primary)
    assert response.cls == stun.Class.RESPONSE
