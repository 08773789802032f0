"""Socket-name helpers, and what a real dual-stack socket on loopback says."""

from __future__ import annotations

import socket

import pytest

from shared.names import (
    IN6_PKTINFO,
    arrival_address,
    create_dual_stack_socket,
    endpoint,
    format_name,
    parse_hostport,
    route_source,
    unmap_host,
)

pytestmark = pytest.mark.unit


def test_endpoint_unmaps_ipv4_mapped_hosts() -> None:
    assert endpoint(("::ffff:198.51.100.2", 5000, 0, 0)) == ("198.51.100.2", 5000)
    assert endpoint(("198.51.100.2", 5000)) == ("198.51.100.2", 5000)
    assert endpoint(("2001:db8::1", 5000, 0, 0)) == ("2001:db8::1", 5000)
    assert endpoint("/run/x.sock") == "/run/x.sock"
    assert unmap_host("not-an-address") == "not-an-address"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (("192.0.2.1", 80), "192.0.2.1:80"),
        (("2001:db8::1", 80, 0, 0), "[2001:db8::1]:80"),
        (("fe80::1", 80, 0, 2), "[fe80::1%2]:80"),
        ("/run/x.sock", "/run/x.sock"),
        ("", "(unnamed)"),
        (b"\0abstract", "@abstract"),
        (None, "-"),
    ],
)
def test_format_name(name: object, text: str) -> None:
    assert format_name(name) == text  # type: ignore[arg-type]


def test_parse_hostport() -> None:
    assert parse_hostport("198.51.100.3:5300") == ("198.51.100.3", 5300)
    assert parse_hostport("[2001:db8:100::3]:5300") == ("2001:db8:100::3", 5300)
    assert parse_hostport("registry", 5300) == ("registry", 5300)
    with pytest.raises(ValueError, match="missing port"):
        parse_hostport("registry")
    with pytest.raises(ValueError, match="missing ]"):
        parse_hostport("[2001:db8::1:80")


def test_dual_stack_socket_names_an_ipv4_peer_with_a_mapped_4_tuple() -> None:
    with create_dual_stack_socket(socket.SOCK_STREAM, 0) as listener:
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, addr = listener.accept()
            with conn:
                assert addr == ("::ffff:127.0.0.1", client.getsockname()[1], 0, 0)
                assert conn.getsockname() == ("::ffff:127.0.0.1", port, 0, 0)


def test_arrival_address_reads_ipv6_pktinfo() -> None:
    data = IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.7"), 3)
    assert arrival_address([(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data)]) == "::ffff:192.0.2.7"
    assert arrival_address([(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, b"short")]) is None
    assert arrival_address([]) is None


def test_route_source_is_the_kernels_choice() -> None:
    assert route_source("127.0.0.1", 9) == "127.0.0.1"
