"""A flow's path: conntrack and Docker binding records, the router's event parser, and the join that names each hop."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

from services.collector import Collector, Store
from services.conntrack_events import parse_event, stream_events
from services.docker_facts import dnat_events
from services.flows import join_flows
from services.paths import Evidence
from shared.conntrack import parse_conntrack
from shared.record import (
    ConntrackEvent,
    ConntrackEventType,
    ConntrackTuple,
    DockerBinding,
    Family,
    Mechanism,
    Method,
    Observation,
    Proto,
    Role,
    pack_record,
    unpack_record,
)
from shared.report_model import Flow, FlowVerdict, HopKind
from tests.conftest import LiveCollector, MakeReporter
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

SETUP: dict[str, Any] = {
    "mode": "cone",
    "filtering": "address-and-port-dependent",
    "hairpin": False,
    "wan_address": "198.51.100.2",
    "rules": {"snat-ipv4": "iptables -t nat -A SOCKLAB_POST -s 192.168.50.0/24 ! -d 192.168.50.0/24 -j MASQUERADE"},
}
# Real lines from the router's `conntrack -E -e NEW,DESTROY -o extended,id,timestamp` (tabs as printed).
NEW_UDP4 = (
    "[1795689153.343002]\t    [NEW] ipv4     2 udp      17 30 src=192.168.50.20 dst=198.51.100.10 sport=54893 "
    "dport=7007 [UNREPLIED] src=198.51.100.10 dst=198.51.100.2 sport=7007 dport=54893 id=4161040261"
)
NEW_TCP6 = (
    "[1795689153.336876]\t    [NEW] ipv6     10 tcp      6 120 SYN_SENT src=fd00:50::20 dst=2001:db8:100::3 "
    "sport=54546 dport=5300 [UNREPLIED] src=2001:db8:100::3 dst=2001:db8:100::2 sport=5300 dport=54546 id=488085748"
)
DESTROY_UDP4 = (
    "[1795689155.693369]\t[DESTROY] ipv4     2 udp      17 27 src=192.168.50.20 dst=198.51.100.10 sport=54893 "
    "dport=7007 src=198.51.100.10 dst=198.51.100.2 sport=7007 dport=54893 id=4161040261 [USERSPACE] portid=3400706834"
)
ICMP = (
    "[1795689155.1]\t    [NEW] ipv4     2 icmp     1 30 src=192.168.50.20 dst=198.51.100.10 type=8 code=0 id=7 "
    "[UNREPLIED] src=198.51.100.10 dst=198.51.100.2 type=0 code=0 id=7 id=99"
)
GARBAGE = [
    "",
    "conntrack v1.4.7 (conntrack-tools): 8 flow events have been shown.",
    "[1.0] [UPDATE] ipv4 2 udp 17 30 src=1.2.3.4 dst=1.2.3.5 sport=1 dport=2 src=1.2.3.5 dst=1.2.3.4 sport=2 "
    "dport=1 id=1",
    "[1.0] [NEW] ipv4 2 udp 17 30 src=1.2.3.4 dst=1.2.3.5 sport=1 dport=2 id=1",
    "[1.0] [NEW] ipv4 2 udp 17 30 src=1.2.3.4 dst=1.2.3.5 sport=1 dport=x src=1.2.3.5 dst=1.2.3.4 sport=2 dport=1 id=1",
    "[1.0] [NEW] ipv4 2 udp 17 30 src=1.2.3 dst=1.2.3.5 sport=1 dport=2 src=1.2.3.5 dst=1.2.3.4 sport=2 dport=1 id=1",
    "[1.0] [NEW] ipv4 2 udp 17 30 src=1.2.3.4 dst=1.2.3.5 sport=1 dport=99999 src=1.2.3.5 dst=1.2.3.4 sport=2 "
    "dport=1 id=1",
    "[1.0] [NEW] ipv4 2 udp 17 30 src=1.2.3.4 dst=1.2.3.5 sport=1 dport=2 src=1.2.3.5 dst=1.2.3.4 sport=2 "
    "dport=1 id=-1",
    "\x00\xff binary junk \x1b[2J",
]

LAN, WAN, ECHO = ("192.168.50.20", 40000), ("198.51.100.2", 40000), ("198.51.100.10", 7007)
ECHO_MAPPED, WAN_MAPPED = ("::ffff:198.51.100.10", 7007, 0, 0), ("::ffff:198.51.100.2", 40000, 0, 0)


def event(
    kind: ConntrackEventType = ConntrackEventType.NEW,
    *,
    conntrack_id: int = 7,
    original: tuple[Any, Any] = (LAN, ECHO),
    reply: tuple[Any, Any] = (ECHO, WAN),
    proto: Proto = Proto.TCP,
    moment: float = 100.0,
    setup: dict[str, Any] | None = None,
) -> ConntrackEvent:
    (src, sport), (dst, dport) = original
    (rsrc, rsport), (rdst, rdport) = reply
    return ConntrackEvent(
        "router",
        "router-host",
        kind,
        conntrack_id,
        proto,
        Family.IPV6 if ":" in src else Family.IPV4,
        ConntrackTuple(src, dst, sport, dport),
        ConntrackTuple(rsrc, rdst, rsport, rdport),
        setup=SETUP if setup is None else setup,
        time=moment,
    )


def observed(role: Role, method: str, local: Any = None, remote: Any = None, **fields: Any) -> Observation:
    fields.setdefault("time", 100.2)
    proto = fields.pop("proto", Proto.TCP)
    return Observation(
        role.value, "h", "f", role, proto, Family.IPV4, Method(method), local=local, remote=remote, **fields
    )


def tcp_flow(client: Any = LAN, server_peer: Any = WAN_MAPPED, server_me: Any = ECHO_MAPPED) -> list[Observation]:
    return [
        observed(Role.CLIENT, "connect", remote=ECHO),
        observed(Role.CLIENT, "getsockname", local=client, extra={"scenario": "tcp4"}),
        observed(Role.SERVER, "accept", remote=server_peer),
        observed(Role.SERVER, "getsockname", local=server_me),
    ]


def only_flow(records: list[Observation], evidence: Evidence) -> Flow:
    [flow] = join_flows(records, evidence)
    return flow


def hops(flow: Flow) -> list[tuple[str, HopKind, Any, Any]]:
    """Each hop of a flow's path as (by, kind, before, after): what the path's tests compare."""
    return [(hop.by, hop.kind, hop.before, hop.after) for hop in flow.path]


# The records


def binding(**changes: Any) -> DockerBinding:
    fields: dict[str, Any] = {
        "service": "host",
        "host": "buildhost",
        "proto": Proto.TCP,
        "host_ip": "127.0.0.1",
        "host_port": 32991,
        "container": "socklab-echo-1",
        "container_ip": "198.51.100.10",
        "container_port": 7007,
        "network": "socklab_wan",
        "gateway": "198.51.100.1",
        "mechanism": Mechanism.DOCKER_PROXY,
        "proxy_pid": 4242,
        "proxy_command": ("/usr/sbin/docker-proxy", "-proto", "tcp"),
        "time": 99.0,
    }
    return DockerBinding(**{**fields, **changes})


@pytest.mark.parametrize("record", [event(), event(ConntrackEventType.DESTROY, proto=Proto.UDP), binding()])
def test_every_kind_round_trips_exactly(record: Any) -> None:
    assert unpack_record(pack_record(record)) == record


def test_an_observation_has_no_kind_key_and_reads_as_before() -> None:
    obs = observed(Role.CLIENT, "connect", remote=ECHO)
    wire = msgpack.unpackb(pack_record(obs), raw=False)
    assert "kind" not in wire
    assert unpack_record(pack_record(obs)) == obs


def wire_of(record: Any, **changes: Any) -> bytes:
    return msgpack.packb({**record.to_wire(), **changes}, use_bin_type=True)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (wire_of(event(), kind="bogus"), "kind 'bogus' is unknown"),
        (wire_of(event(), kind=7), "kind 7 is unknown"),
        (wire_of(event(), event="update"), "event 'update' is unknown"),
        (wire_of(event(), proto="unix"), "tcp or udp"),
        (wire_of(event(), family="unix"), "ipv4 or ipv6"),
        (wire_of(event(), id="7"), "'id' has type str"),
        (wire_of(event(), original={"src": "x", "dst": "1.2.3.4", "sport": 1, "dport": 2}), "not an IP address"),
        (wire_of(event(), reply={"src": "1.2.3.4", "dst": "1.2.3.4", "sport": 1, "dport": 70000}), "out of range"),
        (wire_of(event(), reply=[1, 2]), "is a list, not a map"),
        (wire_of(event(), setup=None), "'setup' has type NoneType"),
        (wire_of(event(), v=2), "schema version 2"),
        (wire_of(event(), time=float("nan")), "not finite"),
        (wire_of(binding(), mechanism="teleport"), "mechanism 'teleport' is unknown"),
        (wire_of(binding(), host_port=0), "out of range"),
        (wire_of(binding(), gateway="gw"), "not an IP address"),
        (wire_of(binding(), proxy_command=[1]), "list of strings"),
        (wire_of(binding(), proxy_pid="1"), "'proxy_pid' has type str"),
    ],
)
def test_malformed_records_of_each_kind_say_what_is_wrong(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        unpack_record(raw)


def test_the_collector_keeps_each_kind_apart_and_rejects_bad_ones(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    accepted = [collector.ingest(pack_record(r)) for r in (event(), binding(), observed(Role.CLIENT, "connect"))]
    assert accepted == [True, True, True]
    assert not collector.ingest(wire_of(event(), original=None))
    assert (len(collector.conntrack), len(collector.bindings), len(collector.observations)) == (1, 1, 1)
    assert collector.rejected == 1
    collector.store.close()
    again = Collector(Store(str(tmp_path / "r.bin")))
    assert (again.conntrack, again.bindings) == (collector.conntrack, collector.bindings), "replayed from the store"
    again.store.close()


# The router's event lines


def test_event_lines_become_records_with_both_tuples_and_the_id() -> None:
    new = parse_event(NEW_UDP4, "router", "r", SETUP)
    assert new == ConntrackEvent(
        "router",
        "r",
        ConntrackEventType.NEW,
        4161040261,
        Proto.UDP,
        Family.IPV4,
        ConntrackTuple("192.168.50.20", "198.51.100.10", 54893, 7007),
        ConntrackTuple("198.51.100.10", "198.51.100.2", 7007, 54893),
        setup=SETUP,
        time=1795689153.343002,
    )
    gone = parse_event(DESTROY_UDP4, "router", "r", {})
    assert gone is not None and (gone.event, gone.id, gone.original) == (
        ConntrackEventType.DESTROY,
        new.id,
        new.original,
    )
    six = parse_event(NEW_TCP6, "router", "r", {})
    assert six is not None and (six.family, six.proto, six.reply.dst) == (Family.IPV6, Proto.TCP, "2001:db8:100::2")


def test_other_protocols_are_skipped() -> None:
    assert parse_event(ICMP, "router", "r", {}) is None


@pytest.mark.parametrize("line", GARBAGE[1:])
def test_garbage_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_event(line, "router", "r", {})


def test_the_stream_counts_garbage_and_reports_every_event(
    make_reporter: MakeReporter, live_collector: LiveCollector
) -> None:
    stats: Counter[str] = Counter()
    lines = [GARBAGE[1], NEW_UDP4, *GARBAGE[2:], ICMP, NEW_TCP6, DESTROY_UDP4, GARBAGE[0]]
    stream_events(lines, make_reporter("router"), lambda: SETUP, stats)
    assert stats == Counter(events=3, rejected=len(GARBAGE) - 1, other_protocols=1)
    held = wait_for(lambda: len(live_collector.collector.conntrack) == 3 and live_collector.collector.conntrack, "3")
    assert [e.id for e in held] == [4161040261, 488085748, 4161040261]
    assert all(e.setup == SETUP and e.service == "router" for e in held)


# The join


def test_a_nat_flow_gets_the_router_hop_its_conntrack_entry_shows() -> None:
    flow = only_flow(tcp_flow(), Evidence([event()]))
    assert flow.verdict == FlowVerdict.SNAT
    assert hops(flow) == [("router", HopKind.SNAT, LAN, WAN)]
    [hop] = flow.path
    assert hop.rule == SETUP["rules"]["snat-ipv4"]
    assert hop.evidence["conntrack_id"] == 7 and hop.evidence["mode"] == "cone"
    assert hop.evidence["original"] == {"src": LAN[0], "dst": ECHO[0], "sport": LAN[1], "dport": ECHO[1]}


def test_a_direct_flow_has_an_empty_path_even_beside_other_entries() -> None:
    flow = only_flow(tcp_flow(server_peer=LAN), Evidence([event()]))
    assert (flow.verdict, flow.path) == (FlowVerdict.DIRECT, ())


def test_the_entry_must_match_both_ends_and_the_protocol() -> None:
    other_port = event(reply=(ECHO, ("198.51.100.2", 1024)))
    assert only_flow(tcp_flow(), Evidence([other_port])).path == ()
    assert only_flow(tcp_flow(), Evidence([event(proto=Proto.UDP)])).path == ()


def test_the_newest_entry_alive_at_the_flows_time_is_chosen() -> None:
    stale = [event(conntrack_id=1, moment=10.0), event(ConntrackEventType.DESTROY, conntrack_id=1, moment=20.0)]
    later = event(conntrack_id=3, moment=500.0)
    alive = [event(conntrack_id=2, moment=50.0), event(conntrack_id=4, moment=99.0)]
    [hop] = only_flow(tcp_flow(), Evidence([*stale, *alive, later])).path
    assert hop.evidence["conntrack_id"] == 4
    assert only_flow(tcp_flow(), Evidence([*stale, later])).path == (), "dead before, born after: no entry"


def test_an_entry_whose_new_event_was_missed_still_explains_a_flow_it_outlived() -> None:
    [hop] = only_flow(tcp_flow(), Evidence([event(ConntrackEventType.DESTROY, moment=130.0)])).path
    assert hop.evidence["new"] is None and hop.evidence["destroy"] == 130.0


def test_a_server_only_flow_is_joined_by_the_reply_tuple() -> None:
    records = [r for r in tcp_flow() if r.role == Role.SERVER]
    flow = only_flow(records, Evidence([event()]))
    assert flow.verdict == FlowVerdict.UNMATCHED
    assert [(h.kind, h.before, h.after) for h in flow.path] == [(HopKind.SNAT, LAN, WAN)]


def test_hairpin_names_the_dnat_and_the_snat_and_is_not_called_a_proxy() -> None:
    wan_port = ("198.51.100.2", 40000)
    setup = {**SETUP, "rules": {"hairpin-dnat": "DNAT to dmz", "hairpin-snat": "SNAT to wan"}}
    entry = event(original=(LAN, wan_port), reply=(LAN, ("198.51.100.2", 40001)), proto=Proto.UDP, setup=setup)
    records = [
        observed(Role.CLIENT, "sendto", remote=wan_port, proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=LAN, proto=Proto.UDP),
        observed(Role.SERVER, "recvfrom", local=LAN, remote=("198.51.100.2", 40001), proto=Proto.UDP),
    ]
    flow = only_flow(records, Evidence([entry]))
    assert flow.verdict == FlowVerdict.HAIRPIN
    assert [(h.kind, h.rule, h.before, h.after) for h in flow.path] == [
        (HopKind.HAIRPIN, "DNAT to dmz", wan_port, LAN),
        (HopKind.SNAT, "SNAT to wan", LAN, ("198.51.100.2", 40001)),
    ]


# A punched hole: client-lan behind router, client-lan2 behind router2, each end's names as it saw them.
A_LAN, A_WAN = ("192.168.50.20", 33043), ("198.51.100.2", 33043)
B_LAN, B_WAN = ("192.168.60.20", 34316), ("198.51.100.5", 34316)


def punched(b_sent_first: bool) -> Evidence:
    """Both routers' entries for one punched udp hole; router2's made by B's packet out, or A's let in."""
    near = event(original=(A_LAN, B_WAN), reply=(B_WAN, A_WAN), proto=Proto.UDP)
    far = (
        event(original=(B_LAN, A_WAN), reply=(A_WAN, B_WAN), proto=Proto.UDP, conntrack_id=8)
        if b_sent_first
        else event(original=(A_WAN, B_WAN), reply=(B_LAN, A_WAN), proto=Proto.UDP, conntrack_id=8)
    )
    far = ConntrackEvent(**{**far.__dict__, "service": "router2", "host": "router2-host"})
    return Evidence([near, far])


@pytest.mark.parametrize("b_sent_first", [True, False])
def test_a_hole_between_two_nats_names_both_routers_and_is_not_called_a_proxy(b_sent_first: bool) -> None:
    records = [
        observed(Role.CLIENT, "sendto", remote=B_WAN, proto=Proto.UDP),
        observed(Role.CLIENT, "recvfrom", remote=B_WAN, proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=A_LAN, proto=Proto.UDP, extra={"scenario": "punch-udp"}),
        observed(Role.SERVER, "recvfrom", remote=A_WAN, proto=Proto.UDP),
        observed(Role.SERVER, "getsockname", local=B_LAN, proto=Proto.UDP),
    ]
    flow = only_flow(records, punched(b_sent_first))
    assert flow.verdict == FlowVerdict.TWO_NATS
    assert hops(flow) == [
        ("router", HopKind.SNAT, A_LAN, A_WAN),
        ("router2", HopKind.DNAT, B_WAN, B_LAN),
    ]
    assert ("reply direction" in flow.path[1].rule) == b_sent_first


def test_without_the_second_routers_entry_the_flow_stays_proxied() -> None:
    records = [
        observed(Role.CLIENT, "sendto", remote=B_WAN, proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=A_LAN, proto=Proto.UDP, extra={"scenario": "punch-udp"}),
        observed(Role.SERVER, "recvfrom", remote=A_WAN, proto=Proto.UDP),
        observed(Role.SERVER, "getsockname", local=B_LAN, proto=Proto.UDP),
    ]
    near = event(original=(A_LAN, B_WAN), reply=(B_WAN, A_WAN), proto=Proto.UDP)
    flow = only_flow(records, Evidence([near]))
    assert flow.verdict == FlowVerdict.PROXIED and flow.path == ()


def stun_change_request(answered: bool) -> list[Observation]:
    """natcheck's CHANGE-REQUEST transaction behind the router: sent to .3:3478, answered from .4:3479."""
    sent, origin = ("198.51.100.3", 3478), ("198.51.100.4", 3479)
    records = [
        observed(Role.CLIENT, "sendto", remote=sent, proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=LAN, proto=Proto.UDP),
        observed(Role.SERVER, "recvfrom", local=sent, remote=WAN, proto=Proto.UDP),
        observed(Role.SERVER, "sendto", local=origin, remote=WAN, proto=Proto.UDP),
    ]
    return records + ([observed(Role.CLIENT, "recvfrom", remote=origin, proto=Proto.UDP)] if answered else [])


