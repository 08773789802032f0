"""Each rewriter named: a flow's path against the router's own conntrack table, and STUN verdicts that are true."""

from __future__ import annotations

import json

import pytest

from shared.conntrack import ConntrackEntry
from shared.names import endpoint
from shared.report_model import Flow, FlowVerdict, HopKind, NatCheckResult
from shared.stack import Stack
from tests.helpers import ends, host_port, wait_for
from tests.integration.stack import only, same_host

pytestmark = pytest.mark.integration


def traced(stack: Stack, flow_id: str) -> Flow:
    """The flow once its path is in: the router's event may reach the collector after both ends' records."""

    def with_path() -> Flow | None:
        flow = stack.find_flow(flow_id, both_ends=False)
        return flow if flow is not None and flow.path else None

    return wait_for(with_path, f"flow {flow_id} with its path")


def entry_for(
    entries: list[ConntrackEntry], proto: str, source: tuple[str, int], destination: tuple[str, int]
) -> ConntrackEntry:
    """The router's one entry for a flow's original direction."""
    return only(
        [
            e
            for e in entries
            if e.proto == proto
            and same_host(e.src, source[0])
            and e.sport == source[1]
            and same_host(e.dst, destination[0])
            and e.dport == destination[1]
        ],
        f"{proto} {source} -> {destination}",
    )


def test_lan_flows_name_the_router_and_its_conntrack_entry(stack: Stack) -> None:
    outcomes = stack.run_client("client-lan", "--scenario", "tcp", "--scenario", "udp", "--scenario", "udp-sendto")
    entries = stack.conntrack("-o", "id")
    assert sorted(o["scenario"] for o in outcomes) == ["tcp4", "tcp6", "udp-sendto4", "udp-sendto6", "udp4", "udp6"]
    for outcome in outcomes:
        flow = traced(stack, outcome["flow"])
        client, server = ends(flow)
        entry = entry_for(entries, str(flow.proto), host_port(client.sockname), host_port(client.peername))
        [hop] = flow.path
        assert flow.verdict == FlowVerdict.SNAT
        assert (hop.by, hop.kind) == ("router", HopKind.SNAT)
        assert hop.evidence["conntrack_id"] == entry.id, "the hop is the entry the router's kernel holds"
        assert hop.evidence["router"] == stack.container("router").attrs["Config"]["Hostname"]
        assert endpoint(hop.before) == host_port(client.sockname) == (entry.src, entry.sport)
        assert endpoint(hop.after) == (entry.reply_dst, entry.reply_dport)
        assert same_host(host_port(server.peername)[0], entry.reply_dst)
        assert host_port(server.peername)[1] == entry.reply_dport
        assert same_host(str(hop.after[0]), stack.ip("router", "wan", 6 if ":" in entry.src else 4))
        assert "MASQUERADE" in hop.rule and hop.evidence["mode"] == "cone"


def test_no_stun_change_request_is_judged_proxied(stack: Stack) -> None:
    printed = json.loads(stack.exec("client-lan", "socklab", "natcheck", "--json").strip().splitlines()[-1])
    result = NatCheckResult.from_wire(printed)
    assert result.other_address is not None
    entries = stack.conntrack("-p", "udp", "-o", "id")

    def natcheck_flows() -> list[Flow] | None:
        flows = [
            f
            for f in stack.report().flows
            if f.client and f.client.sockname and endpoint(f.client.sockname) == result.local_address
        ]
        return flows if len(flows) >= len(result.tests) and all(f.path for f in flows if f.server) else None

    flows = wait_for(natcheck_flows, "natcheck's transactions, each with its path")
    unanswered = [f for f in flows if f.answer is not None and not f.answer.arrived]
    assert len(unanswered) >= 2, "the filtering tests' answers, sent from another name, were filtered"
    primary, alternate = result.server, result.other_address
    for flow in flows:
        assert flow.verdict != FlowVerdict.PROXIED, flow
        if flow.server is None:
            continue
        client, server = ends(flow)
        assert flow.verdict == FlowVerdict.SNAT and host_port(server.sockname) == host_port(client.peername)
        assert flow.answer is not None and flow.answer.source is not None
        entry = entry_for(entries, "udp", host_port(client.sockname), host_port(client.peername))
        [hop] = flow.path
        assert hop.evidence["conntrack_id"] == entry.id
    for flow in unanswered:
        assert flow.answer is not None and flow.answer.source is not None
        source = host_port(flow.answer.source)
        assert source in ((alternate[0], alternate[1]), (primary[0], alternate[1])), "answered from a changed name"
