"""Hairpin through the Docker host (moby#29330 family): containers reach echo at the host's published port.

Echo is published on wan's bridge gateway (198.51.100.1, the host's own address on wan), so every
container can reach it there: client-wan from the same bridge, client-lan through the router, the
collector from ctl. With Docker's userland proxy (this Docker's default), Docker's nat table returns
every packet that enters from a bridge (`-A DOCKER -i br-... -j RETURN`) before any DNAT rule, so
the packet is for the host itself: docker-proxy accepts it and opens its own connection to echo
from the gateway. Echo sees the gateway, from a port of the proxy's, never the client. Without the
proxy (--userland-proxy=false) Docker DNATs such packets in the kernel instead, and the host's
conntrack entry for the client holds the translation.
"""

from __future__ import annotations

from services.case_views import CaseFlow
from shared.docker_host import describe_entry, find_docker_proxy, host_conntrack
from shared.names import unmap_host
from shared.report_model import Flow
from shared.stack import Stack, parse_json_lines

# (client service, proto): one container per network echo can be reached from.
CLIENTS = (("client-wan", "tcp"), ("client-wan", "udp"), ("client-lan", "tcp"), ("collector", "tcp"))
ECHO_PORT = 7007


def gateway_binding(stack: Stack, proto: str) -> tuple[str, int]:
    """Echo's published address on wan's gateway, as Docker inspect has it."""
    gateway = stack.endpoint("echo", "wan")["Gateway"]
    return gateway, stack.published_port("echo", f"{ECHO_PORT}/{proto}", gateway)


def name_rewriter(flow: Flow, published: tuple[str, int], echo_ip: str) -> tuple[str, dict[str, object]]:
    """Who rewrote the flow on the host: docker-proxy (its command line) or Docker's DNAT (conntrack's entry)."""
    assert flow.client is not None and flow.server is not None, f"flow {flow.flow} has one end only"
    host, port = published
    client_name, seen_name = flow.client.sockname, flow.server.peername
    assert isinstance(client_name, tuple) and isinstance(seen_name, tuple), "IP names on both ends"
    client_port, seen_port = int(client_name[1]), int(seen_name[1])
    entries = host_conntrack()
    # The client's packets as the host saw them: on their way (lan's bridge) and on arrival; then echo's side.
    inbound = [e for e in entries if e.proto == flow.proto and e.dst == host and e.dport == port]
    inbound = [e for e in inbound if e.sport == client_port]
    to_echo = [e for e in entries if e.dst == echo_ip and e.dport == ECHO_PORT and e.sport == seen_port]
    evidence: dict[str, object] = {"host conntrack": [describe_entry(e) for e in [*inbound, *to_echo[:1]]]}
    proxy = find_docker_proxy(host, port, str(flow.proto))
    if proxy is not None:
        evidence["docker-proxy"] = proxy.describe()
        return "docker-proxy (the host's userland proxy: a second connection from the gateway)", evidence
    return "docker-dnat (the host kernel's DNAT of the published port)", evidence


def run_hairpin(stack: Stack) -> list[CaseFlow]:
    """Each client talks to echo at wan's gateway; both ends' views, and who rewrote the names."""
    rows = []
    echo_ip = stack.ip("echo", "wan")
    for service, proto in CLIENTS:
        published = gateway_binding(stack, proto)
        echo = "{}:{}".format(*published)
        command = [
            "env",
            f"SOCKLAB_SERVICE={service}",
            "socklab",
            "client",
            "--json",
            "--scenario",
            proto,
            "--echo",
            echo,
        ]
        [outcome] = parse_json_lines(stack.exec(service, *command))
        flow = stack.wait_for_flow(outcome["flow"])
        rewriter, evidence = name_rewriter(flow, published, unmap_host(echo_ip))
        rows.append(CaseFlow("hairpin", f"{service} -> {published[0]}:{published[1]}", flow, rewriter, evidence))
    return rows