@pytest.mark.parametrize("answered", [False, True], ids=["filtered", "let-in"])
def test_a_change_request_is_judged_by_the_requests_path_and_its_answer_is_shown_apart(answered: bool) -> None:
    entry = event(original=(LAN, ("198.51.100.3", 3478)), reply=(("198.51.100.3", 3478), WAN), proto=Proto.UDP)
    flow = only_flow(stun_change_request(answered), Evidence([entry]))
    assert flow.verdict == FlowVerdict.SNAT, "a STUN server answering from its other address is no proxy"
    assert flow.client is not None and flow.client.peername == ("198.51.100.3", 3478)
    assert flow.server is not None and flow.server.sockname == ("198.51.100.3", 3478)
    assert flow.answer is not None and flow.answer.source == ("198.51.100.4", 3479)
    assert flow.answer.arrived is answered
    assert [h.kind for h in flow.path] == [HopKind.SNAT]


def test_tcp_flows_have_no_answer_and_echo_udp_flows_say_theirs_arrived() -> None:
    assert only_flow(tcp_flow(), Evidence()).answer is None
    records = [
        observed(Role.CLIENT, "connect", remote=ECHO, proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=LAN, extra={"reflexive": list(WAN)}, proto=Proto.UDP),
        observed(Role.SERVER, "recvmsg", local=ECHO_MAPPED, remote=WAN_MAPPED, proto=Proto.UDP),
        observed(Role.SERVER, "sendto", remote=WAN_MAPPED, proto=Proto.UDP),
    ]
    answer = only_flow(records, Evidence()).answer
    assert answer is not None and answer.arrived and answer.source is None


