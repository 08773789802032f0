"""Socket-name helpers, and what real dual-stack sockets on loopback say."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from shared.names import (
    IN6_PKTINFO,
    arrival_address,
    create_dual_stack_socket,
    enable_pktinfo,
    endpoint,
    format_name,
    name_from_wire,
    name_to_wire,
    parse_hostport,
    pktinfo_space,
    route_source,
    unmap_host,
)
from shared.record import Family, Proto

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        (("::ffff:198.51.100.2", 5000, 0, 0), ("198.51.100.2", 5000)),
        (("198.51.100.2", 5000), ("198.51.100.2", 5000)),
        (("2001:db8::1", 5000, 0, 0), ("2001:db8::1", 5000)),
        (("2001:0db8:0::1", 5000, 0, 0), ("2001:db8::1", 5000)),
        ("/run/x.sock", "/run/x.sock"),
        (b"\0abstract", b"\0abstract"),
    ],
)
def test_endpoint_folds_mapped_hosts_so_both_families_compare(name: object, folded: object) -> None:
    assert endpoint(name) == folded  # type: ignore[arg-type]


def test_unmap_host() -> None:
    assert unmap_host("::ffff:127.0.0.1") == "127.0.0.1"
    assert unmap_host("::1") == "::1"
    assert unmap_host("127.0.0.1") == "127.0.0.1"
    assert unmap_host("echo") == "echo", "a host name is left alone"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (("192.0.2.1", 80), "192.0.2.1:80"),
        (("2001:db8::1", 80, 0, 0), "[2001:db8::1]:80"),
        (("::ffff:192.0.2.1", 80, 0, 0), "[::ffff:192.0.2.1]:80"),
        (("fe80::1", 80, 0, 2), "[fe80::1%2]:80"),
        ("/run/x.sock", "/run/x.sock"),
        ("", "(unnamed)"),
        (b"\0abstract", "@abstract"),
        (None, "-"),
    ],
)
def test_format_name(name: object, text: str) -> None:
    assert format_name(name) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "default", "parsed"),
    [
        ("198.51.100.3:5300", None, ("198.51.100.3", 5300)),
        ("[2001:db8:100::3]:5300", None, ("2001:db8:100::3", 5300)),
        ("[::1]", 7007, ("::1", 7007)),
        ("::1", 7007, ("::1", 7007)),
        ("registry", 5300, ("registry", 5300)),
        ("registry:1", 5300, ("registry", 1)),
    ],
)
def test_parse_hostport(text: str, default: int | None, parsed: tuple[str, int]) -> None:
    assert parse_hostport(text, default) == parsed


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("registry", "missing port in 'registry'"),
        ("[::1]", "missing port"),
        ("[2001:db8::1:80", "missing ]"),
        ("[::1]x80", "expected :port after ]"),
    ],
)
def test_parse_hostport_refuses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_hostport(text)


def test_names_cross_the_wire_as_lists_and_come_back_as_tuples() -> None:
    assert name_to_wire(("::1", 5, 0, 0)) == ["::1", 5, 0, 0]
    assert name_from_wire(["::1", 5, 0, 0]) == ("::1", 5, 0, 0)
    assert name_to_wire("/p") == name_from_wire("/p") == "/p"
    assert name_to_wire(None) is name_from_wire(None) is None


def test_family_and_proto_come_from_the_socket() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_UNIX) as unix:
        assert (Family.of(udp.family), Proto.of(udp)) == ("ipv6", "udp")
        assert (Family.of(unix.family), Proto.of(unix)) == ("unix", "unix")
    with socket.socket() as tcp:
        assert (Family.of(tcp.family), Proto.of(tcp)) == ("ipv4", "tcp")
    with pytest.raises(ValueError, match="unsupported address family"):
        Family.of(socket.AF_PACKET)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with create_dual_stack_socket(socket.SOCK_STREAM, 0) as sock:
        sock.listen()
        yield sock


@pytest.mark.parametrize(("host", "seen_as"), [("127.0.0.1", "::ffff:127.0.0.1"), ("::1", "::1")])
def test_dual_stack_listener_names_every_peer_with_a_4_tuple(
    listener: socket.socket,
    host: str,
    seen_as: str,
) -> None:
    port = listener.getsockname()[1]
    with socket.create_connection((host, port), timeout=5) as client:
        conn, addr = listener.accept()
        with conn:
            assert addr == conn.getpeername() == (seen_as, client.getsockname()[1], 0, 0)
            assert conn.getsockname() == (seen_as, port, 0, 0)
            assert client.getpeername()[:2] == (host, port)


@pytest.mark.parametrize(("host", "arrived"), [("127.0.0.1", "::ffff:127.0.0.1"), ("::1", "::1")])
def test_recvmsg_pktinfo_tells_the_arrival_address_of_a_wildcard_socket(host: str, arrived: str) -> None:
    with create_dual_stack_socket(socket.SOCK_DGRAM, 0) as server:
        enable_pktinfo(server)
        server.settimeout(5)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            client.sendto(b"x", (host, server.getsockname()[1]))
            _, ancdata, _, addr = server.recvmsg(16, pktinfo_space())
            assert server.getsockname()[0] == "::", "getsockname alone only says the wildcard"
            assert arrival_address(ancdata) == arrived
            assert addr[:2] == (arrived, client.getsockname()[1])


def test_arrival_address_reads_ipv6_pktinfo() -> None:
    data = IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.7"), 3)
    assert arrival_address([(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data)]) == "::ffff:192.0.2.7"
    assert arrival_address([(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, b"short")]) is None
    assert arrival_address([(socket.SOL_SOCKET, socket.SCM_RIGHTS, data)]) is None
    assert arrival_address([]) is None


def test_route_source_is_the_kernels_choice() -> None:
    assert route_source("127.0.0.1", 9) == "127.0.0.1"
    assert route_source("::1", 9) == "::1"
