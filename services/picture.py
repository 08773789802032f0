"""The topology the page draws, from what services say about themselves and what both ends of flows saw.

Networks are the subnets of the services' interfaces (an interface's IPv4 and IPv6 subnets are one
network), with the gateways their routes name. Nodes are the hosts that reported (their addresses
per network), and the flow ends that did not (placed by the names they used). A rewriter no one
reported is inferred from evidence: when the server saw a source no node owns, the address belongs
to the client's next hop toward the server (its own routes, longest prefix), which becomes the
router (a client's IPv4 and IPv6 next hops on one network are one router); with no such hop (the
client's own loopback), to the client's host itself, as Docker's published-port proxy does. A flow
is drawn client -> rewriter -> server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.names import Name, unmap_host
from shared.record import Topology
from shared.report_model import Flow, FlowEnd, FlowVerdict

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ELSEWHERE = "elsewhere"


def address_of(name: Name | None) -> Address | None:
    """The IP address in a socket name, IPv4-mapped hosts unmapped; None for a path or nothing."""
    if not isinstance(name, tuple):
        return None
    try:
        return ipaddress.ip_address(unmap_host(str(name[0])))
    except ValueError:
        return None


@dataclass
class Node:
    """A host on the picture: who runs there, and its addresses on each network."""

    id: str
    label: str
    kind: str
    services: list[str] = field(default_factory=list)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    rewrote: bool = False

    def attach(self, network: str, address: str) -> None:
        """Give the node an address on a network, once."""
        known = self.addresses.setdefault(network, [])
        if address not in known:
            known.append(address)

    def to_wire(self) -> dict[str, Any]:
        """The node as the page reads it."""
        return {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "services": self.services,
            "addresses": self.addresses,
            "rewrote": self.rewrote,
        }


@dataclass
class Picture:
    """Networks, nodes, who owns which address, and each reporting host's routes."""

    networks: dict[str, list[Network]] = field(default_factory=dict)
    gateways: dict[str, list[str]] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    owners: dict[Address, str] = field(default_factory=dict)
    routes: dict[str, list[tuple[Network, Address | None]]] = field(default_factory=dict)
    inferred: dict[tuple[str, str], str] = field(default_factory=dict)

    def network_of(self, address: Address) -> str:
        """The network whose subnet holds an address, or "elsewhere"."""
        for network_id, subnets in self.networks.items():
            if any(address in subnet for subnet in subnets if subnet.version == address.version):
                return network_id
        return ELSEWHERE

    def own(self, node: Node, address: Address) -> None:
        """Record that a node holds an address, and draw it on its network."""
        self.owners.setdefault(address, node.id)
        node.attach(self.network_of(address), str(address))

    def next_hop(self, host: str, destination: Address) -> Address | None:
        """The gateway a reporting host's own routes send a destination to (longest prefix); None if on-link."""
        best: tuple[int, Address | None] | None = None
        for prefix, gateway in self.routes.get(host, []):
            fits = prefix.version == destination.version and destination in prefix
            if fits and (best is None or prefix.prefixlen > best[0]):
                best = (prefix.prefixlen, gateway)
        return best[1] if best else None

    def end_node(self, end: FlowEnd, own: Name | None) -> Node:
        """The node of a flow end: its host's, or a new one placed by the name it used."""
        node_id = f"host:{end.host}"
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = Node(node_id, end.service, "service", [end.service])
        elif end.service not in node.services:
            node.services.append(end.service)
        address = address_of(own)
        if address is not None and address not in self.owners and not address.is_unspecified:
            self.own(node, address)
        return node

    def rewriter(self, flow: Flow) -> str | None:
        """The node that rewrote a flow's names, if it is not one of its ends."""
        if flow.client is None or flow.server is None or flow.verdict in (FlowVerdict.DIRECT, FlowVerdict.UNMATCHED):
            return None
        ends = {f"host:{flow.client.host}", f"host:{flow.server.host}"}
        candidates = [address_of(flow.server.peername), address_of(flow.client.peername)]
        destination = address_of(flow.client.peername)
        if destination is not None:
            candidates.append(self.next_hop(flow.client.host, destination))
        for address in candidates:
            owner = self.owners.get(address) if address is not None else None
            if owner is not None and owner not in ends:
                return owner
        return None

    def infer_rewriter(self, flow: Flow) -> None:
        """Give the source the server saw to whoever must have shown it: the client's next hop, or its host."""
        assert flow.client is not None and flow.server is not None
        seen, destination = address_of(flow.server.peername), address_of(flow.client.peername)
        if seen is None or seen in self.owners or destination is None:
            return
        hop = self.next_hop(flow.client.host, destination)
        if hop is None:
            self.own(self.nodes[f"host:{flow.client.host}"], seen)
            return
        node_id = self.owners.get(hop)
        if node_id is None:
            # one client's IPv4 and IPv6 next hops on one network are taken for one router
            key = (flow.client.host, self.network_of(hop))
            node_id = self.inferred.setdefault(key, f"router:{hop}")
            node = self.nodes.setdefault(node_id, Node(node_id, "router", "router"))
            self.own(node, hop)
        self.own(self.nodes[node_id], seen)

    def line(self, flow: Flow) -> list[str]:
        """The nodes a flow's line passes, client first."""
        stops = [f"host:{end.host}" for end in (flow.client, flow.server) if end is not None]
        rewriter = self.rewriter(flow)
        if rewriter is not None and len(stops) == 2:
            stops.insert(1, rewriter)
        return stops

    def to_wire(self) -> dict[str, Any]:
        """The picture as the page reads it: networks with subnets and gateways, then nodes."""
        return {
            "networks": [
                {"id": network_id, "subnets": [str(s) for s in subnets], "gateways": self.gateways.get(network_id, [])}
                for network_id, subnets in self.networks.items()
            ],
            "nodes": [node.to_wire() for node in self.nodes.values()],
        }