# Docker's published ports

HOST_ME, PUBLISHED, GATEWAY_SEEN = ("127.0.0.1", 52000), ("127.0.0.1", 32991), ("::ffff:198.51.100.1", 45686, 0, 0)
GATEWAY = ("198.51.100.1", 45686)  # GATEWAY_SEEN as a hop names it, unmapped
PROXY_HOP = ("docker-proxy", HopKind.PROXY, PUBLISHED, GATEWAY)


def published_flow(server_peer: Any = GATEWAY_SEEN) -> list[Observation]:
    return [
        observed(Role.CLIENT, "connect", remote=PUBLISHED),
        observed(Role.CLIENT, "getsockname", local=HOST_ME),
        observed(Role.SERVER, "accept", remote=server_peer),
        observed(Role.SERVER, "getsockname", local=ECHO_MAPPED),
    ]


def test_a_proxied_published_port_gets_the_docker_proxy_hop() -> None:
    old = binding(proxy_pid=1, time=10.0)
    flow = only_flow(published_flow(), Evidence(bindings=[old, binding()]))
    assert flow.verdict == FlowVerdict.PROXIED
    assert hops(flow) == [PROXY_HOP]
    [hop] = flow.path
    assert hop.rule == "/usr/sbin/docker-proxy -proto tcp"
    assert hop.evidence["proxy_pid"] == 4242, "the newest binding record speaks"
    assert hop.evidence["target"] == ["198.51.100.10", 7007]


