"""Direct, NAT'ed, IPv6 and Unix flows: both ends' names against Docker's addresses and the router's conntrack."""

from __future__ import annotations

import pytest

from tests.integration.stack import Stack, only, same_host

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
        client, server = flow["client"], flow["server"]
        version = version_of(outcome["scenario"])
        assert flow["verdict"] == "direct", flow
        assert client["sockname"] == outcome["local"], "the collector keeps the client's own report"
        assert same_host(client["sockname"][0], stack.ip("client-wan", "wan", version))
        assert same_host(server["sockname"][0], stack.ip("echo", "wan", version))
        assert same_host(server["peername"][0], client["sockname"][0])
        assert server["peername"][1] == client["sockname"][1]
        assert client["peername"][1] == server["sockname"][1]
        assert outcome["reflexive"] == server["peername"], "echo told the client the name it saw"


def test_nat_from_lan_matches_conntrack(stack: Stack) -> None:
    outcomes = stack.run_client("client-lan", *IP_SCENARIOS)
    entries = stack.conntrack()
    assert len(outcomes) == 8
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        client, server = flow["client"], flow["server"]
        version = version_of(outcome["scenario"])
        lan_ip, router_wan = stack.ip("client-lan", "lan", version), stack.ip("router", "wan", version)
        assert flow["verdict"] == "snat", flow
        assert same_host(client["sockname"][0], lan_ip), "the client's own name is its LAN address"
        assert same_host(server["peername"][0], router_wan), "the server sees the router's WAN address"
        candidates = [
            e
            for e in entries
            if e.proto == flow["proto"]
            and same_host(e.src, lan_ip)
            and e.sport == client["sockname"][1]
            and same_host(e.dst, stack.ip("echo", "wan", version))
        ]
        entry = only(candidates, outcome["scenario"])
        assert same_host(entry.reply_dst, server["peername"][0])
        assert entry.reply_dport == server["peername"][1], "the server's peer port is conntrack's mapped port"
        assert flow["port_preserved"] == (entry.reply_dport == entry.sport)


def test_ipv6_names_keep_four_items_and_ipv4_peers_are_mapped(stack: Stack) -> None:
    outcomes = stack.run_client("client-wan", "--scenario", "tcp", "--scenario", "udp")
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        client, server = flow["client"], flow["server"]
        assert len(server["sockname"]) == len(server["peername"]) == 4, "a dual-stack server's names are 4-tuples"
        if version_of(outcome["scenario"]) == 6:
            assert flow["family"] == "ipv6"
            assert len(client["sockname"]) == len(client["peername"]) == 4
            assert client["sockname"][0] == stack.ip("client-wan", "wan", 6)
            assert all(isinstance(x, int) for x in client["sockname"][2:]), "flowinfo and scope_id kept"
        else:
            assert flow["family"] == "ipv4"
            assert len(client["sockname"]) == 2
            assert server["peername"][0] == "::ffff:" + stack.ip("client-wan", "wan")
            assert server["sockname"][0] == "::ffff:" + stack.ip("echo", "wan")


def test_unix_socket_names_are_paths(stack: Stack) -> None:
    [outcome] = stack.run_client("client-wan", "--scenario", "unix")
    flow = stack.wait_for_flow(outcome["flow"])
    path = outcome["remote"]
    stack.exec("echo", "test", "-S", path)
    mounts = {m["Destination"] for m in stack.container("echo").attrs["Mounts"]}
    assert any(path.startswith(m + "/") for m in mounts), "the socket lives on the shared volume"
    assert flow["family"] == "unix" and flow["proto"] == "unix"
    assert flow["server"]["sockname"] == flow["client"]["peername"] == path
    assert flow["server"]["peername"] == flow["client"]["sockname"] == "", "an unbound client has no name"
    assert flow["verdict"] == "direct"
