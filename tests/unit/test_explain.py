"""socklab explain and the host's Docker facts: a path in words, the flow query, bindings read from Docker's view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zmq

from services import explain
from services.docker_facts import bindings_of, find_proxies
from services.paths import Evidence
from shared.collector_protocol import query_collector
from shared.record import Mechanism, Proto, pack_record
from shared.report_model import Flow
from tests.conftest import LiveCollector
from tests.unit.test_paths import SETUP, binding, event, only_flow, published_flow, stun_change_request, tcp_flow

pytestmark = pytest.mark.unit


def test_a_nat_flow_reads_client_hop_server() -> None:
    text = explain.format_explanation(only_flow(tcp_flow(), Evidence([event(moment=100.25)])))
    lines = text.splitlines()
    assert lines[0] == "flow f  tcp4  client -> server  snat, port kept"
    assert lines[1] == "  the client (client on h) spoke from 192.168.50.20:40000 to 198.51.100.10:7007"
    assert lines[2] == "  1. router rewrote the source 192.168.50.20:40000 into 198.51.100.2:40000 (snat)"
    assert lines[3] == f"       rule: {SETUP['rules']['snat-ipv4']}"
    assert "conntrack id 7 on router-host: made 00:01:40.250Z, destroyed -" in lines[4]
    assert lines[5] == "       original 192.168.50.20:40000 -> 198.51.100.10:7007"
    assert lines[6] == "       reply    198.51.100.10:7007 -> 198.51.100.2:40000"
    assert lines[7] == "       router setup: mode cone, filtering address-and-port-dependent, hairpin off"
    assert lines[8] == (
        "  the server (server on h) saw it come from [::ffff:198.51.100.2]:40000 at [::ffff:198.51.100.10]:7007"
    )


def test_direct_unexplained_proxied_and_answers_are_said_plainly() -> None:
    direct = explain.format_explanation(only_flow(tcp_flow(server_peer=("192.168.50.20", 40000)), Evidence()))
    assert "nothing rewrote it: both ends agree" in direct
    unexplained = explain.format_explanation(only_flow(tcp_flow(), Evidence()))
    assert "no rewriter found" in unexplained
    stun = explain.format_explanation(only_flow(stun_change_request(answered=False), Evidence()))
    assert stun.splitlines()[-1] == "  the answer came from 198.51.100.4:3479 and did not arrive"
    proxied = explain.format_explanation(only_flow(published_flow(), Evidence(bindings=[binding()])))
    assert "1. docker-proxy received the flow at 127.0.0.1:32991 and sent it on from its own socket 198.51" in proxied
    assert (
        "Docker: socklab-echo-1 at 198.51.100.10:7007 on socklab_wan, gateway 198.51.100.1; proxy pid 4242" in proxied
    )


def ingest_nat_flow(live: LiveCollector) -> None:
    for record in [*tcp_flow(), event()]:
        live.collector.ingest(pack_record(record))


def test_the_flow_query_finds_by_id_or_unique_prefix_and_refuses_the_rest(
    zmq_context: zmq.Context, live_collector: LiveCollector
) -> None:
    ingest_nat_flow(live_collector)
    reply = query_collector(zmq_context, live_collector.query, {"op": "flow", "flow": "f"})
    flow = Flow.from_wire(reply["flow"])
    assert flow.flow == "f" and flow.path[0].evidence["conntrack_id"] == 7
    for bad, error in (("zz", "no flow 'zz'"), ("", "no flow ''"), (None, "'flow' has type NoneType")):
        with pytest.raises(RuntimeError, match=error):
            query_collector(zmq_context, live_collector.query, {"op": "flow", "flow": bad})


def run_explain(live: LiveCollector, *args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        explain.main(["--query", live.query, *args])
    assert isinstance(exited.value.code, int)
    return exited.value.code


def test_explain_exits_0_1_2(live_collector: LiveCollector, capsys: pytest.CaptureFixture[str]) -> None:
    ingest_nat_flow(live_collector)
    assert run_explain(live_collector, "f") == 0
    assert "router rewrote the source" in capsys.readouterr().out
    assert run_explain(live_collector, "f", "nope") == 1
    captured = capsys.readouterr()
    assert "flow f " in captured.out and "explain: nope: collector said: no flow 'nope'" in captured.err
    assert run_explain(live_collector) == 2, "no flow id is a usage error"
    assert run_explain(live_collector, "--json", "f") == 0
    assert Flow.from_wire(json.loads(capsys.readouterr().out)).flow == "f"


# The host's Docker facts

PROXY_ARGS = [
    "/usr/sbin/docker-proxy",
    *("-proto", "tcp", "-host-ip", "::1", "-host-port", "32862"),
    *("-container-ip", "2001:db8:100::10", "-container-port", "7007"),
]


def fake_proc(tmp_path: Path, processes: dict[int, list[str] | bytes]) -> Path:
    for pid, args in processes.items():
        (tmp_path / str(pid)).mkdir()
        data = args if isinstance(args, bytes) else "\0".join(args).encode() + b"\0"
        (tmp_path / str(pid) / "cmdline").write_bytes(data)
    return tmp_path


def test_proxies_are_read_from_their_command_lines_and_junk_is_skipped(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: PROXY_ARGS,
            11: ["/usr/bin/sleep", "1"],
            12: b"\xff\xfe\0junk",
            13: ["/usr/sbin/docker-proxy", "-proto", "tcp"],
            14: [*PROXY_ARGS[:6], "-host-port", "x", *PROXY_ARGS[8:]],
        },
    )
    proxies = find_proxies(proc)
    assert list(proxies) == [("tcp", "::1", 32862)]
    proxy = proxies[("tcp", "::1", 32862)]
    assert (proxy.pid, proxy.command, proxy.container_ip) == (10, tuple(PROXY_ARGS), "2001:db8:100::10")


ECHO_ATTRS: dict[str, Any] = {
    "Name": "/socklab-echo-1",
    "NetworkSettings": {
        "Ports": {
            "7007/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32991"}, {"HostIp": "::1", "HostPort": "32862"}],
            "7007/udp": [{"HostIp": "127.0.0.1", "HostPort": "32870"}],
            "7008/tcp": None,
        },
        "Networks": {
            "socklab_wan": {
                "IPAddress": "198.51.100.10",
                "Gateway": "198.51.100.1",
                "GlobalIPv6Address": "2001:db8:100::10",
                "IPv6Gateway": "2001:db8:100::1",
            },
            "socklab_ctl": {
                "IPAddress": "10.99.0.4",
                "Gateway": "10.99.0.1",
                "GlobalIPv6Address": "",
                "IPv6Gateway": "",
            },
        },
    },
}


def test_a_proxied_binding_names_the_proxys_target_and_that_networks_gateway(tmp_path: Path) -> None:
    proxies = find_proxies(fake_proc(tmp_path, {10: PROXY_ARGS}))
    bindings = bindings_of(ECHO_ATTRS, proxies, "host", "buildhost")
    [six] = [b for b in bindings if b.host_ip == "::1"]
    assert (six.mechanism, six.container_ip, six.gateway, six.network) == (
        Mechanism.DOCKER_PROXY,
        "2001:db8:100::10",
        "2001:db8:100::1",
        "socklab_wan",
    )
    assert (six.proxy_pid, six.proxy_command, six.container, six.container_port) == (
        10,
        tuple(PROXY_ARGS),
        "socklab-echo-1",
        7007,
    )


def test_a_binding_no_proxy_serves_is_dnat_to_each_address_of_its_family() -> None:
    bindings = bindings_of(ECHO_ATTRS, {}, "host", "buildhost")
    tcp4 = [(b.container_ip, b.gateway) for b in bindings if b.proto == Proto.TCP and b.host_ip == "127.0.0.1"]
    assert tcp4 == [("198.51.100.10", "198.51.100.1"), ("10.99.0.4", "10.99.0.1")]
    assert {b.mechanism for b in bindings} == {Mechanism.DOCKER_DNAT}
    assert [b.host_port for b in bindings if b.proto == Proto.UDP] == [32870, 32870]
    assert [b.container_ip for b in bindings if b.host_ip == "::1"] == ["2001:db8:100::10"]