def test_a_binding_names_a_flow_only_when_port_protocol_target_and_gateway_agree() -> None:
    for wrong in (
        binding(host_port=1),
        binding(proto=Proto.UDP),
        binding(container_ip="198.51.100.11"),
        binding(gateway="198.51.100.254"),
    ):
        assert only_flow(published_flow(), Evidence(bindings=[wrong])).path == ()


def test_docker_dnat_without_a_proxy_names_the_dnat_and_the_masquerade() -> None:
    dnat = binding(mechanism=Mechanism.DOCKER_DNAT, proxy_pid=None, proxy_command=())
    flow = only_flow(published_flow(), Evidence(bindings=[dnat]))
    assert hops(flow) == [
        ("docker-dnat", HopKind.DNAT, PUBLISHED, ECHO),
        ("docker-masquerade", HopKind.SNAT, HOST_ME, GATEWAY),
    ]
    kept = only_flow(published_flow(server_peer=HOST_ME), Evidence(bindings=[dnat]))
    assert [h.kind for h in kept.path] == [HopKind.DNAT], "no masquerade when the source survived"


def test_path_survives_the_report_wire() -> None:
    flow = only_flow(tcp_flow(), Evidence([event()]))
    assert flow.path and Flow.from_wire(flow.to_wire()) == flow


