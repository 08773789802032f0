"""A flow's path: who rewrote its names between the ends, told from the kernel's and Docker's own records.

The routers stream their conntrack events (services.conntrack_events); a flow is joined to the chain
of entries that turns the client's own name -> its destination into the server's peer -> the server's
own name (IPv4-mapped names unmapped): each entry crossed the way its original tuple goes (a rewrite)
or its reply tuple goes (a rewrite undone, as by a packet let in through a hole another one punched),
newest first among those alive at the flow's time. Two NATs in a row (a home router behind a CGN), a
hole between two NATs and a CGN's hairpin are such chains. Where only one end reported, the chain goes
as far as that end's names lead. Each rewrite an entry shows is a hop: the destination (DNAT, or
hairpin when the source is rewritten too) before the source (SNAT), in the order netfilter applies
them (PREROUTING, then POSTROUTING).

Published ports are rewritten on the Docker host, which the collector cannot see; the host-side command
(services.docker_facts) reports each binding, and a flow to a binding's host address that reached the
binding's container gets a docker-proxy hop (a user-space proxy's second connection, from the bridge
gateway) or docker-dnat hops (the host kernel's DNAT, and the masquerade to the gateway).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from shared.names import Name, endpoint, format_name
from shared.record import ConntrackEvent, ConntrackEventType, ConntrackTuple, DockerBinding, Family, Mechanism, Proto
from shared.report_model import FlowEnd, Hop, HopKind

# Records come from different processes: the router reads an event just after the packet that made it.
SLACK = 1.0
Address = tuple[str, int]
ANY_HOST = ("0.0.0.0", "::")  # a binding published on every host address serves whichever one the client used
TupleKey = tuple[str, Address, Address]
MAX_HOPS = 8  # entries one flow may cross (two NATs in a row, a CGN's hairpin, and room to spare)
MAX_CANDIDATES = 4  # entries tried at each step, newest first: older ones are earlier flows of the same names
REPLY_DIRECTION = " (the entry's reply direction)"
DOCKER_DNAT = "docker-dnat"  # who rewrote a flow at a published port in the host's kernel (not its proxy)


@dataclass
class ConntrackEntry:
    """One conntrack entry's life as the router's events tell it: made (NEW) and, perhaps, gone (DESTROY)."""

    id: int
    proto: Proto
    family: Family
    original: ConntrackTuple
    reply: ConntrackTuple
    router: str
    setup: dict
    service: str = "router"
    born: float | None = None
    died: float | None = None

    def alive(self, first: float, last: float) -> bool:
        """Whether the entry existed at some moment of the flow's records."""
        born = -math.inf if self.born is None else self.born
        died = math.inf if self.died is None else self.died
        return born <= last + SLACK and died >= first - SLACK


def source(tup: ConntrackTuple) -> Address:
    """Where a tuple's packets come from."""
    return (tup.src, tup.sport)


def destination(tup: ConntrackTuple) -> Address:
    """Where a tuple's packets go."""
    return (tup.dst, tup.dport)


def ip_endpoint(name: Name | None) -> Address | None:
    """An IP name folded for comparison with the kernel's tuples; None for a path or nothing."""
    if not isinstance(name, tuple):
        return None
    folded = endpoint(name)
    assert isinstance(folded, tuple)
    return folded


def entries_from(events: Iterable[ConntrackEvent]) -> list[ConntrackEntry]:
    """Fold NEW and DESTROY events into entries, one per conntrack id and original tuple."""
    entries: dict[tuple[str, int, str, ConntrackTuple], ConntrackEntry] = {}
    for event in events:
        key = (event.host, event.id, event.proto, event.original)
        entry = entries.get(key)
        if entry is None or (event.event == ConntrackEventType.NEW and entry.born is not None):
            entry = ConntrackEntry(
                event.id, event.proto, event.family, event.original, event.reply, event.host, event.setup, event.service
            )
            entries[key] = entry
        if event.event == ConntrackEventType.NEW:
            entry.born, entry.setup = event.time, event.setup
        elif event.event == ConntrackEventType.DESTROY:
            entry.died = event.time
    return list(entries.values())


