"""Docker's own rewrites named from the host's facts, and `socklab explain` on every flow the collector holds."""

from __future__ import annotations

import pytest

from shared.docker_host import find_docker_proxy, host_conntrack
from shared.names import endpoint
from shared.report_model import Flow, HopKind
from shared.stack import Stack
from tests.helpers import ends, host_port, wait_for
from tests.integration.stack import report_docker_facts, run_from_host, same_host

pytestmark = pytest.mark.integration


def with_path(stack: Stack, flow_id: str) -> Flow:
    def found() -> Flow | None:
        flow = stack.find_flow(flow_id)
        return flow if flow is not None and flow.path else None

    return wait_for(found, f"flow {flow_id} with its path")


@pytest.mark.parametrize(("scenario_name", "host"), [("tcp4", "127.0.0.1"), ("udp4", "127.0.0.1"), ("tcp6", "::1")])
def test_published_port_hops_are_dockers_binding_and_mechanism(stack: Stack, scenario_name: str, host: str) -> None:
    report_docker_facts(stack)
    outcome, port, proto = run_from_host(stack, scenario_name, host)
    flow = with_path(stack, outcome.flow)
    client, server = ends(flow)
    found = find_docker_proxy(host, port, proto)
    proxy = found.options if found else None
    first = flow.path[0]
    assert endpoint(first.before) == (host, port) == host_port(client.peername), "the name the client used"
    assert first.evidence["container"] == stack.container("echo").name
    if proxy is not None:
        [hop] = flow.path
        version = 6 if ":" in proxy["-container-ip"] else 4
        [network] = [n for n in ("wan", "ctl") if stack.ip("echo", n, version) == proxy["-container-ip"]]
        gateway = stack.endpoint("echo", network)["Gateway" if version == 4 else "IPv6Gateway"]
        assert (hop.by, hop.kind) == ("docker-proxy", HopKind.PROXY)
        command = hop.evidence["proxy_command"]
        assert dict(zip(command[1::2], command[2::2], strict=True)) == proxy
        assert same_host(str(hop.after[0]), gateway) and hop.evidence["gateway"] == gateway
        seen_host, seen_port = host_port(server.peername)
        assert same_host(str(hop.after[0]), seen_host) and hop.after[1] == seen_port, "the proxy's own connection"
        assert hop.evidence["target"] == [proxy["-container-ip"], int(proxy["-container-port"])]
        assert same_host(host_port(server.sockname)[0], proxy["-container-ip"])
    else:
        [entry] = [e for e in host_conntrack() if e.sport == host_port(client.sockname)[1] and e.dport == port]
        assert (first.by, first.kind) == ("docker-dnat", HopKind.DNAT)
        assert endpoint(first.after) == (entry.reply_src, entry.reply_sport)


def unique_prefix(flow_id: str, others: list[str]) -> str:
    """The shortest prefix of an id no other id starts with."""
    return next(flow_id[:n] for n in range(1, len(flow_id) + 1) if sum(o.startswith(flow_id[:n]) for o in others) == 1)


def test_explain_works_on_every_flow_id(stack: Stack) -> None:
    stack.run_client("client-lan", "--scenario", "tcp")
    ids = [flow.flow for flow in stack.report().flows]
    assert len(ids) > 10
    text = stack.exec("collector", "socklab", "explain", *ids)
    headers = [line.split()[1] for line in text.splitlines() if line.startswith("flow ")]
    assert headers == ids
    prefix = unique_prefix(ids[-1], ids)
    assert stack.exec("collector", "socklab", "explain", prefix).startswith(f"flow {ids[-1]} ")
    code, output = stack.container("collector").exec_run(["socklab", "explain", "no-such-flow"], user="socklab")
    assert code == 1 and b"no flow 'no-such-flow'" in output
    code, output = stack.container("collector").exec_run(["socklab", "explain"], user="socklab")
    assert code == 2 and b"usage: socklab explain" in output