def server_only_published_flow() -> list[Observation]:
    """What echo reports of a client that is not socklab's (nc through a published port): its end alone."""
    return published_flow()[2:]


def test_a_server_only_flow_through_docker_proxy_names_the_one_published_port() -> None:
    flow = only_flow(server_only_published_flow(), Evidence(bindings=[binding()]))
    assert flow.client is None
    assert hops(flow) == [PROXY_HOP]


def test_a_server_only_flow_with_several_candidate_ports_lists_them_and_claims_none() -> None:
    bindings = [binding(), binding(host_ip="198.51.100.1", host_port=7007), binding(host_port=1, container_port=9)]
    flow = only_flow(server_only_published_flow(), Evidence(bindings=bindings))
    assert hops(flow) == [("docker-proxy", HopKind.PROXY, ECHO, GATEWAY)]
    [hop] = flow.path
    assert hop.evidence["published_candidates"] == [["127.0.0.1", 32991, "tcp"], ["198.51.100.1", 7007, "tcp"]]
    assert "one of 2 published bindings" in hop.rule


def test_a_server_only_flow_from_elsewhere_gets_no_docker_hop() -> None:
    dnat = binding(mechanism=Mechanism.DOCKER_DNAT, proxy_pid=None, proxy_command=())
    for evidence in (Evidence(), Evidence(bindings=[binding(gateway="198.51.100.254")]), Evidence(bindings=[dnat])):
        assert only_flow(server_only_published_flow(), evidence).path == ()