class Evidence:
    """The router's conntrack entries and the Docker host's bindings, indexed for joining flows to them."""

    def __init__(self, events: Iterable[ConntrackEvent] = (), bindings: Iterable[DockerBinding] = ()) -> None:
        self.by_original: dict[TupleKey, list[ConntrackEntry]] = {}
        self.by_reply: dict[TupleKey, list[ConntrackEntry]] = {}
        for entry in entries_from(events):
            original = (str(entry.proto), source(entry.original), destination(entry.original))
            reply = (str(entry.proto), source(entry.reply), destination(entry.reply))
            self.by_original.setdefault(original, []).append(entry)
            self.by_reply.setdefault(reply, []).append(entry)
        self.bindings = sorted(bindings, key=lambda binding: binding.time, reverse=True)

    def trace(
        self, proto: Proto, client: FlowEnd | None, server: FlowEnd | None, window: tuple[float, float]
    ) -> tuple[Hop, ...]:
        """Every rewrite the evidence shows between a flow's ends, client side first."""
        if proto not in (Proto.TCP, Proto.UDP):
            return ()
        routers = self.router_path(proto, client, server, window)
        if client is None and any(hop.by == DOCKER_DNAT for hop in routers):
            return routers  # the host's own entry says Docker's DNAT carried it: no guess at a proxy
        return self.docker_hops(proto, client, server) + routers

    def router_path(
        self, proto: Proto, client: FlowEnd | None, server: FlowEnd | None, window: tuple[float, float]
    ) -> tuple[Hop, ...]:
        """The routers' rewrites: the chain of conntrack entries that turns one end's names into the other's."""
        mine, theirs = (ip_endpoint(client.sockname), ip_endpoint(client.peername)) if client else (None, None)
        arrived, seen = (ip_endpoint(server.sockname), ip_endpoint(server.peername)) if server else (None, None)
        if mine and theirs:
            goal = (seen, arrived) if seen and arrived else None
            steps = self.walk(str(proto), (mine, theirs), goal, window, frozenset())
        elif arrived and seen:
            # Only the server reported: walk its answer (its own name -> its peer) back, each entry the other way.
            back = self.walk(str(proto), (arrived, seen), None, window, frozenset()) or []
            steps = [(entry, not forward) for entry, forward in reversed(back)]
        else:
            return ()
        return tuple(hop for entry, forward in steps or () for hop in entry_hops(entry, forward))

    def walk(
        self,
        proto: str,
        packet: tuple[Address, Address],
        goal: tuple[Address, Address] | None,
        window: tuple[float, float],
        used: frozenset[int],
    ) -> list[tuple[ConntrackEntry, bool]] | None:
        """The entries a packet (source, destination) crosses until it looks as `goal` (None: as far as any go).

        An entry is crossed forward (the packet is its original tuple) or backward (its reply tuple: the
        rewrite undone); newest first, and a chain that cannot reach `goal` is no answer (None).
        """
        if packet == goal:
            return []
        found = [(e, True) for e in self.by_original.get((proto, *packet), [])]
        found += [(e, False) for e in self.by_reply.get((proto, *packet), [])]
        live = [(e, forward) for e, forward in found if e.alive(*window) and id(e) not in used]
        live.sort(key=lambda step: -math.inf if step[0].born is None else step[0].born, reverse=True)
        for entry, forward in live[:MAX_CANDIDATES]:
            after = crossed(entry, forward)
            if after == packet or len(used) >= MAX_HOPS:
                continue
            rest = self.walk(proto, after, goal, window, used | {id(entry)})
            if rest is not None:
                return [(entry, forward), *rest]
        return [] if goal is None else None

    def docker_hops(self, proto: Proto, client: FlowEnd | None, server: FlowEnd | None) -> tuple[Hop, ...]:
        """Docker's rewrites of a flow to a published port, from the newest binding that names both ends."""
        if server is None:
            return ()
        if client is None:
            return self.server_only_docker_hops(proto, server)
        theirs, mine = ip_endpoint(client.peername), ip_endpoint(client.sockname)
        arrived, seen = ip_endpoint(server.sockname), ip_endpoint(server.peername)
        if not (theirs and mine and arrived and seen):
            return ()
        for binding in self.bindings:
            published = (binding.host_ip, binding.host_port)
            target = (binding.container_ip, binding.container_port)
            served = published == theirs or (binding.host_ip in ANY_HOST and binding.host_port == theirs[1])
            if binding.proto == proto and served and target == arrived:
                return binding_hops(binding, theirs, mine, seen)
        return ()

    def server_only_docker_hops(self, proto: Proto, server: FlowEnd) -> tuple[Hop, ...]:
        """A proxy hop for a flow only the server reported (nc, curl, a browser): its peer is a proxy's gateway.

        The client's own name is unknown, so the hop names the published address only when one binding
        (not a wildcard) leads to this container from this gateway; otherwise it says where the proxy's
        connection went and lists every published address that could have carried it.
        """
        arrived, seen = ip_endpoint(server.sockname), ip_endpoint(server.peername)
        if not (arrived and seen):
            return ()
        newest: dict[tuple[str, int], DockerBinding] = {}
        for binding in self.bindings:
            if (
                binding.proto == proto
                and binding.mechanism == Mechanism.DOCKER_PROXY
                and (binding.container_ip, binding.container_port) == arrived
                and binding.gateway == seen[0]
            ):
                newest.setdefault((binding.host_ip, binding.host_port), binding)
        if not newest:
            return ()
        [first, *_] = newest.values()
        if len(newest) == 1 and first.host_ip not in ANY_HOST:
            return binding_hops(first, (first.host_ip, first.host_port), seen, seen)
        [hop] = binding_hops(first, arrived, seen, seen)
        published = [[host, port, str(proto)] for host, port in newest]
        rule = f"docker-proxy (one of {len(newest)} published bindings: the client's own name was not reported)"
        evidence = {**hop.evidence, "published": None, "published_candidates": published}
        return (Hop("docker-proxy", HopKind.PROXY, rule, arrived, seen, evidence),)


