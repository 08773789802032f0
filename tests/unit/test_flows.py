"""Joining both ends of a flow and judging what lay between them."""

from __future__ import annotations

from typing import Any

import pytest

from services.flows import FlowVerdict, join_flows
from shared.record import Observation, Proto, Role

pytestmark = pytest.mark.unit


def obs(role: Role, method: str, local: Any = None, remote: Any = None, flow: str = "f", **kw: Any) -> Observation:
    family = "unix" if isinstance(local, str) or isinstance(remote, str) else "ipv4"
    proto = Proto.UNIX if family == "unix" else Proto.TCP
    return Observation(
        kw.get("service", role.value), "h", flow, role, proto, family, method, local=local, remote=remote
    )


def judge(client: list[Observation], server: list[Observation]) -> tuple[FlowVerdict, bool | None]:
    [flow] = join_flows(client + server)
    return flow.verdict, flow.port_preserved


CLIENT = [
    obs(Role.CLIENT, "connect", remote=("198.51.100.10", 7007)),
    obs(Role.CLIENT, "getsockname", local=("192.168.50.20", 40000)),
    obs(Role.CLIENT, "getpeername", remote=("198.51.100.10", 7007)),
]


def server(peer: tuple[Any, ...], me: tuple[Any, ...]) -> list[Observation]:
    return [
        obs(Role.SERVER, "accept", remote=peer),
        obs(Role.SERVER, "getsockname", local=me),
        obs(Role.SERVER, "getpeername", remote=peer),
    ]


def test_direct_when_names_match_pairwise_even_through_ipv4_mapping() -> None:
    seen = server(("::ffff:192.168.50.20", 40000, 0, 0), ("::ffff:198.51.100.10", 7007, 0, 0))
    assert judge(CLIENT, seen) == (FlowVerdict.DIRECT, True)


def test_snat_with_port_kept_and_changed() -> None:
    me = ("::ffff:198.51.100.10", 7007, 0, 0)
    assert judge(CLIENT, server(("198.51.100.2", 40000), me)) == (FlowVerdict.SNAT, True)
    assert judge(CLIENT, server(("198.51.100.2", 1024), me)) == (FlowVerdict.SNAT, False)


def test_dnat_when_only_the_destination_changed() -> None:
    assert judge(CLIENT, server(("192.168.50.20", 40000), ("10.0.0.5", 7007))) == (FlowVerdict.DNAT, True)


def test_proxied_when_both_changed() -> None:
    verdict, _ = judge(CLIENT, server(("172.17.0.1", 52702), ("10.0.0.5", 7007)))
    assert verdict == FlowVerdict.PROXIED


def test_unmatched_with_one_end_only() -> None:
    [flow] = join_flows(CLIENT)
    assert (flow.verdict, flow.server) == (FlowVerdict.UNMATCHED, None)


def test_unix_paths_are_compared_as_paths() -> None:
    client = [obs(Role.CLIENT, "getsockname", local=""), obs(Role.CLIENT, "getpeername", remote="/run/e.sock")]
    seen = [obs(Role.SERVER, "getsockname", local="/run/e.sock"), obs(Role.SERVER, "accept", remote="")]
    [flow] = join_flows(client + seen)
    assert (flow.verdict, flow.family, flow.proto) == (FlowVerdict.DIRECT, "unix", "unix")


def test_concrete_local_name_beats_a_wildcard_and_getpeername_beats_connect() -> None:
    client = [
        obs(Role.CLIENT, "bind", local=("0.0.0.0", 47000)),
        obs(Role.CLIENT, "connect", remote=("echo-alias", 7007)),
        obs(Role.CLIENT, "getsockname", local=("192.168.50.20", 47000)),
        obs(Role.CLIENT, "getpeername", remote=("198.51.100.10", 7007)),
        obs(Role.CLIENT, "bind", local=("0.0.0.0", 47000)),
    ]
    [flow] = join_flows(client)
    assert flow.client is not None
    assert flow.client.sockname == ("192.168.50.20", 47000)
    assert flow.client.peername == ("198.51.100.10", 7007)


def test_flows_keep_their_order_and_records_without_flow_are_ignored() -> None:
    records = [obs(Role.SERVER, "bind", local=("::", 7007, 0, 0), flow=None)]  # type: ignore[arg-type]
    records += [obs(Role.CLIENT, "connect", remote=("198.51.100.10", 7007), flow=f) for f in ("b", "a", "c")]
    assert [f.flow for f in join_flows(records)] == ["b", "a", "c"]