# A carrier-grade NAT (TOPOLOGY=cgn): client-home behind home-router behind cgn; client-cgn behind cgn only.
H_LAN, H_CGN, H_PUB = ("192.168.70.20", 41000), ("100.64.1.10", 41000), ("198.51.100.6", 41000)
C_LAN, C_PUB = ("100.64.2.20", 52000), ("198.51.100.6", 52000)


def at(router: str, entry: ConntrackEvent) -> ConntrackEvent:
    """An event as another router streamed it."""
    return ConntrackEvent(**{**entry.__dict__, "service": router, "host": f"{router}-host"})


def test_a_flow_through_a_home_router_and_a_cgn_is_two_nats_with_both_snat_hops_in_order() -> None:
    home = at("home-router", event(original=(H_LAN, ECHO), reply=(ECHO, H_CGN), conntrack_id=1))
    cgn = at("cgn", event(original=(H_CGN, ECHO), reply=(ECHO, H_PUB), conntrack_id=2))
    flow = only_flow(tcp_flow(client=H_LAN, server_peer=H_PUB, server_me=ECHO), Evidence([cgn, home]))
    assert flow.verdict == FlowVerdict.TWO_NATS and flow.port_preserved
    assert hops(flow) == [
        ("home-router", HopKind.SNAT, H_LAN, H_CGN),
        ("cgn", HopKind.SNAT, H_CGN, H_PUB),
    ]


