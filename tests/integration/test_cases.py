"""The Docker addressing cases (`socklab cases`): each against docker inspect, the kernel's conntrack, the other end."""

from __future__ import annotations

from functools import partial

import pytest

from services.case_collision import run_collision
from services.case_hairpin import run_hairpin
from services.case_hairpin_engine import run_hairpin_without_proxy
from services.case_stale_udp import run_stale_udp
from services.case_views import CaseFlow
from shared.conntrack import ConntrackEntry, parse_conntrack
from shared.docker_host import find_docker_proxy, host_conntrack
from shared.names import endpoint
from shared.report_model import FlowVerdict, Hop, HopKind
from shared.stack import Stack
from tests.helpers import ends, host_port, wait_for
from tests.integration.stack import same_host

pytestmark = pytest.mark.integration


def evidence_entry(row: CaseFlow, key: str) -> ConntrackEntry:
    """The conntrack entry a case showed as evidence, read back as conntrack's own line."""
    [entry] = parse_conntrack(str(row.evidence[key]))
    return entry


def test_hairpin_through_the_hosts_published_port(stack: Stack) -> None:
    rows = run_hairpin(stack)
    gateway, echo_ip = stack.endpoint("echo", "wan")["Gateway"], stack.ip("echo", "wan")
    entries = host_conntrack()
    assert {row.step.split()[0] for row in rows} == {"client-wan", "client-lan", "collector"}
    for row in rows:
        client, server = ends(row.flow)
        proto = str(row.flow.proto)
        published = stack.published_port("echo", f"7007/{proto}", gateway)
        assert host_port(client.peername) == (gateway, published), "the client spoke to the host's published port"
        assert same_host(host_port(server.sockname)[0], echo_ip) and host_port(server.sockname)[1] == 7007
        seen_host, seen_port = host_port(server.peername)
        proxy = find_docker_proxy(gateway, published, proto)
        if proxy is not None:
            assert proxy.container_ip == echo_ip and row.rewriter.startswith("docker-proxy")
            assert same_host(seen_host, gateway), "echo sees the gateway, never the client"
            assert row.flow.verdict == FlowVerdict.PROXIED
            to_echo = [e for e in entries if e.proto == proto and e.src == gateway and e.sport == seen_port]
            assert any(e.dst == echo_ip and e.dport == 7007 for e in to_echo), "the proxy's own connection"
            arrived = [e for e in entries if e.proto == proto and e.dst == gateway and e.dport == published]
            assert arrived and all(e.reply_src == gateway for e in arrived), "no DNAT: the packets were the host's"
        else:
            [entry] = [e for e in entries if e.dst == gateway and e.dport == published and e.reply_src == echo_ip]
            assert row.rewriter.startswith("docker-dnat")
            assert same_host(seen_host, entry.reply_dst) and seen_port == entry.reply_dport


def test_hairpin_on_an_engine_without_the_userland_proxy_keeps_the_clients_address(stack: Stack) -> None:
    rows = run_hairpin_without_proxy(stack.docker)
    assert [str(row.flow.proto) for row in rows] == ["tcp", "udp"]
    for row in rows:
        client, server = ends(row.flow)
        gateway, port = host_port(client.peername)
        assert row.step == f"client -> {gateway}:{port} (no proxy)" and port == 7007
        assert (
            "--userland-proxy=false" in str(row.evidence["engine"]) and row.evidence["docker-proxy"] == "none running"
        )
        assert row.flow.verdict == FlowVerdict.DNAT, "the destination rewritten, the source kept"
        assert same_host(host_port(server.peername)[0], host_port(client.sockname)[0]), "echo sees the client itself"
        assert host_port(server.peername)[1] == host_port(client.sockname)[1]
        assert same_host(host_port(server.sockname)[0], str(row.evidence["echo"]))
        [rule] = row.evidence["engine DNAT rule"]
        assert f"-d {gateway}/32" in rule and f"DNAT --to-destination {row.evidence['echo']}:7007" in rule
        assert "! -i" not in rule, "without the proxy Docker DNATs packets from the bridge itself (hairpin)"


