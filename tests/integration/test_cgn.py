"""TOPOLOGY=cgn: a home router behind a carrier-grade NAT, and a client of the CGN's own, added to the session's
stack; every name checked against Docker's addresses and both routers' conntrack tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.conntrack import ConntrackEntry
from shared.names import Name, unmap_host
from shared.polling import wait_for
from shared.report_model import Flow, FlowVerdict, HopKind
from shared.stack import CGN_FILE, Stack
from tests.integration.stack import address, entry_between, last_json, only, outside_name, punch

pytestmark = pytest.mark.integration

CGN_SERVICES = ("cgn", "home-router", "client-home", "client-cgn")
CGN_NETWORKS = ("home", "cgn1", "cgn2")
Address = tuple[str, int]


@pytest.fixture(scope="module")
def cgn(stack: Stack) -> Iterator[Stack]:
    """The session's stack with docker-compose.cgn.yml's services added (and taken away after, if added here)."""
    topology = Stack(stack.project, stack.compose_file, overrides=(CGN_FILE,))
    running = set(topology.compose("ps", "--services", "--status", "running").split())
    added = not set(CGN_SERVICES) <= running
    try:
        topology.compose("up", "--detach", "--no-build", *CGN_SERVICES)
        topology.exec("collector", "socklab", "health", *CGN_SERVICES)
        yield topology
    finally:
        if added:
            topology.compose("rm", "--stop", "--force", *CGN_SERVICES)
            for network in CGN_NETWORKS:
                topology.docker.networks.get(topology.network_name(network)).remove()
        topology.context.term()


def entry_from(entries: list[ConntrackEntry], source: Address, destination: Address) -> ConntrackEntry:
    """The one entry whose original direction goes from `source` to `destination`."""
    found = [e for e in entries if ((e.src, e.sport), (e.dst, e.dport)) == (source, destination)]
    return only(found, f"packets {source} -> {destination}")


def ip_port(name: Name | None) -> Address:
    """An IP name as conntrack prints it: IPv4-mapped hosts unmapped, no flowinfo or scope."""
    assert isinstance(name, tuple), f"{name!r} is no IP name"
    return unmap_host(name[0]), int(name[1])


def public_of(entry: ConntrackEntry) -> Address:
    """The source an entry's original packets leave with: where its replies go."""
    return entry.reply_dst, entry.reply_dport


def traced(stack: Stack, flow_id: str, routers: int) -> Flow:
    """The punch's flow once the collector holds both ends and a path through `routers` routers.

    `--json` prints what the collector held after 3 s; on a loaded host an end's records may come later.
    """

    def found() -> Flow | None:
        flow = stack.find_flow(flow_id)
        return flow if flow is not None and len({hop.by for hop in flow.path}) >= routers else None

    return wait_for(found, f"flow {flow_id} with {routers} routers on its path", timeout=15.0, interval=0.2)


def hops(flow: Flow) -> list[tuple[str, HopKind]]:
    """Who rewrote a flow, and how, in order."""
    return [(hop.by, hop.kind) for hop in flow.path]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_client_behind_a_home_router_behind_the_cgn_is_seen_through_both_nats(cgn: Stack, proto: str) -> None:
    flow = cgn.observe("client-home", "echo", proto)
    assert flow.client is not None and flow.server is not None
    assert flow.verdict == FlowVerdict.TWO_NATS and flow.port_preserved, flow
    assert hops(flow) == [("home-router", HopKind.SNAT), ("cgn", HopKind.SNAT)], flow.path
    mine, echo = ip_port(flow.client.sockname), ip_port(flow.client.peername)
    assert mine[0] == cgn.ip("client-home", "home") and echo == cgn.echo_address()
    home = entry_from(cgn.conntrack("-p", proto, router="home-router"), mine, echo)
    assert public_of(home)[0] == cgn.ip("home-router", "cgn1"), "the home router's WAN side is the CGN's access net"
    assert (flow.path[0].before, flow.path[0].after) == (mine, public_of(home))
    carrier = entry_from(cgn.conntrack("-p", proto, router="cgn"), public_of(home), echo)
    assert public_of(carrier) == ip_port(flow.server.peername), "echo saw the CGN's entry's public name"
    assert public_of(carrier)[0] == cgn.ip("cgn", "wan")
    assert (flow.path[1].before, flow.path[1].after) == (public_of(home), public_of(carrier))