def test_a_chain_that_does_not_reach_the_servers_names_explains_nothing() -> None:
    home = at("home-router", event(original=(H_LAN, ECHO), reply=(ECHO, H_CGN), conntrack_id=1))
    flow = only_flow(tcp_flow(client=H_LAN, server_peer=H_PUB, server_me=ECHO), Evidence([home]))
    assert flow.verdict == FlowVerdict.SNAT and flow.path == ()


def test_a_server_only_flow_walks_back_through_both_nats() -> None:
    home = at("home-router", event(original=(H_LAN, ECHO), reply=(ECHO, H_CGN), conntrack_id=1))
    cgn = at("cgn", event(original=(H_CGN, ECHO), reply=(ECHO, H_PUB), conntrack_id=2))
    records = [r for r in tcp_flow(client=H_LAN, server_peer=H_PUB, server_me=ECHO) if r.role == Role.SERVER]
    flow = only_flow(records, Evidence([home, cgn]))
    assert [(h.by, h.before, h.after) for h in flow.path] == [("home-router", H_LAN, H_CGN), ("cgn", H_CGN, H_PUB)]


def cgn_hairpin() -> Evidence:
    """client-home's punch to client-cgn's public name, turned back inside the cgn to client-cgn (its DMZ)."""
    hairpin_source = ("198.51.100.6", 53618)  # the hairpin's SNAT could not keep 41000: the port may change
    home = at("home-router", event(original=(H_LAN, C_PUB), reply=(C_PUB, H_CGN), proto=Proto.UDP, conntrack_id=1))
    cgn = at("cgn", event(original=(H_CGN, C_PUB), reply=(C_LAN, hairpin_source), proto=Proto.UDP, conntrack_id=2))
    return Evidence([home, cgn])