def entry_evidence(entry: ConntrackEntry) -> dict:
    """What a hop cites of a conntrack entry: its id, both tuples, its life and the router's setup."""
    return {
        "conntrack_id": entry.id,
        "proto": str(entry.proto),
        "family": str(entry.family),
        "original": entry.original.to_wire(),
        "reply": entry.reply.to_wire(),
        "new": entry.born,
        "destroy": entry.died,
        "router": entry.router,
        **{key: entry.setup[key] for key in ("mode", "filtering", "hairpin", "wan_address") if key in entry.setup},
    }


def crossed(entry: ConntrackEntry, forward: bool) -> tuple[Address, Address]:
    """A packet's (source, destination) after it crossed an entry: its reply tuple turned round, or its original."""
    tup = entry.reply if forward else entry.original
    return (destination(tup), source(tup))


def entry_hops(entry: ConntrackEntry, forward: bool) -> tuple[Hop, ...]:
    """The rewrites of a packet that crossed an entry, destination first (PREROUTING), then source (POSTROUTING).

    Forward, the packet is the entry's original tuple and gets its DNAT and SNAT; the reply's way (a hole
    another packet punched), each is undone: the SNAT turns into a destination rewrite, the DNAT into a source one.
    """
    evidence = entry_evidence(entry)
    rules = entry.setup.get("rules", {})
    dnat = destination(entry.original) != source(entry.reply)
    snat = source(entry.original) != destination(entry.reply)
    dnat_purpose = "hairpin-dnat" if snat else "inbound-dnat"
    snat_purpose = "hairpin-snat" if dnat else f"snat-{entry.family}"
    if forward:
        to_destination = (dnat, dnat_purpose, destination(entry.original), source(entry.reply), "")
        to_source = (snat, snat_purpose, source(entry.original), destination(entry.reply), "")
    else:
        to_destination = (snat, snat_purpose, destination(entry.reply), source(entry.original), REPLY_DIRECTION)
        to_source = (dnat, dnat_purpose, source(entry.reply), destination(entry.original), REPLY_DIRECTION)
    destination_kind = HopKind.HAIRPIN if dnat and snat else HopKind.DNAT
    return tuple(
        Hop(entry.service, kind, rule_text(rules, purpose) + direction, before, after, evidence)
        for kind, (rewrote, purpose, before, after, direction) in (
            (destination_kind, to_destination),
            (HopKind.SNAT, to_source),
        )
        if rewrote
    )


def rule_text(rules: object, purpose: str) -> str:
    """The router's rule for a purpose, as its setup names it."""
    rule = rules.get(purpose) if isinstance(rules, dict) else None
    return rule if isinstance(rule, str) else f"({purpose}: no such rule in the router's setup)"


def dnat_rule(binding: DockerBinding) -> str:
    """Docker's DNAT rule for a binding, as the host's nat table has it."""
    return (
        f"DOCKER -p {binding.proto} -d {binding.host_ip} --dport {binding.host_port} "
        f"-j DNAT --to-destination {format_name((binding.container_ip, binding.container_port))}"
    )


def binding_hops(binding: DockerBinding, theirs: Address, mine: Address, seen: Address) -> tuple[Hop, ...]:
    """A proxy hop for a docker-proxy binding; a DNAT hop, and a masquerade hop if the source changed, otherwise."""
    published = (binding.host_ip, binding.host_port) if binding.host_ip not in ANY_HOST else theirs
    target = (binding.container_ip, binding.container_port)
    evidence = {
        "container": binding.container,
        "network": binding.network,
        "gateway": binding.gateway,
        "published": [*published, str(binding.proto)],
        "target": list(target),
        "proxy_pid": binding.proxy_pid,
        "proxy_command": list(binding.proxy_command),
        "reported_by": binding.service,
        "reported_at": binding.time,
    }
    if binding.mechanism == Mechanism.DOCKER_PROXY:
        if seen[0] != binding.gateway:
            return ()
        rule = " ".join(binding.proxy_command) or "docker-proxy"
        return (Hop("docker-proxy", HopKind.PROXY, rule, published, seen, evidence),)
    hops = [Hop(DOCKER_DNAT, HopKind.DNAT, dnat_rule(binding), published, target, evidence)]
    if seen != mine:
        rule = f"POSTROUTING -j MASQUERADE (to {binding.network}'s gateway {binding.gateway})"
        hops.append(Hop("docker-masquerade", HopKind.SNAT, rule, mine, seen, evidence))
    return tuple(hops)
