"""Hole punching between client-lan and client-lan2, each behind its own router: both ends, both routers' conntrack."""

from __future__ import annotations

import pytest

from services.punch_matrix import run_matrix
from shared.report_model import FlowVerdict, HopKind
from shared.stack import Stack
from tests.integration.stack import address, entry_between, last_json, outside_name, punch

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_punch_through_both_cone_nats_is_seen_alike_by_both_ends_and_both_routers(stack: Stack, proto: str) -> None:
    code, output = punch(stack, "client-lan2", "--proto", proto, "--json")
    assert code == 0, output
    printed = last_json(output)
    me, peer = printed["me"], printed["peer"]
    assert printed["outcome"] == "connected" and printed["candidate"] == "public", printed
    assert tuple(peer["reached_at"]) == tuple(peer["public"]), "client-lan reached client-lan2's public name"
    assert me["local"][0] == stack.ip("client-lan", "lan")
    assert tuple(me["seen_by_peer_as"]) == tuple(me["public"]), "the peer saw us by the name the registry saw"
    assert me["public"][0] == stack.ip("router", "wan") and peer["public"][0] == stack.ip("router2", "wan")

    wire = printed["flow"]
    assert wire is not None, "the collector joined both ends"
    assert wire["verdict"] == FlowVerdict.TWO_NATS, wire
    assert wire["scenario"] == f"punch-{proto}" and wire["server"]["service"] == "client-lan2"
    hops = [(hop["by"], hop["kind"]) for hop in wire["path"]]
    assert hops == [("router", HopKind.SNAT), ("router2", HopKind.DNAT)], wire["path"]

    mine, theirs = address(me["local"]), address(peer["reached_at"])
    near = entry_between(stack.conntrack("-p", proto), mine, theirs)
    assert outside_name(near, mine) == address(me["seen_by_peer_as"]), "router's entry: our public name"
    peer_local = address(wire["server"]["sockname"])
    assert peer_local[0] == stack.ip("client-lan2", "lan2")
    peer_sent_to = address(me["seen_by_peer_as"])
    far = entry_between(stack.conntrack("-p", proto, router="router2"), peer_local, peer_sent_to)
    assert outside_name(far, peer_local) == address(peer["reached_at"]), "router2's entry: its public name"


def test_every_pair_of_router_behaviours_punches_as_natcheck_predicts_and_the_stack_stays_healthy(
    stack: Stack,
) -> None:
    rows = run_matrix(stack)
    assert len(rows) == 32
    disagree = [row.to_wire() for row in rows if row.predicted != row.connected]
    assert not disagree, disagree
    assert any(row.connected for row in rows) and any(not row.connected for row in rows)
    stack.wait_ready()
    code, output = punch(stack, "client-lan2", "--json")
    assert code == 0 and last_json(output)["outcome"] == "connected", output


def test_bad_rendezvous_input_gets_a_clear_error(stack: Stack) -> None:
    code, output = punch(stack, "nobody")
    assert code == 1 and "unknown peer 'nobody': it has not registered" in output, output
    code, output = punch(stack, "echo", "--wait", "0.5")
    assert code == 1 and "peer 'echo' never asked for a rendezvous with 'client-lan' within 0.5 s" in output, output
    wan_ip, lan2_wan = stack.ip("client-wan", "wan"), stack.ip("router2", "wan")
    code, output = punch(stack, "client-lan", service="client-wan", env={"SOCKLAB_SERVICE": "client-lan2"})
    assert code == 1, output
    assert f"'client-lan2' is registered from {lan2_wan}, not from {wan_ip}: not yours to claim" in output, output
