"""The page's picture: networks from reported interfaces, nodes, and rewriters inferred from both ends' views."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from services.collector import Collector, Store
from services.flows import join_flows
from services.picture import build_picture
from shared.host_topology import parse_interfaces, parse_routes
from shared.record import (
    Family,
    Interface,
    Method,
    Observation,
    Proto,
    Role,
    Route,
    Topology,
    pack_record,
    unpack_record,
)
from shared.report_model import Flow
from tests.unit.test_page_server import SNAT, TOPOLOGY

pytestmark = pytest.mark.unit


def flows_of(raws: list[bytes]) -> list[Flow]:
    return join_flows([o for o in map(unpack_record, raws) if isinstance(o, Observation)])


def test_networks_pair_ipv4_and_ipv6_and_carry_their_gateways() -> None:
    picture = build_picture(TOPOLOGY, []).to_wire()
    subnets = {tuple(n["subnets"]) for n in picture["networks"]}
    assert subnets == {("10.99.0.0/24",), ("192.168.50.0/24", "fd00:50::/64"), ("198.51.100.0/24", "2001:db8:100::/64")}
    gateways = {n["id"]: n["gateways"] for n in picture["networks"]}
    assert gateways == {"10.99.0.0/24": [], "192.168.50.0/24": ["192.168.50.2"], "198.51.100.0/24": ["198.51.100.1"]}
    echo = next(n for n in picture["nodes"] if n["id"] == "host:ec")
    assert echo["addresses"] == {
        "198.51.100.0/24": ["198.51.100.10", "2001:db8:100::10"],
        "10.99.0.0/24": ["10.99.0.4"],
    }


def test_the_router_is_inferred_between_lan_and_wan_from_what_the_server_saw() -> None:
    picture = build_picture(TOPOLOGY, flows_of(SNAT))
    router = picture.nodes["router:192.168.50.2"]
    assert router.addresses == {"192.168.50.0/24": ["192.168.50.2"], "198.51.100.0/24": ["198.51.100.2"]}
    assert router.rewrote and not picture.nodes["host:cl"].rewrote
    [flow] = flows_of(SNAT)
    assert picture.line(flow) == ["host:cl", "router:192.168.50.2", "host:ec"]
    six = [
        Observation(
            "client-lan", "cl", "s6", Role.CLIENT, Proto.TCP, Family.IPV6, Method.GETSOCKNAME, ("fd00:50::20", 1, 0, 0)
        ),
        Observation(
            "client-lan",
            "cl",
            "s6",
            Role.CLIENT,
            Proto.TCP,
            Family.IPV6,
            Method.GETPEERNAME,
            None,
            ("2001:db8:100::10", 7007, 0, 0),
        ),
        Observation(
            "echo",
            "ec",
            "s6",
            Role.SERVER,
            Proto.TCP,
            Family.IPV6,
            Method.ACCEPT,
            ("2001:db8:100::10", 7007, 0, 0),
            ("2001:db8:100::2", 1, 0, 0),
        ),
    ]
    lan6 = Route("::/0", "fd00:50::2", "eth0")
    topology = [replace(TOPOLOGY[0], routes=(*TOPOLOGY[0].routes, lan6)), TOPOLOGY[1]]
    picture = build_picture(topology, [flow, *join_flows(six)])
    router = picture.nodes["router:192.168.50.2"]
    assert router.addresses == {
        "192.168.50.0/24": ["192.168.50.2", "fd00:50::2"],
        "198.51.100.0/24": ["198.51.100.2", "2001:db8:100::2"],
    }, "one router for the client's IPv4 and IPv6 next hops on lan"


def test_a_published_port_proxy_is_drawn_on_the_clients_own_host() -> None:
    records = [
        Observation(
            "host", "laptop", "p1", Role.CLIENT, Proto.TCP, Family.IPV4, Method.GETSOCKNAME, ("127.0.0.1", 5000)
        ),
        Observation(
            "host", "laptop", "p1", Role.CLIENT, Proto.TCP, Family.IPV4, Method.GETPEERNAME, None, ("127.0.0.1", 32991)
        ),
        Observation(
            "echo",
            "ec",
            "p1",
            Role.SERVER,
            Proto.TCP,
            Family.IPV6,
            Method.ACCEPT,
            ("::ffff:198.51.100.10", 7007, 0, 0),
            ("::ffff:198.51.100.1", 45686, 0, 0),
        ),
    ]
    [flow] = join_flows(records)
    picture = build_picture(TOPOLOGY, [flow])
    host = picture.nodes["host:laptop"]
    assert host.addresses == {"elsewhere": ["127.0.0.1"], "198.51.100.0/24": ["198.51.100.1"]}
    assert picture.line(flow) == ["host:laptop", "host:ec"], "docker-proxy runs on the client's own host"


def test_topology_records_round_trip_and_garbage_is_refused(tmp_path: Path) -> None:
    topology = TOPOLOGY[0]
    assert unpack_record(pack_record(topology)) == topology
    wire = topology.to_wire()
    bad = [
        {**wire, "kind": "gossip"},
        {**wire, "interfaces": [{"name": "eth0", "addresses": ["not-an-address/24"]}]},
        {**wire, "routes": [{"destination": "default", "gateway": None, "device": "eth0"}]},
        {**wire, "routes": [{"destination": "0.0.0.0/0", "gateway": 7, "device": "eth0"}]},
        {**wire, "container": "yes"},
    ]
    collector = Collector(Store(str(tmp_path / "r.bin")))
    assert [collector.ingest(msgpack.packb(b)) for b in bad] == [False] * len(bad)
    assert collector.rejected == len(bad) and collector.hosts() == []
    assert collector.ingest(pack_record(topology))
    newer = Topology("client-lan", "cl", True, (Interface("eth0", ("192.168.50.30/24",)),), ())
    assert collector.ingest(pack_record(newer))
    assert collector.hosts() == [newer] and collector.report().records == 0, "a topology is not an observation"
    collector.store.close()
    replayed = Collector(Store(str(tmp_path / "r.bin")))
    assert replayed.hosts() == [newer]
    replayed.store.close()


def test_ip_json_is_read_into_interfaces_and_routes() -> None:
    addr = [
        {"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"local": "198.51.100.10", "prefixlen": 24, "scope": "global"},
                {"local": "fe80::1", "prefixlen": 64, "scope": "link"},
                {"local": "2001:db8:100::10", "prefixlen": 64, "scope": "global"},
            ],
        },
    ]
    assert parse_interfaces(addr) == (Interface("eth0", ("198.51.100.10/24", "2001:db8:100::10/64")),)
    routes = [
        {"dst": "default", "gateway": "fd00::1", "dev": "eth0"},
        {"dst": "fe80::/64", "dev": "eth0"},
        {"dst": "2001:db8:100::/64", "dev": "eth0"},
    ]
    assert parse_routes(routes, "::/0") == (Route("::/0", "fd00::1", "eth0"), Route("2001:db8:100::/64", None, "eth0"))