def check_datagram(stack: Stack, row: CaseFlow) -> ConntrackEntry:
    """One datagram's two ends agree with the host's entry it followed: DNAT to echo, or kept on the host."""
    entry, echo_ip = evidence_entry(row, "host conntrack"), stack.ip("echo", "wan")
    client, server = row.flow.client, row.flow.server
    assert client is not None, "the client reports every datagram it sent"
    if entry.reply_src == echo_ip:
        assert server is not None and same_host(host_port(server.sockname)[0], echo_ip)
        assert server.peername is not None and client.sockname is not None
        assert endpoint(server.peername) == endpoint(client.sockname), "Docker's DNAT keeps the source"
        assert row.flow.verdict == FlowVerdict.DNAT and row.rewriter.startswith("docker-dnat")
        return entry
    assert entry.reply_src == entry.dst, f"no translation at all: {entry}"
    proxy = find_docker_proxy(entry.dst, entry.dport, "udp")
    if proxy is None:
        assert server is None and row.rewriter.startswith("nobody: blackholed"), "nothing listens on the host"
    else:
        assert server is not None and same_host(host_port(server.peername)[0], entry.dst), "the proxy's own name"
        assert row.flow.verdict == FlowVerdict.PROXIED and row.rewriter.startswith("docker-proxy")
    return entry


def test_stale_udp_entry_outlives_echos_restart(stack: Stack) -> None:
    echo_ip = stack.ip("echo", "wan")
    before, after, new_port, deleted = run_stale_udp(stack)
    entries = [check_datagram(stack, row) for row in (before, after, new_port, deleted)]
    assert entries[0].reply_src == echo_ip, "before the restart: Docker's DNAT"
    assert entries[1].reply_src == entries[1].dst, "after it: the entry made while echo was down, untranslated"
    assert (entries[1].src, entries[1].sport) == (entries[0].src, entries[0].sport), "one socket, one entry"
    assert entries[2].reply_src == echo_ip and entries[2].sport != entries[0].sport, "a new port is translated"
    assert entries[3].reply_src == echo_ip and entries[3].sport == entries[0].sport, "so is the old one after -D"
    assert "1 flow entries have been deleted" in str(deleted.evidence["conntrack -D"])


def traced_hops(stack: Stack, flow_id: str) -> tuple[Hop, ...]:
    """A flow's path once the router's conntrack event has reached the collector."""
    flow = stack.find_flow(flow_id)
    return flow.path if flow is not None else ()


def test_clients_behind_nat_on_one_source_port_are_remapped(stack: Stack) -> None:
    count, port = 4, 47100
    rows = run_collision(stack, count, port)
    entries = stack.conntrack("-p", "tcp", "--orig-port-src", str(port))
    assert len(rows) == count and len({host_port(ends(r.flow)[0].sockname)[0] for r in rows}) == count
    preserved = []
    for row in rows:
        client, server = ends(row.flow)
        my_host, my_port = host_port(client.sockname)
        assert my_port == port
        [entry] = [e for e in entries if e.src == my_host and e.sport == port]
        assert row.flow.verdict == FlowVerdict.SNAT
        assert same_host(host_port(server.peername)[0], stack.ip("router", "wan"))
        assert host_port(server.peername)[1] == entry.reply_dport, "the server sees conntrack's mapped port"
        assert row.flow.port_preserved == (entry.reply_dport == port)
        preserved.append(row.flow.port_preserved)
        hops = wait_for(partial(traced_hops, stack, row.flow.flow), f"the router's hop on {row.flow.flow}")
        assert [(h.by, h.kind) for h in hops] == [("router", HopKind.SNAT)]
        assert endpoint(hops[0].before) == (my_host, port)
        assert endpoint(hops[0].after) == (stack.ip("router", "wan"), entry.reply_dport), "the hop is conntrack's"
    assert preserved.count(True) == 1, f"one flow keeps port {port}, the rest are remapped: {preserved}"
