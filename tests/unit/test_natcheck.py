"""RFC 5780 on loopback: the registry's STUN side with 127.0.0.1 as primary and 127.0.0.2 as alternate, and natcheck."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from services import natcheck
from services.registry import RegistryServer
from services.report import format_table
from services.stun_server import check_addresses
from shared import stun
from shared.config import load_config
from shared.nat import Behaviour
from shared.record import Method, Role
from shared.report_model import FlowVerdict, NatCheck, NatCheckResult, Report
from shared.reporter import Reporter
from tests.conftest import LiveCollector, Loops, MakeReporter
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

PRIMARY, ALTERNATE = "127.0.0.1", "127.0.0.2"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
NATCHECK_FIELDS = {"mapping", "filtering", "port_preserved", "hairpin", "mapped_address", "local_address", "server"}


def run_registry(
    reporter: Reporter, addresses: tuple[str, ...], loops: Loops
) -> tuple[RegistryServer, Callable[[], None]]:
    server = RegistryServer(reporter, 0, 0, stun_addresses=addresses, stun_alt_port=0)
    halt = loops.start(server.serve)

    def stop() -> None:
        halt()
        server.close()

    return server, stop


@pytest.fixture
def rfc5780_registry(make_reporter: MakeReporter, loops: Loops) -> Iterator[RegistryServer]:
    """Four IPv4 STUN sockets (127.0.0.1 and 127.0.0.2, two ports each) and an IPv6 one."""
    server, stop = run_registry(make_reporter("registry"), (PRIMARY, ALTERNATE), loops)
    yield server
    stop()


@pytest.fixture
def plain_registry(make_reporter: MakeReporter, loops: Loops) -> Iterator[RegistryServer]:
    """Today's registry: one dual-stack STUN socket, no alternate."""
    server, stop = run_registry(make_reporter("registry"), (), loops)
    yield server
    stop()


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((PRIMARY, 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def names(server: RegistryServer) -> dict[str, tuple[str, int]]:
    """The registry's four STUN names, as RFC 5780 calls them: A1:P1, A1:P2, A2:P1, A2:P2."""
    p1, p2 = server.stun.port, server.stun.alt_port
    return {"A1:P1": (PRIMARY, p1), "A1:P2": (PRIMARY, p2), "A2:P1": (ALTERNATE, p1), "A2:P2": (ALTERNATE, p2)}


def exchange(sock: socket.socket, request: stun.Message, destination: Any) -> tuple[stun.Message, Any]:
    """One request and its answer, with the answer's source as recvfrom tells it."""
    sock.sendto(stun.pack_message(request), destination)
    data, source = sock.recvfrom(2048)
    response = stun.unpack_message(data)
    assert response.transaction_id == request.transaction_id
    return response, source


# shared.stun: the new helper


def test_binding_request_with_change_request_is_byte_exact() -> None:
    request = stun.binding_request(stun.CHANGE_IP | stun.CHANGE_PORT, TID)
    data = stun.pack_message(request)
    assert data == bytes.fromhex("000100082112a442" + TID.hex() + "0003000400000006")
    again = stun.unpack_message(data)
    assert again.attributes == {stun.Attr.CHANGE_REQUEST: 6} and again.transaction_id == TID
    assert stun.pack_message(again) == data
    with_fingerprint = stun.pack_message(request, fingerprint=True)
    assert stun.pack_message(stun.unpack_message(with_fingerprint), fingerprint=True) == with_fingerprint


def test_binding_request_without_change_has_no_attributes() -> None:
    data = stun.pack_message(stun.binding_request(transaction_id=TID))
    assert data == bytes.fromhex("000100002112a442" + TID.hex())
    assert stun.pack_message(stun.unpack_message(data)) == data
    assert stun.binding_request().transaction_id != stun.binding_request().transaction_id


def test_binding_request_refuses_flags_rfc5780_does_not_define() -> None:
    with pytest.raises(ValueError, match=r"^CHANGE-REQUEST flags must be CHANGE_IP and/or CHANGE_PORT, not 0x1$"):
        stun.binding_request(0x01)


# configuration


def test_config_reads_stun_addresses_and_alternate_port() -> None:
    env = {"SOCKLAB_STUN_ADDRESSES": " 198.51.100.3, 198.51.100.4 ", "SOCKLAB_STUN_ALT_PORT": "4000"}
    cfg = load_config("registry", env)
    assert cfg.stun_addresses == ("198.51.100.3", "198.51.100.4") and cfg.stun_alt_port == 4000
    default = load_config("registry", {})
    assert default.stun_addresses == () and default.stun_alt_port == 3479


@pytest.mark.parametrize(
    ("addresses", "port", "alt_port", "error"),
    [
        (("10.0.0.1",), 3478, 3479, "STUN addresses must be two, primary,alternate: got 1"),
        (("10.0.0.1", "2001:db8::1"), 3478, 3479, "STUN address '2001:db8::1' is not IPv4"),
        (("10.0.0.1", "10.0.0.1"), 3478, 3479, "STUN alternate address must differ from the primary 10.0.0.1"),
        (("10.0.0.1", "10.0.0.2"), 3478, 3478, "STUN alternate port must differ from the primary port 3478"),
    ],
)
def test_bad_stun_addresses_are_refused(addresses: tuple[str, ...], port: int, alt_port: int, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        check_addresses(addresses, port, alt_port)


# the registry's STUN side


@pytest.mark.parametrize(("arrival", "other"), [("A1:P1", "A2:P2"), ("A1:P2", "A2:P1"), ("A2:P1", "A1:P2")])
def test_response_says_where_it_came_from_and_where_the_other_pair_is(
    rfc5780_registry: RegistryServer, udp: socket.socket, arrival: str, other: str
) -> None:
    name = names(rfc5780_registry)
    response, source = exchange(udp, stun.binding_request(), name[arrival])
    attrs = response.attributes
    assert response.cls == stun.Class.RESPONSE
    assert attrs[stun.Attr.XOR_MAPPED_ADDRESS] == attrs[stun.Attr.MAPPED_ADDRESS] == udp.getsockname()
    assert attrs[stun.Attr.RESPONSE_ORIGIN] == source == name[arrival]
    assert attrs[stun.Attr.OTHER_ADDRESS] == name[other], "OTHER-ADDRESS is Ca:Cp of the name the request reached"
    assert attrs[stun.Attr.SOFTWARE] and stun.Attr.FINGERPRINT in attrs


@pytest.mark.parametrize(
    ("arrival", "change", "answer_from"),
    [
        ("A1:P1", stun.CHANGE_IP, "A2:P1"),
        ("A1:P1", stun.CHANGE_PORT, "A1:P2"),
        ("A1:P1", stun.CHANGE_IP | stun.CHANGE_PORT, "A2:P2"),
        ("A2:P2", stun.CHANGE_IP, "A1:P2"),
        ("A2:P2", stun.CHANGE_IP | stun.CHANGE_PORT, "A1:P1"),
    ],
)
def test_change_request_answer_really_comes_from_the_changed_name(
    rfc5780_registry: RegistryServer, udp: socket.socket, arrival: str, change: int, answer_from: str
) -> None:
    name = names(rfc5780_registry)
    response, source = exchange(udp, stun.binding_request(change), name[arrival])
    assert source == name[answer_from], "recvfrom on the client says where the answer came from"
    assert response.attributes[stun.Attr.RESPONSE_ORIGIN] == source
    assert response.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == udp.getsockname()


def test_classic_rfc3489_request_gets_its_own_names_and_rfc5780s(
    rfc5780_registry: RegistryServer, udp: socket.socket
) -> None:
    name = names(rfc5780_registry)
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, {stun.Attr.CHANGE_REQUEST: 0}, 0x0BADF00D)
    response, source = exchange(udp, request, name["A1:P1"])
    attrs = response.attributes
    assert response.cookie == 0x0BADF00D and stun.Attr.XOR_MAPPED_ADDRESS not in attrs
    assert attrs[stun.Attr.MAPPED_ADDRESS] == udp.getsockname()
    assert attrs[stun.Attr.SOURCE_ADDRESS] == attrs[stun.Attr.RESPONSE_ORIGIN] == source
    assert attrs[stun.Attr.CHANGED_ADDRESS] == attrs[stun.Attr.OTHER_ADDRESS] == name["A2:P2"]


def test_plain_registry_answers_as_before(plain_registry: RegistryServer, udp: socket.socket) -> None:
    response, _ = exchange(udp, stun.binding_request(), (PRIMARY, plain_registry.stun_port))
    assert set(response.attributes) == {stun.Attr.XOR_MAPPED_ADDRESS, stun.Attr.SOFTWARE, stun.Attr.FINGERPRINT}
    assert response.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == udp.getsockname()


def test_change_request_without_alternate_is_a_420(plain_registry: RegistryServer, udp: socket.socket) -> None:
    response, source = exchange(udp, stun.binding_request(stun.CHANGE_PORT), (PRIMARY, plain_registry.stun_port))
    assert response.cls == stun.Class.ERROR and source[1] == plain_registry.stun_port
    assert response.attributes[stun.Attr.ERROR_CODE][0] == 420
    wait_for(lambda: plain_registry.stun.stats["stun_errors"] == 1, "the error response counted")


def test_ipv6_client_gets_its_name_and_no_alternate(rfc5780_registry: RegistryServer) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    with sock:
        sock.settimeout(5)
        destination = ("::1", rfc5780_registry.stun_port)
        response, _ = exchange(sock, stun.binding_request(), destination)
        assert response.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == sock.getsockname()[:2]
        assert stun.Attr.OTHER_ADDRESS not in response.attributes, "the alternate pair is IPv4 only"
        error, _ = exchange(sock, stun.binding_request(stun.CHANGE_IP), destination)
        assert error.attributes[stun.Attr.ERROR_CODE][0] == 420


def test_every_transaction_is_reported_under_its_flow(
    rfc5780_registry: RegistryServer, udp: socket.socket, live_collector: LiveCollector
) -> None:
    name = names(rfc5780_registry)
    _, source = exchange(udp, stun.binding_request(stun.CHANGE_IP, TID), name["A1:P1"])
    flow = stun.flow_id(TID)
    records = wait_for(lambda: len(live_collector.records(flow)) >= 2 and live_collector.records(flow), flow)
    by_method = {r.method: r for r in records}
    assert {r.role for r in records} == {Role.SERVER} and set(by_method) == {"recvfrom", "sendto"}
    assert by_method[Method.RECVFROM].remote == by_method[Method.SENDTO].remote == udp.getsockname()
    assert by_method[Method.RECVFROM].local == name["A1:P1"]
    assert by_method[Method.SENDTO].local == source == name["A2:P1"]


def test_malformed_packets_are_counted_reported_and_the_server_keeps_answering(
    rfc5780_registry: RegistryServer, udp: socket.socket, live_collector: LiveCollector
) -> None:
    primary = names(rfc5780_registry)["A1:P1"]
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    for packet in (b"\x00\x01", b"\xff" * 20, stun.pack_message(response)):
        udp.sendto(packet, primary)
    wait_for(lambda: rfc5780_registry.stun.stats["stun_rejected"] == 3, "three rejected STUN packets")
    rejected = wait_for(
        lambda: [r for r in live_collector.records() if "rejected" in r.extra and r.remote == udp.getsockname()],
        "the rejections in the collector",
    )
    assert {r.method for r in rejected} == {"recvfrom"} and rejected[0].extra["rejected"]
    answer, _ = exchange(udp, stun.binding_request(), primary)
    assert answer.cls == stun.Class.RESPONSE


# natcheck


def test_natcheck_on_loopback_finds_no_nat(
    rfc5780_registry: RegistryServer, make_reporter: Callable[[str], Reporter], live_collector: LiveCollector
) -> None:
    name = names(rfc5780_registry)
    result = natcheck.run_natcheck(make_reporter("natcheck"), name["A1:P1"], timeout=0.3, attempts=2)
    assert result.mapping == Behaviour.NONE
    assert result.filtering == Behaviour.ENDPOINT_INDEPENDENT, "nothing filters on loopback"
    assert result.port_preserved is True and result.hairpin is True
    assert result.mapped_address == result.local_address and result.local_address[0] == PRIMARY
    assert result.other_address == name["A2:P2"]
    first, both = result.tests
    assert first.name == "mapping-1 primary" and first.response_origin == name["A1:P1"]
    assert both.name == "filtering-2 change address and port"
    assert both.source == both.response_origin == name["A2:P2"]

    def all_records_in() -> bool:
        """natcheck's summary is its last record; the registry reports each sendto after sending it."""
        records = live_collector.records()
        asked = {r.flow for r in records if r.service == "registry" and r.flow}
        answered = {r.flow for r in records if r.service == "registry" and r.method == "sendto"}
        return any("natcheck" in r.extra for r in records) and len(asked) == 2 and asked == answered

    wait_for(all_records_in, "every record of mapping-1, filtering-2 and the hairpin")
    report = live_collector.collector.report()
    flows = [f for f in report.flows if f.flow.startswith("stun-")]
    assert len(flows) == 3 and {f.verdict for f in flows} == {FlowVerdict.DIRECT}, flows
    [check] = report.natchecks
    assert check.result == result, "the collector holds exactly what natcheck found"
    assert "mapping:        none" in natcheck.format_summary(result)


def test_mapping_tests_follow_other_address(
    rfc5780_registry: RegistryServer, make_reporter: Callable[[str], Reporter]
) -> None:
    name = names(rfc5780_registry)
    probe = natcheck.StunProbe(make_reporter("natcheck"), name["A1:P1"], timeout=0.3, attempts=2)
    try:
        first = replace(probe.transact("mapping-1 primary", name["A1:P1"]), mapped=("192.0.2.1", 1))
        tests = [first]
        mapping = natcheck.check_mapping(probe, name["A1:P1"], first, tests)
    finally:
        probe.close()
    assert [t.destination for t in tests[1:]] == [name["A2:P1"], name["A2:P2"]]
    assert mapping == Behaviour.ADDRESS_DEPENDENT, "tests II and III agree with each other, not with a faked test I"


def test_natcheck_json_has_every_field_and_reaches_the_collector(
    rfc5780_registry: RegistryServer,
    live_collector: LiveCollector,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SOCKLAB_COLLECTOR", live_collector.ingest)
    monkeypatch.setenv("SOCKLAB_SERVICE", "natcheck-cli")
    natcheck.main(["--server", f"{PRIMARY}:{rfc5780_registry.stun_port}", "--json", "--timeout", "0.3"])
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= NATCHECK_FIELDS
    assert isinstance(result["port_preserved"], bool) and isinstance(result["hairpin"], bool)
    assert result["server"] == [PRIMARY, rfc5780_registry.stun_port]
    for test in result["tests"]:
        assert {"name", "destination", "mapped", "response_origin"} <= set(test)
        assert len(test["destination"]) == 2 and len(test["mapped"]) == 2 and len(test["response_origin"]) == 2
    checks = wait_for(lambda: live_collector.collector.report().natchecks, "the natcheck summary")
    assert checks[-1].service == "natcheck-cli" and checks[-1].result.to_wire() == result
    assert NatCheckResult.from_wire(result) == checks[-1].result
    [summary] = [r for r in live_collector.records() if "natcheck" in r.extra]
    assert (summary.method, summary.flow, summary.role) == ("getsockname", None, Role.CLIENT)


def test_natcheck_against_a_server_without_alternate_says_unknown_quickly(
    plain_registry: RegistryServer, make_reporter: Callable[[str], Reporter]
) -> None:
    began = time.monotonic()
    result = natcheck.run_natcheck(make_reporter("natcheck"), (PRIMARY, plain_registry.stun_port), 0.3, 3)
    assert time.monotonic() - began < 0.9, "no test waited for an answer that cannot come"
    assert (result.mapping, result.filtering, result.other_address) == (Behaviour.NONE, Behaviour.UNKNOWN, None)
    assert [t.name for t in result.tests] == ["mapping-1 primary"]
    assert "SOCKLAB_STUN_ADDRESSES" in natcheck.format_summary(result)


def test_natcheck_without_a_server_gives_up_after_its_retransmits(make_reporter: Callable[[str], Reporter]) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((PRIMARY, 0))
    with silent, pytest.raises(TimeoutError, match=r"^no STUN Binding answer from 127\.0\.0\.1:\d+$"):
        natcheck.run_natcheck(make_reporter("natcheck"), silent.getsockname(), timeout=0.1, attempts=2)


@pytest.mark.parametrize(
    ("mapped", "behaviour"),
    [
        ((("192.0.2.1", 5), ("192.0.2.1", 5), None), "endpoint-independent"),
        ((("192.0.2.1", 5), ("192.0.2.1", 6), ("192.0.2.1", 6)), "address-dependent"),
        ((("192.0.2.1", 5), ("192.0.2.1", 6), ("192.0.2.1", 7)), "address-and-port-dependent"),
        ((("192.0.2.1", 5), None, None), "unknown"),
        ((("192.0.2.1", 5), ("192.0.2.1", 6), None), "unknown"),
    ],
)
def test_classify_reads_rfc5780_mapping_tests(mapped: tuple[Any, Any, Any], behaviour: str) -> None:
    assert natcheck.classify(*mapped) == Behaviour(behaviour)


def test_report_table_shows_the_newest_nat_check_per_service() -> None:
    def check(service: str, mapped: tuple[str, int], **changes: Any) -> NatCheck:
        result = NatCheckResult(
            Behaviour.NONE, Behaviour.ENDPOINT_INDEPENDENT, True, True, mapped, mapped, ("198.51.100.3", 3478), None
        )
        return NatCheck(service, service, 1.0, replace(result, **changes))

    checks = (
        check("client-lan", ("198.51.100.2", 1), mapping=Behaviour.ADDRESS_AND_PORT_DEPENDENT),
        check("client-wan", ("198.51.100.20", 2)),
        check("client-lan", ("198.51.100.2", 3), port_preserved=False),
    )
    report = Report(natchecks=checks)
    lines = format_table(report).splitlines()
    section = lines[lines.index("NAT check") + 1 :]
    assert section[0].split() == ["service", "mapping", "filtering", "port", "hairpin", "mapped", "address"]
    assert section[1].split() == ["client-lan", "none", "endpoint-independent", "changed", "yes", "198.51.100.2:3"]
    assert section[2].split() == ["client-wan", "none", "endpoint-independent", "kept", "yes", "198.51.100.20:2"]
    assert "NAT check" not in format_table(Report())
