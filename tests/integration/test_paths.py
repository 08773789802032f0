"""Direct, NAT'ed, IPv6 and Unix flows: both ends' names against Docker's addresses and the router's conntrack."""

from __future__ import annotations

import pytest

from shared.names import name_from_wire
from shared.record import Family, Proto
from shared.report_model import FlowVerdict
from shared.stack import Stack
from tests.helpers import ends, host_port
from tests.integration.stack import only, same_host

pytestmark = pytest.mark.integration

IP_SCENARIOS = ("--scenario", "tcp", "--scenario", "tcp-bound", "--scenario", "udp", "--scenario", "udp-sendto")


def version_of(scenario: str) -> int:
    return 6 if scenario.endswith("6") else 4


def test_direct_on_wan_matches_docker(stack: Stack) -> None:
    outcomes = stack.run_client("client-wan", *IP_SCENARIOS)
    assert sorted(o["scenario"] for o in outcomes) == sorted(
        f"{kind}{v}" for kind in ("tcp", "tcp-bound", "udp", "udp-sendto") for v in (4, 6)
    )
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        client, server = ends(flow)
        version = version_of(outcome["scenario"])
        (my_host, my_port), (_, peer_port) = host_port(client.sockname), host_port(client.peername)
        (server_host, server_port), (seen_host, seen_port) = host_port(server.sockname), host_port(server.peername)
        assert flow.verdict == FlowVerdict.DIRECT, flow
        assert client.sockname == name_from_wire(outcome["local"]), "the collector keeps the client's own report"
        assert same_host(my_host, stack.ip("client-wan", "wan", version))
        assert same_host(server_host, stack.ip("echo", "wan", version))
        assert same_host(seen_host, my_host) and seen_port == my_port
        assert peer_port == server_port
        assert name_from_wire(outcome["reflexive"]) == server.peername, "echo told the client the name it saw"


def test_nat_from_lan_matches_conntrack(stack: Stack) -> None:
    outcomes = stack.run_client("client-lan", *IP_SCENARIOS)
    entries = stack.conntrack()
    assert len(outcomes) == 8
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        client, server = ends(flow)
        (my_host, my_port), (seen_host, seen_port) = host_port(client.sockname), host_port(server.peername)
        version = version_of(outcome["scenario"])
        lan_ip, router_wan = stack.ip("client-lan", "lan", version), stack.ip("router", "wan", version)
        assert flow.verdict == FlowVerdict.SNAT, flow
        assert same_host(my_host, lan_ip), "the client's own name is its LAN address"
        assert same_host(seen_host, router_wan), "the server sees the router's WAN address"
        candidates = [
            e
            for e in entries
            if e.proto == flow.proto
            and same_host(e.src, lan_ip)
            and e.sport == my_port
            and same_host(e.dst, stack.ip("echo", "wan", version))
        ]
        entry = only(candidates, outcome["scenario"])
        assert same_host(entry.reply_dst, seen_host)
        assert entry.reply_dport == seen_port, "the server's peer port is conntrack's mapped port"
        assert flow.port_preserved == (entry.reply_dport == entry.sport)


def test_ipv6_names_keep_four_items_and_ipv4_peers_are_mapped(stack: Stack) -> None:
    outcomes = stack.run_client("client-wan", "--scenario", "tcp", "--scenario", "udp")
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        client, server = ends(flow)
        assert isinstance(server.sockname, tuple) and isinstance(server.peername, tuple)
        assert isinstance(client.sockname, tuple) and isinstance(client.peername, tuple)
        assert len(server.sockname) == len(server.peername) == 4, "a dual-stack server's names are 4-tuples"
        if version_of(outcome["scenario"]) == 6:
            assert flow.family == Family.IPV6
            assert len(client.sockname) == len(client.peername) == 4
            assert client.sockname[0] == stack.ip("client-wan", "wan", 6)
            assert all(isinstance(x, int) for x in client.sockname[2:]), "flowinfo and scope_id kept"
        else:
            assert flow.family == Family.IPV4
            assert len(client.sockname) == 2
            assert server.peername[0] == "::ffff:" + stack.ip("client-wan", "wan")
            assert server.sockname[0] == "::ffff:" + stack.ip("echo", "wan")


def test_unix_socket_names_are_paths(stack: Stack) -> None:
    [outcome] = stack.run_client("client-wan", "--scenario", "unix")
    flow = stack.wait_for_flow(outcome["flow"])
    client, server = ends(flow)
    path = outcome["remote"]
    stack.exec("echo", "test", "-S", path)
    mounts = {m["Destination"] for m in stack.container("echo").attrs["Mounts"]}
    assert any(path.startswith(m + "/") for m in mounts), "the socket lives on the shared volume"
    assert (flow.family, flow.proto) == (Family.UNIX, Proto.UNIX)
    assert server.sockname == client.peername == path
    assert server.peername == client.sockname == "", "an unbound client has no name"
    assert flow.verdict == FlowVerdict.DIRECT
