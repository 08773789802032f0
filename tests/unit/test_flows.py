"""Joining both ends of a flow and judging what lay between them."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from services.flows import is_wildcard, join_flows, judge
from shared.record import Family, Method, Observation, Proto, Role
from shared.report_model import FlowEnd, FlowVerdict

pytestmark = pytest.mark.unit

ME, ECHO = ("192.168.50.20", 40000), ("198.51.100.10", 7007)
ME_MAPPED, ECHO_MAPPED = ("::ffff:192.168.50.20", 40000, 0, 0), ("::ffff:198.51.100.10", 7007, 0, 0)


def end(sockname: Any, peername: Any) -> FlowEnd:
    return FlowEnd("svc", "h", Family.IPV4, sockname, peername)


@pytest.mark.parametrize(
    ("server_peer", "server_me", "verdict", "preserved"),
    [
        (ME, ECHO, FlowVerdict.DIRECT, True),
        (ME_MAPPED, ECHO_MAPPED, FlowVerdict.DIRECT, True),
        (("198.51.100.2", 40000), ECHO, FlowVerdict.SNAT, True),
        (("::ffff:198.51.100.2", 1024, 0, 0), ECHO, FlowVerdict.SNAT, False),
        (ME, ("10.0.0.5", 7007), FlowVerdict.DNAT, True),
        (ME, ("198.51.100.10", 8000), FlowVerdict.DNAT, True),
        (("172.17.0.1", 52702), ("10.0.0.5", 7007), FlowVerdict.PROXIED, False),
        (None, ECHO, FlowVerdict.UNMATCHED, None),
        (ME, None, FlowVerdict.UNMATCHED, None),
    ],
    ids=[
        "direct",
        "direct-mapped",
        "snat-port-kept",
        "snat-port-changed",
        "dnat",
        "dnat-port",
        "proxied",
        "no-peer",
        "no-me",
    ],
)
def test_judge(server_peer: Any, server_me: Any, verdict: FlowVerdict, preserved: bool | None) -> None:
    assert judge(end(ME, ECHO), end(server_me, server_peer)) == (verdict, preserved)


def test_a_mapped_ipv6_name_and_a_plain_ipv4_name_are_the_same_endpoint_but_real_ipv6_is_not() -> None:
    client = end(("::ffff:192.168.50.20", 40000, 0, 0), ("::ffff:198.51.100.10", 7007, 0, 0))
    assert judge(client, end(ECHO, ME)) == (FlowVerdict.DIRECT, True)
    assert judge(client, end(ECHO, ("2001:db8::20", 40000, 0, 0)))[0] == FlowVerdict.SNAT


def test_unix_paths_are_compared_as_paths_and_have_no_port() -> None:
    assert judge(end("", "/run/e.sock"), end("/run/e.sock", "")) == (FlowVerdict.DIRECT, None)
    assert judge(end("", "/run/e.sock"), end("/run/other.sock", ""))[0] == FlowVerdict.DNAT


def obs(role: Role, method: str, local: Any = None, remote: Any = None, flow: Any = "f") -> Observation:
    unix = isinstance(local, str) or isinstance(remote, str)
    family, proto = (Family.UNIX, Proto.UNIX) if unix else (Family.IPV4, Proto.TCP)
    return Observation(role.value, "h", flow, role, proto, family, Method(method), local=local, remote=remote)


CLIENT = [
    obs(Role.CLIENT, "connect", remote=ECHO),
    obs(Role.CLIENT, "getsockname", local=ME),
    obs(Role.CLIENT, "getpeername", remote=ECHO),
]


def server(peer: Any, me: Any) -> list[Observation]:
    return [
        obs(Role.SERVER, "accept", remote=peer),
        obs(Role.SERVER, "getsockname", local=me),
        obs(Role.SERVER, "getpeername", remote=peer),
    ]


def test_join_pairs_client_and_server_records_of_one_flow() -> None:
    [flow] = join_flows(CLIENT + server(ME_MAPPED, ECHO_MAPPED))
    assert (flow.flow, flow.proto, flow.family, flow.verdict, flow.port_preserved) == (
        "f",
        "tcp",
        "ipv4",
        "direct",
        True,
    )
    assert flow.client is not None and flow.server is not None
    assert (flow.client.sockname, flow.client.peername) == (ME, ECHO)
    assert flow.server.peername == ME_MAPPED and flow.server.service == "server"
    assert (flow.scenario, flow.complete) == (None, False), "no client record named a scenario yet"


def test_each_end_keeps_the_node_its_records_came_from() -> None:
    client = [replace(o, node="node3") for o in CLIENT]
    [flow] = join_flows(client + [replace(o, node="node2") for o in server(ME_MAPPED, ECHO_MAPPED)])
    assert flow.client is not None and flow.server is not None
    assert (flow.client.node, flow.server.node) == ("node3", "node2")
    assert '"node": "node3"' in json.dumps(flow.to_wire()), "report --json carries each end's node"


def test_unmatched_with_one_end_only() -> None:
    [flow] = join_flows(CLIENT)
    assert (flow.verdict, flow.server, flow.port_preserved) == (FlowVerdict.UNMATCHED, None, None)
    [flow] = join_flows(server(ME, ECHO))
    assert (flow.verdict, flow.client) == (FlowVerdict.UNMATCHED, None)


def test_unix_flow_joins_as_paths() -> None:
    client = [
        obs(Role.CLIENT, "getsockname", local=""),
        obs(Role.CLIENT, "getpeername", remote="/run/e.sock"),
    ]
    seen = [obs(Role.SERVER, "getsockname", local="/run/e.sock"), obs(Role.SERVER, "accept", remote="")]
    [flow] = join_flows(client + seen)
    assert (flow.verdict, flow.family, flow.proto) == (FlowVerdict.DIRECT, "unix", "unix")
    assert flow.port_preserved is None


def test_concrete_local_name_beats_a_wildcard_whatever_the_order() -> None:
    records = [
        obs(Role.CLIENT, "getsockname", local=ME),
        obs(Role.CLIENT, "bind", local=("0.0.0.0", 40000)),
        obs(Role.SERVER, "recvmsg", local=("::ffff:198.51.100.10", 7007, 0, 0), remote=ME),
        obs(Role.SERVER, "getsockname", local=("::", 7007, 0, 0)),
    ]
    [flow] = join_flows(records)
    assert flow.client is not None and flow.server is not None
    assert flow.client.sockname == ME
    assert flow.server.sockname == ("::ffff:198.51.100.10", 7007, 0, 0)
    assert is_wildcard(("0.0.0.0", 1)) and is_wildcard(("::", 1, 0, 0)) and not is_wildcard("")


def test_getpeername_beats_what_connect_was_given() -> None:
    [flow] = join_flows(
        [obs(Role.CLIENT, "getpeername", remote=ECHO), obs(Role.CLIENT, "connect", remote=("echo", 7007))]
    )
    assert flow.client is not None and flow.client.peername == ECHO


def test_flows_keep_their_order_and_records_without_flow_are_ignored() -> None:
    records = [obs(Role.SERVER, "bind", local=("::", 7007, 0, 0), flow=None)]
    records += [obs(Role.CLIENT, "connect", remote=ECHO, flow=f) for f in ("b", "a", "c")]
    assert [f.flow for f in join_flows(records)] == ["b", "a", "c"]


def test_the_clients_closing_record_names_the_scenario_and_completes_the_flow() -> None:
    closing = obs(Role.CLIENT, "getsockname", local=ME)
    closing.extra["scenario"] = "tcp4"
    [flow] = join_flows([*CLIENT, closing, *server(ME, ECHO)])
    assert (flow.scenario, flow.verdict, flow.complete) == ("tcp4", FlowVerdict.DIRECT, True)
    [half] = join_flows([*CLIENT, closing])
    assert (half.scenario, half.complete) == ("tcp4", False), "one end only is never complete"