def test_natcheck_behind_the_cgn_finds_its_public_name_in_the_cgns_table(cgn: Stack) -> None:
    home = cgn.natcheck("client-home")
    phone = cgn.natcheck("client-cgn")
    for result in (home, phone):
        assert result.mapped_address[0] == cgn.ip("cgn", "wan")
        assert (result.mapping, result.filtering) == ("endpoint-independent", "address-and-port-dependent")
    assert home.local_address[0] == cgn.ip("client-home", "home")
    assert phone.local_address[0] == cgn.ip("client-cgn", "cgn2")
    # The CGN turns packets to its public address toward its DMZ host, client-cgn: only that one hairpins.
    assert (home.hairpin, phone.hairpin) == (False, True)
    table = cgn.conntrack("-p", "udp", router="cgn")
    stun = (home.server[0], home.server[1])
    mapped = [e for e in table if public_of(e) == home.mapped_address and (e.dst, e.dport) == stun]
    assert only(mapped, "natcheck's mapping").src == cgn.ip("home-router", "cgn1")


def test_a_punch_between_two_clients_inside_the_cgn_turns_in_the_cgn(cgn: Stack) -> None:
    code, output = punch(cgn, "client-cgn", "--json", service="client-home")
    assert code == 0, output
    printed = last_json(output)
    me, peer = printed["me"], printed["peer"]
    assert printed["outcome"] == "connected" and printed["candidate"] == "public", printed
    assert me["public"][0] == peer["public"][0] == cgn.ip("cgn", "wan"), "one public address: the CGN's"
    flow = traced(cgn, printed["rendezvous"], 2)
    assert flow.verdict == FlowVerdict.HAIRPIN, flow
    assert hops(flow) == [("home-router", HopKind.SNAT), ("cgn", HopKind.HAIRPIN), ("cgn", HopKind.SNAT)], flow.path
    reached = address(peer["reached_at"])
    assert reached == address(peer["public"])
    home = entry_from(cgn.conntrack("-p", "udp", router="home-router"), address(me["local"]), reached)
    turn = entry_from(cgn.conntrack("-p", "udp", router="cgn"), public_of(home), reached)
    assert flow.server is not None
    peer_local = ip_port(flow.server.sockname)
    assert peer_local[0] == cgn.ip("client-cgn", "cgn2")
    assert (turn.reply_src, turn.reply_sport) == peer_local, "the CGN sent it back inside, to client-cgn"
    assert public_of(turn) == address(me["seen_by_peer_as"]), "client-cgn saw the hairpin's source"


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_punch_from_behind_the_cgn_to_another_nat_crosses_three_nats(cgn: Stack, proto: str) -> None:
    code, output = punch(cgn, "client-lan2", "--proto", proto, "--json", service="client-home")
    assert code == 0, output
    printed = last_json(output)
    me, peer = printed["me"], printed["peer"]
    assert printed["outcome"] == "connected" and printed["candidate"] == "public", printed
    assert me["public"][0] == cgn.ip("cgn", "wan") and peer["public"][0] == cgn.ip("router2", "wan")
    flow = traced(cgn, printed["rendezvous"], 3)
    assert flow.verdict == FlowVerdict.TWO_NATS, flow
    assert hops(flow) == [("home-router", HopKind.SNAT), ("cgn", HopKind.SNAT), ("router2", HopKind.DNAT)], flow.path
    reached = address(peer["reached_at"])
    home = entry_from(cgn.conntrack("-p", proto, router="home-router"), address(me["local"]), reached)
    carrier = entry_from(cgn.conntrack("-p", proto, router="cgn"), public_of(home), reached)
    assert public_of(carrier) == address(me["seen_by_peer_as"]), "client-lan2 saw the CGN's public name"
    assert flow.server is not None
    peer_local = ip_port(flow.server.sockname)
    far = entry_between(cgn.conntrack("-p", proto, router="router2"), peer_local, public_of(carrier))
    assert outside_name(far, peer_local) == address(peer["reached_at"]), "router2's entry: its public name"
