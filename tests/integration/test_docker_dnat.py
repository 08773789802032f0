"""A flow only echo reports, carried by Docker's DNAT in the host's kernel: the host's own connection to echo's
port published on wan's gateway (the userland proxy serves other hosts; the host's packets are DNAT'ed in
OUTPUT). Its hop comes from the host's conntrack table, which `socklab docker-facts` lists to the collector."""

from __future__ import annotations

import socket

import pytest

from shared.docker_host import host_conntrack
from shared.names import Name, unmap_host
from shared.polling import wait_for
from shared.report_model import Flow, FlowVerdict, HopKind
from shared.stack import Stack
from tests.integration.stack import report_docker_facts

pytestmark = pytest.mark.integration


def ip_port(name: Name | None) -> tuple[str, int]:
    """An IP name as conntrack prints it."""
    assert isinstance(name, tuple), f"{name!r} is no IP name"
    return unmap_host(name[0]), int(name[1])


def test_the_hosts_connection_to_the_gateways_published_port_gets_docker_dnats_hop(stack: Stack) -> None:
    gateway, echo = stack.endpoint("echo", "wan")["Gateway"], (stack.ip("echo", "wan"), 7007)
    with socket.create_connection((gateway, 7007), timeout=5) as sock:
        sock.sendall(b"hello, dnat\n")
        assert sock.recv(100) == b"hello, dnat\n", "raw echo"
        me = sock.getsockname()
        [entry] = [e for e in host_conntrack() if e.proto == "tcp" and (e.src, e.sport) == me]
        assert ((entry.dst, entry.dport), (entry.reply_src, entry.reply_sport)) == ((gateway, 7007), echo), entry
        report_docker_facts(stack)

        def dnated() -> Flow | None:
            for flow in stack.report().flows:
                if flow.client is None and flow.server and ip_port(flow.server.peername) == me and flow.path:
                    return flow
            return None

        flow = wait_for(dnated, f"echo's flow from {me} with its path", timeout=10.0, interval=0.2)
    assert flow.verdict == FlowVerdict.SERVER_ONLY
    [hop] = flow.path
    assert (hop.by, hop.kind, hop.before, hop.after) == ("docker-dnat", HopKind.DNAT, (gateway, 7007), echo)
    assert hop.evidence["original"] == {"src": me[0], "dst": gateway, "sport": me[1], "dport": 7007}
    assert hop.evidence["reply"] == {"src": echo[0], "dst": entry.reply_dst, "sport": 7007, "dport": me[1]}
    assert f"-d {gateway} --dport 7007 -j DNAT --to-destination {echo[0]}:7007" in hop.rule