def test_a_hairpin_inside_the_cgn_names_the_home_router_and_the_cgns_turn() -> None:
    records = [
        observed(Role.CLIENT, "sendto", remote=C_PUB, proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=H_LAN, proto=Proto.UDP, extra={"scenario": "punch-udp"}),
        observed(Role.SERVER, "recvfrom", remote=("198.51.100.6", 53618), proto=Proto.UDP),
        observed(Role.SERVER, "getsockname", local=C_LAN, proto=Proto.UDP),
    ]
    flow = only_flow(records, cgn_hairpin())
    assert flow.verdict == FlowVerdict.HAIRPIN
    assert hops(flow) == [
        ("home-router", HopKind.SNAT, H_LAN, H_CGN),
        ("cgn", HopKind.HAIRPIN, C_PUB, C_LAN),
        ("cgn", HopKind.SNAT, H_CGN, ("198.51.100.6", 53618)),
    ]


def test_the_other_way_through_the_same_hairpin_crosses_both_entries_as_replies() -> None:
    records = [
        observed(Role.CLIENT, "sendto", remote=("198.51.100.6", 53618), proto=Proto.UDP),
        observed(Role.CLIENT, "getsockname", local=C_LAN, proto=Proto.UDP, extra={"scenario": "punch-udp"}),
        observed(Role.SERVER, "recvfrom", remote=C_PUB, proto=Proto.UDP),
        observed(Role.SERVER, "getsockname", local=H_LAN, proto=Proto.UDP),
    ]
    flow = only_flow(records, cgn_hairpin())
    assert flow.verdict == FlowVerdict.HAIRPIN
    assert hops(flow) == [
        ("cgn", HopKind.HAIRPIN, ("198.51.100.6", 53618), H_CGN),
        ("cgn", HopKind.SNAT, C_LAN, C_PUB),
        ("home-router", HopKind.DNAT, H_CGN, H_LAN),
    ]
    assert all("reply direction" in hop.rule for hop in flow.path)


# The host to echo's port published on wan's gateway: Docker's DNAT in the host's kernel (no proxy for the host's
# own packets), as `socklab docker-facts` lists it from the host's conntrack table.
WAN_GATEWAY, ON_GATEWAY = "198.51.100.1", ("198.51.100.1", 7007)


def test_a_server_only_flow_dnated_by_docker_names_the_hosts_entry_not_the_proxy() -> None:
    table = parse_conntrack(
        "tcp      6 431999 ESTABLISHED src=198.51.100.1 dst=198.51.100.1 sport=51000 dport=7007 "
        "src=198.51.100.10 dst=198.51.100.1 sport=7007 dport=51000 [ASSURED] mark=0 use=1\n"
        "tcp      6 431999 ESTABLISHED src=198.51.100.20 dst=198.51.100.1 sport=52000 dport=7007 "
        "src=198.51.100.1 dst=198.51.100.20 sport=7007 dport=52000 [ASSURED] mark=0 use=1\n"
    )
    proxy = binding(host_ip=WAN_GATEWAY, host_port=7007, gateway=WAN_GATEWAY)
    [listed] = dnat_events([proxy], table, "buildhost")
    assert listed.event == ConntrackEventType.LISTED and listed.service == "docker-dnat"
    assert listed.setup["rules"]["inbound-dnat"] == (
        "DOCKER -p tcp -d 198.51.100.1 --dport 7007 -j DNAT --to-destination 198.51.100.10:7007"
    )
    records = [
        observed(Role.SERVER, "accept", remote=("::ffff:198.51.100.1", 51000, 0, 0), time=500.0),
        observed(Role.SERVER, "getsockname", local=ECHO_MAPPED, time=500.0),
    ]
    flow = only_flow(records, Evidence([listed], [proxy]))
    assert hops(flow) == [
        ("docker-dnat", HopKind.DNAT, ON_GATEWAY, ECHO),
    ]
    without = only_flow(records, Evidence([], [proxy]))
    assert [h.by for h in without.path] == ["docker-proxy"], "without the host's entry: the proxy, as before"