def group_subnets(topologies: Iterable[Topology]) -> list[list[Network]]:
    """Subnets that share an interface anywhere are one network (its IPv4 and IPv6 halves)."""
    groups: list[set[Network]] = []
    for topology in topologies:
        for interface in topology.interfaces:
            subnets = {ipaddress.ip_interface(a).network for a in interface.addresses}
            touching = [g for g in groups if g & subnets]
            for group in touching:
                groups.remove(group)
                subnets |= group
            groups.append(subnets)
    return [sorted(group, key=lambda s: (s.version, s)) for group in groups]


def build_picture(topologies: Iterable[Topology], flows: Iterable[Flow]) -> Picture:
    """Lay out what is known: reported hosts first, then flow ends, then inferred rewriters."""
    topologies = list(topologies)
    picture = Picture()
    for subnets in sorted(group_subnets(topologies), key=lambda g: str(g[0])):
        picture.networks[str(subnets[0])] = subnets
    for topology in topologies:
        node_id = f"host:{topology.host}"
        node = picture.nodes.setdefault(node_id, Node(node_id, topology.service, "service"))
        if topology.service not in node.services:
            node.services.append(topology.service)
        for interface in topology.interfaces:
            for address in interface.addresses:
                picture.own(node, ipaddress.ip_interface(address).ip)
        picture.routes[topology.host] = [
            (ipaddress.ip_network(r.destination, strict=False), ipaddress.ip_address(r.gateway) if r.gateway else None)
            for r in topology.routes
        ]
        for route in topology.routes:
            if route.gateway:
                gateways = picture.gateways.setdefault(picture.network_of(ipaddress.ip_address(route.gateway)), [])
                if route.gateway not in gateways:
                    gateways.append(route.gateway)
    rewritten: dict[tuple[Any, ...], Flow] = {}
    for flow in flows:
        if flow.client is not None:
            picture.end_node(flow.client, flow.client.sockname)
        if flow.server is not None:
            picture.end_node(flow.server, flow.server.sockname)
        if flow.client and flow.server and flow.verdict not in (FlowVerdict.DIRECT, FlowVerdict.UNMATCHED):
            key = (flow.client.host, address_of(flow.client.peername), address_of(flow.server.peername))
            rewritten.setdefault(key, flow)
    for flow in rewritten.values():
        picture.infer_rewriter(flow)
    for flow in rewritten.values():
        rewriter = picture.rewriter(flow)
        if rewriter is not None:
            picture.nodes[rewriter].rewrote = True
    return picture
