"""socklab on a Docker Swarm of three simulated nodes: every name both ends saw, checked against Docker on the
node that holds each task (its engine's `docker inspect`), the nodes' addresses against the host's Docker."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from docker.client import DockerClient
from docker.models.containers import Container

from services.swarm import SwarmUp, bring_up, case_flows
from shared.names import Name
from shared.report_model import Flow, FlowVerdict, HopKind
from shared.swarm import IPVS, LABEL, NETWORK, NODE_IMAGE, Node, find_nodes, placements, remove

pytestmark = pytest.mark.swarm

ECHO_PORT = 7007


@pytest.fixture(scope="module")
def host() -> DockerClient:
    return DockerClient.from_env()


@pytest.fixture(scope="module")
def swarm(host: DockerClient) -> Iterator[SwarmUp]:
    remove(host)
    try:
        yield bring_up(host, 3)
    finally:
        remove(host)


@pytest.fixture(scope="module")
def flows(swarm: SwarmUp) -> dict[str, list[Flow]]:
    """Each case's flows, as the collector joined them."""
    collector = swarm.placement.node_of("collector")
    joined = {flow.flow: flow for flow in case_flows(collector, swarm.results)}
    return {r.case.name: [joined[o["flow"]] for o in r.outcomes] for r in swarm.results}


def ip(name: Name | None) -> str:
    """A name's address, an IPv4-mapped one as plain IPv4."""
    assert isinstance(name, tuple), name
    address = ipaddress.ip_address(name[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def endpoint(name: Name | None) -> tuple[str, int]:
    """A name's address and port, an IPv4-mapped address as plain IPv4."""
    assert isinstance(name, tuple), name
    return ip(name), name[1]


def overlay_addresses(container: Container) -> set[str]:
    """A task's addresses on the stack's overlays, as its node's engine inspects it."""
    container.reload()
    return {n["IPAddress"] for n in container.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"]}


def gwbridge_address(node: Node, container: Container) -> str:
    """A task's address on its node's docker_gwbridge, the way out of the overlay (its node's network inspect)."""
    endpoints = node.engine.networks.get("docker_gwbridge").attrs["Containers"]
    return str(endpoints[container.id]["IPv4Address"].split("/")[0])


def test_services_run_on_the_nodes_placed_and_labelled(swarm: SwarmUp, host: DockerClient) -> None:
    nodes = find_nodes(host)
    assert [n.name for n in nodes] == ["node1", "node2", "node3"]
    planned = placements(nodes)
    for service, (node, container) in swarm.placement.tasks.items():
        assert node.name == planned[service].name
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        labels = {n.attrs["Description"]["Hostname"]: n.attrs["Spec"]["Labels"] for n in nodes[0].engine.nodes.list()}
        assert labels[node.name][f"socklab.{service}"] == "true"
    where = {s: swarm.placement.node_of(s).name for s in ("client-wan", "echo", "registry")}
    assert len(set(where.values())) == 3, where


@pytest.mark.parametrize("case", ["overlay", "dnsrr"])
def test_task_to_task_flows_are_direct_between_nodes(swarm: SwarmUp, flows: dict[str, list[Flow]], case: str) -> None:
    client_node, client = swarm.placement.tasks["client-wan"]
    echo_node, echo = swarm.placement.tasks["echo"]
    assert client_node.name != echo_node.name
    assert len(flows[case]) >= 2, "tcp and udp ran"
    for flow in flows[case]:
        assert flow.client is not None and flow.server is not None
        assert flow.verdict == FlowVerdict.DIRECT and flow.path == ()
        assert (flow.client.node, flow.server.node) == (client_node.name, echo_node.name)
        assert ip(flow.client.sockname) in overlay_addresses(client)
        assert ip(flow.server.sockname) in overlay_addresses(echo)
        assert endpoint(flow.server.peername) == endpoint(flow.client.sockname)
        assert ip(flow.client.peername) == ip(flow.server.sockname)


def test_a_host_port_on_another_node_is_two_nats_one_per_node(swarm: SwarmUp, flows: dict[str, list[Flow]]) -> None:
    client_node, client = swarm.placement.tasks["client-wan"]
    echo_node, echo = swarm.placement.tasks["echo"]
    assert len(flows["host-port"]) == 2
    for flow in flows["host-port"]:
        assert flow.client is not None and flow.server is not None
        assert flow.verdict == FlowVerdict.TWO_NATS
        assert flow.client.peername == (echo_node.address, ECHO_PORT), "echo's node's own address, from the host"
        assert ip(flow.client.sockname) == gwbridge_address(client_node, client)
        assert ip(flow.server.peername) == client_node.address, "the client's node masqueraded it"
        assert ip(flow.server.sockname) == gwbridge_address(echo_node, echo), "echo's node DNATed it"
        hops = [(hop.by, hop.kind) for hop in flow.path]
        assert hops == [(client_node.name, HopKind.SNAT), (echo_node.name, HopKind.DNAT)]


def test_a_task_leaving_the_overlay_shows_its_node_s_address_outside(
    swarm: SwarmUp, flows: dict[str, list[Flow]], host: DockerClient
) -> None:
    client_node, client = swarm.placement.tasks["client-wan"]
    outside = host.containers.get("socklab-swarm-outside")
    outside_ip = outside.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    assert client_node.address == client_node.container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    assert len(flows["gwbridge"]) == 2
    for flow in flows["gwbridge"]:
        assert flow.client is not None and flow.server is not None
        assert flow.verdict == FlowVerdict.SNAT
        assert (flow.client.node, flow.server.node) == (client_node.name, host.info()["Name"])
        assert ip(flow.client.sockname) == gwbridge_address(client_node, client)
        assert ip(flow.client.peername) == ip(flow.server.sockname) == outside_ip
        assert ip(flow.server.peername) == client_node.address
        assert [(hop.by, hop.kind) for hop in flow.path] == [(client_node.name, HopKind.SNAT)]


def test_the_ipvs_cases_run_exactly_where_the_kernel_has_ipvs(swarm: SwarmUp) -> None:
    results = {r.case.name: r for r in swarm.results}
    for name in ("vip", "ingress"):
        if IPVS.exists():
            assert results[name].outcomes, f"{name}: IPVS is here, so the case must run"
        else:
            assert results[name].outcomes == []
            assert results[name].unavailable == f"unavailable: no IPVS in this kernel ({IPVS} absent): " + (
                "a service VIP and the ingress routing mesh do not forward"
            )


def test_down_leaves_no_container_network_or_volume(swarm: SwarmUp, host: DockerClient) -> None:
    volumes = {v.name for n in swarm.nodes for v in host.volumes.list() if v.name in str(n.container.attrs["Mounts"])}
    assert volumes, "each node keeps its images in a volume of this host"
    remove(host)
    assert host.containers.list(all=True, filters={"label": LABEL}) == []
    assert host.containers.list(all=True, filters={"ancestor": NODE_IMAGE}) == []
    assert host.networks.list(filters={"label": LABEL}) == [] and host.networks.list(names=[NETWORK]) == []
    assert volumes.isdisjoint(v.name for v in host.volumes.list())
