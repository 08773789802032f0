"""Across Docker's own boundaries: a published port, the registry behind NAT, two networks (collisions: test_cases)."""

from __future__ import annotations

import json

import pytest

from shared.docker_host import find_docker_proxy, host_conntrack
from shared.report_model import FlowVerdict
from shared.stack import Stack
from tests.helpers import ends, host_port
from tests.integration.stack import run_from_host, same_host

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("scenario_name", "host"), [("tcp4", "127.0.0.1"), ("udp4", "127.0.0.1"), ("tcp6", "::1")])
def test_host_to_published_port(stack: Stack, scenario_name: str, host: str) -> None:
    outcome, port, proto = run_from_host(stack, scenario_name, host)
    flow = stack.wait_for_flow(outcome.flow)
    client, server = ends(flow)
    (my_host, my_port), (peer_host, peer_port) = host_port(client.sockname), host_port(client.peername)
    (server_host, server_port), (seen_host, seen_port) = host_port(server.sockname), host_port(server.peername)
    assert my_host == peer_host == host
    assert peer_port == port
    proxy = find_docker_proxy(host, port, proto)
    if proxy is not None:
        # Docker's user-space proxy accepted our connection and opened its own from the bridge gateway.
        target = proxy.container_ip
        version = 6 if ":" in target else 4
        [network] = [n for n in ("wan", "ctl") if stack.ip("echo", n, version) == target]
        gateway = stack.endpoint("echo", network)["Gateway" if version == 4 else "IPv6Gateway"]
        assert flow.verdict == FlowVerdict.PROXIED, flow
        assert same_host(server_host, target)
        assert same_host(seen_host, gateway)
    else:
        # No proxy: the host kernel translated the packets, and its conntrack table holds the translation.
        [entry] = [e for e in host_conntrack() if e.sport == my_port and e.dport == port]
        assert same_host(server_host, entry.reply_src) and server_port == entry.reply_sport
        assert same_host(seen_host, entry.reply_dst) and seen_port == entry.reply_dport
        assert flow.verdict == FlowVerdict.PROXIED, "source and destination both rewritten"


def test_registry_sees_registrant_behind_nat_as_conntrack_says(stack: Stack) -> None:
    stack.exec("client-lan", "socklab", "client", "--register", "--repeat", "0")
    entries = stack.conntrack("-p", "tcp")
    [registration] = json.loads(stack.exec("client-wan", "socklab", "registry", "--lookup", "client-lan"))
    reported, observed = registration["reported"], registration["observed"]
    registry_ip = stack.ip("registry", "wan")
    assert reported[0] == stack.ip("client-lan", "lan"), "the registrant reports its own LAN name"
    [entry] = [e for e in entries if e.src == reported[0] and e.sport == reported[1] and e.dst == registry_ip]
    assert same_host(observed[0], entry.reply_dst) and observed[1] == entry.reply_dport
    assert same_host(observed[0], stack.ip("router", "wan"))
    assert not same_host(observed[0], reported[0])


def test_source_name_follows_routing_table_per_destination(stack: Stack) -> None:
    for network in ("wan", "ctl"):
        destination = stack.ip("echo", network)
        [outcome] = stack.run_client("client-wan", "--scenario", "tcp", "--echo", f"{destination}:7007")
        route = stack.exec("client-wan", "ip", "-o", "route", "get", destination).split()
        kernel_source = route[route.index("src") + 1]
        assert outcome["local"][0] == kernel_source == stack.ip("client-wan", network)
        flow = stack.wait_for_flow(outcome["flow"])
        _, server = ends(flow)
        assert flow.verdict == FlowVerdict.DIRECT
        assert same_host(host_port(server.peername)[0], stack.ip("client-wan", network))
        assert same_host(host_port(server.sockname)[0], destination)
