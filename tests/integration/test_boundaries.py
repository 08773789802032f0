"""Across Docker's own boundaries: a published port, the registry behind NAT, port collisions, two networks."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import zmq

from services.client import SCENARIOS, Target
from shared.conntrack import ConntrackEntry, parse_conntrack
from shared.report_model import FlowVerdict
from shared.reporter import Reporter
from shared.stack import Stack, parse_json_lines
from tests.helpers import ends, host_port
from tests.integration.stack import lan_probe, release, same_host

pytestmark = pytest.mark.integration


def docker_proxy_for(host_ip: str, host_port: int, proto: str) -> dict[str, str] | None:
    """The user-space proxy Docker runs for a published port, read from its command line, if there is one."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().decode().split("\0")
            if args and args[0].endswith("docker-proxy"):
                opts = dict(zip(args[1::2], args[2::2], strict=False))
                wanted = {"-host-ip": host_ip, "-host-port": str(host_port), "-proto": proto}
                if all(opts.get(k) == v for k, v in wanted.items()):
                    return opts
    return None


def host_conntrack() -> list[ConntrackEntry]:
    """The host kernel's connection table, where Docker's DNAT of a published port would show."""
    return parse_conntrack(Path("/proc/net/nf_conntrack").read_text())


@pytest.mark.parametrize(("scenario_name", "host"), [("tcp4", "127.0.0.1"), ("udp4", "127.0.0.1"), ("tcp6", "::1")])
def test_host_to_published_port(stack: Stack, scenario_name: str, host: str) -> None:
    [scenario] = [s for s in SCENARIOS if s.name == scenario_name]
    proto = str(scenario.proto)
    port = stack.published_port("echo", f"7007/{proto}", host)
    context = zmq.Context()
    reporter = Reporter(context, stack.ingest_endpoint(), "test-host")
    try:
        outcome = scenario.run(reporter, Target(scenario, (host, port)))
    finally:
        reporter.close()
        context.term()
    flow = stack.wait_for_flow(outcome.flow)
    client, server = ends(flow)
    (my_host, my_port), (peer_host, peer_port) = host_port(client.sockname), host_port(client.peername)
    (server_host, server_port), (seen_host, seen_port) = host_port(server.sockname), host_port(server.peername)
    assert my_host == peer_host == host
    assert peer_port == port
    proxy = docker_proxy_for(host, port, proto)
    if proxy is not None:
        # Docker's user-space proxy accepted our connection and opened its own from the bridge gateway.
        target = proxy["-container-ip"]
        version = 6 if ":" in target else 4
        [network] = [n for n in ("wan", "ctl") if stack.ip("echo", n, version) == target]
        gateway = stack.endpoint("echo", network)["Gateway" if version == 4 else "IPv6Gateway"]
        assert flow.verdict == FlowVerdict.PROXIED, flow
        assert same_host(server_host, target)
        assert same_host(seen_host, gateway)
    else:
        # No proxy: the host kernel translated the packets, and its conntrack table holds the translation.
        [entry] = [e for e in host_conntrack() if e.sport == my_port and e.dport == port]
        assert same_host(server_host, entry.reply_src) and server_port == entry.reply_sport
        assert same_host(seen_host, entry.reply_dst) and seen_port == entry.reply_dport
        assert flow.verdict == FlowVerdict.PROXIED, "source and destination both rewritten"


def test_registry_sees_registrant_behind_nat_as_conntrack_says(stack: Stack) -> None:
    stack.exec("client-lan", "socklab", "client", "--register", "--repeat", "0")
    entries = stack.conntrack("-p", "tcp")
    [registration] = json.loads(stack.exec("client-wan", "socklab", "registry", "--lookup", "client-lan"))
    reported, observed = registration["reported"], registration["observed"]
    registry_ip = stack.ip("registry", "wan")
    assert reported[0] == stack.ip("client-lan", "lan"), "the registrant reports its own LAN name"
    [entry] = [e for e in entries if e.src == reported[0] and e.sport == reported[1] and e.dst == registry_ip]
    assert same_host(observed[0], entry.reply_dst) and observed[1] == entry.reply_dport
    assert same_host(observed[0], stack.ip("router", "wan"))
    assert not same_host(observed[0], reported[0])


def test_clients_behind_nat_on_one_source_port_are_remapped(stack: Stack) -> None:
    count, port = 4, 47100
    echo = f"{stack.ip('echo', 'wan')}:7007"
    command = f"socklab client --json --scenario tcp-bound --bind-port {port} --echo {echo}"
    with contextlib.ExitStack() as probes:
        started = [probes.enter_context(lan_probe(stack, command, f"lan-probe-{i}")) for i in range(count)]
        for probe in started:
            release(probe)
        for probe in started:
            assert probe.get_wrapped_container().wait(timeout=30)["StatusCode"] == 0
        outcomes = [parse_json_lines(p.get_wrapped_container().logs().decode())[0] for p in started]
        entries = stack.conntrack("-p", "tcp", "--orig-port-src", str(port))
    probe_ips = {o["local"][0] for o in outcomes}
    assert len(probe_ips) == count and all(o["local"][1] == port for o in outcomes)
    preserved = []
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        _, server = ends(flow)
        [entry] = [e for e in entries if e.src == outcome["local"][0] and e.sport == port]
        assert flow.verdict == FlowVerdict.SNAT
        assert host_port(server.peername)[1] == entry.reply_dport, "the server sees conntrack's mapped port"
        assert flow.port_preserved == (entry.reply_dport == port)
        preserved.append(flow.port_preserved)
    assert preserved.count(True) == 1, f"one flow keeps port {port}, the rest are remapped: {preserved}"


def test_source_name_follows_routing_table_per_destination(stack: Stack) -> None:
    for network in ("wan", "ctl"):
        destination = stack.ip("echo", network)
        [outcome] = stack.run_client("client-wan", "--scenario", "tcp", "--echo", f"{destination}:7007")
        route = stack.exec("client-wan", "ip", "-o", "route", "get", destination).split()
        kernel_source = route[route.index("src") + 1]
        assert outcome["local"][0] == kernel_source == stack.ip("client-wan", network)
        flow = stack.wait_for_flow(outcome["flow"])
        _, server = ends(flow)
        assert flow.verdict == FlowVerdict.DIRECT
        assert same_host(host_port(server.peername)[0], stack.ip("client-wan", network))
        assert same_host(host_port(server.sockname)[0], destination)
