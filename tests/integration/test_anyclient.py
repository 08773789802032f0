"""Any client is welcome: Debian's nc, socat and curl against echo and whoami from client-wan and from
behind the NAT, and the host against the published ports; what whoami says checked against Docker,
the router's conntrack and the collector's server-only flows."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest

from services.oneside import RAW_ECHO, WHOAMI, WHOAMI_HTTP
from shared.docker_host import find_docker_proxy, host_conntrack
from shared.names import endpoint
from shared.report_model import Flow, FlowVerdict
from shared.stack import Stack
from tests.helpers import wait_for
from tests.integration.stack import report_docker_facts, same_host

pytestmark = pytest.mark.integration

WHOAMI_LINE = re.compile(r"you are \[?([^\]\s]+?)\]?:(\d+) at \[?([^\]\s]+?)\]?:(\d+)\n")


def told(line: str) -> tuple[str, int, str, int]:
    """The peer and local host and port a whoami line states."""
    matched = WHOAMI_LINE.fullmatch(line)
    assert matched, f"not a whoami line: {line!r}"
    return matched[1], int(matched[2]), matched[3], int(matched[4])


def server_only(stack: Stack, scenario: str, peer: str, **evidence: object) -> Flow:
    """The collector's complete one-sided flow of this scenario whose evidence names this peer (a whole name as
    format_name writes it, or the start of one) and holds these facts."""

    def matches(flow: Flow) -> bool:
        named = str(flow.evidence.get("peer", ""))
        facts = all(flow.evidence.get(key) == value for key, value in evidence.items())
        return flow.complete and flow.scenario == scenario and (named == peer or named.startswith(peer + "]")) and facts

    return wait_for(
        lambda: next((f for f in stack.report().flows if matches(f)), None),
        f"a {scenario} flow from {peer} in the collector",
        10,
        0.1,
    )


def sh(stack: Stack, service: str, script: str) -> str:
    return stack.exec(service, "sh", "-c", script)


def test_nc_socat_and_curl_from_client_wan(stack: Stack) -> None:
    echo, me = stack.ip("echo", "wan"), stack.ip("client-wan", "wan")
    assert sh(stack, "client-wan", f"printf 'hello\\n' | nc -N -w 5 {echo} 7007") == "hello\n"
    assert sh(stack, "client-wan", f"printf 'ping' | socat -t 2 - UDP:{echo}:7007") == "ping"

    line = sh(stack, "client-wan", f"nc -w 5 {echo} 7008 </dev/null")
    peer_host, peer_port, local_host, local_port = told(line)
    assert same_host(peer_host, me) and same_host(local_host, echo) and local_port == 7008
    flow = server_only(stack, WHOAMI, line.split()[2])
    assert flow.verdict == FlowVerdict.SERVER_ONLY and flow.client is None and flow.server is not None
    assert flow.server.peername is not None and flow.server.peername[1] == peer_port

    udp_line = sh(stack, "client-wan", f"printf x | socat -t 2 - UDP:{echo}:7008")
    assert same_host(told(udp_line)[0], me) and told(udp_line)[3] == 7008

    facts = json.loads(sh(stack, "client-wan", f"curl -sS --max-time 5 http://{echo}:7080/"))
    assert facts["peer"].startswith(f"[::ffff:{me}]:") and facts["proto"] == "tcp"
    http_flow = stack.wait_for_flow(facts["flow"])
    assert http_flow.verdict == FlowVerdict.SERVER_ONLY and http_flow.scenario == WHOAMI_HTTP
    assert http_flow.evidence["request_line"] == "GET / HTTP/1.1"
    assert str(http_flow.evidence["user_agent"]).startswith("curl/")
    page = sh(stack, "client-wan", f"curl -sS --max-time 5 -H 'Accept: text/html' http://{echo}:7080/")
    assert page.startswith("<!doctype html>") and f"you are [::ffff:{me}]:" in page
    raw = server_only(stack, RAW_ECHO, f"[::ffff:{me}", bytes_in=6, proto="tcp")
    assert raw.evidence["bytes_out"] == 6 and raw.verdict == FlowVerdict.SERVER_ONLY


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_whoami_behind_the_nat_tells_the_routers_mapping(stack: Stack, proto: str) -> None:
    echo, lan_ip, wan_ip = stack.ip("echo", "wan"), stack.ip("client-lan", "lan"), stack.ip("router", "wan")
    tool = f"nc -w 5 {echo} 7008 </dev/null" if proto == "tcp" else f"printf x | socat -t 2 - UDP:{echo}:7008"
    line = sh(stack, "client-lan", tool)
    peer_host, peer_port, local_host, _ = told(line)
    assert same_host(peer_host, wan_ip), "behind the NAT, whoami sees the router's WAN address"
    assert same_host(local_host, echo)
    entries = [
        e
        for e in stack.conntrack("-p", proto)
        if e.src == lan_ip and e.dst == echo and e.dport == 7008 and e.reply_dport == peer_port
    ]
    assert len(entries) == 1, f"conntrack holds the mapping whoami told: {entries}"
    assert same_host(entries[0].reply_dst, wan_ip)
    flow = server_only(stack, WHOAMI, line.split()[2])
    assert flow.proto == proto and flow.verdict == FlowVerdict.SERVER_ONLY

    facts = json.loads(sh(stack, "client-lan", f"curl -sS --max-time 5 http://{echo}:7080/"))
    assert facts["peer"].startswith(f"[::ffff:{wan_ip}]:")


def expected_peer(stack: Stack, host: str, port: int, proto: str, my_port: int) -> tuple[str, int | None]:
    """Who echo must see for a host client of a published port: Docker's proxy's bridge gateway, or what
    the host's conntrack says its DNAT did (the port too, then)."""
    proxy = find_docker_proxy(host, port, proto)
    if proxy is not None:
        target = proxy.container_ip
        version = 6 if ":" in target else 4
        [network] = [n for n in ("wan", "ctl") if stack.ip("echo", n, version) == target]
        return stack.endpoint("echo", network)["Gateway" if version == 4 else "IPv6Gateway"], None
    [entry] = [e for e in host_conntrack() if e.sport == my_port and e.dport == port]
    return entry.reply_dst, entry.reply_dport


@pytest.mark.parametrize(("proto", "host"), [("tcp", "127.0.0.1"), ("udp", "127.0.0.1"), ("tcp", "::1")])
def test_host_to_published_whoami(stack: Stack, proto: str, host: str) -> None:
    port = stack.published_port("echo", f"7008/{proto}", host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        if proto == "udp":
            sock.send(b"who am i?")
        line = sock.recv(1000).decode()
        my_port = sock.getsockname()[1]
    peer_host, peer_port, _, local_port = told(line)
    seen_host, seen_port = expected_peer(stack, host, port, proto, my_port)
    assert same_host(peer_host, seen_host) and local_port == 7008
    assert seen_port in (None, peer_port)
    assert server_only(stack, WHOAMI, line.split()[2]).proto == proto


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_host_to_published_raw_echo_and_http(stack: Stack, host: str) -> None:
    port = stack.published_port("echo", "7007/tcp", host)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"hi\n")
        assert sock.recv(100) == b"hi\n", "raw bytes come back at once through Docker's published port"
    http_port = stack.published_port("echo", "7080/tcp", host)
    url = f"http://{'[::1]' if host == '::1' else host}:{http_port}/"
    request = urllib.request.Request(url, headers={"User-Agent": "socklab-test"})
    facts = json.loads(urllib.request.urlopen(request, timeout=5).read())
    flow = stack.wait_for_flow(facts["flow"])
    assert flow.scenario == WHOAMI_HTTP and flow.evidence["user_agent"] == "socklab-test"
    assert flow.evidence["peer"] == facts["peer"] and flow.evidence["status"] == 200
    if shutil.which("curl"):
        text = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "-H", "Accept: text/html", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert text.startswith("<!doctype html>") and "you are " in text


@pytest.mark.parametrize(("proto", "host"), [("tcp", "127.0.0.1"), ("udp", "127.0.0.1")])
def test_host_whoami_flow_is_not_direct_and_names_dockers_proxy(stack: Stack, proto: str, host: str) -> None:
    """A client that is not socklab's still gets its rewriter: the proxy hop, from Docker's own facts."""
    report_docker_facts(stack)
    port = stack.published_port("echo", f"7008/{proto}", host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        if proto == "udp":
            sock.send(b"who am i?")
        line = sock.recv(1000).decode()
    proxy = find_docker_proxy(host, port, proto)
    if proxy is None:
        pytest.fail(f"no docker-proxy serves {host}:{port}/{proto}: the DNAT branch has no server-only hop yet")
    seen = line.split()[2]

    def with_hop() -> Flow | None:
        flow = server_only(stack, WHOAMI, seen)
        return flow if flow.path else None

    flow = wait_for(with_hop, f"the whoami flow from {seen} with its docker-proxy hop", 10, 0.1)
    [hop] = flow.path
    assert flow.server is not None and flow.server.peername is not None
    [network] = [n for n in ("wan", "ctl") if stack.ip("echo", n) == proxy.container_ip]
    gateway = stack.endpoint("echo", network)["Gateway"]
    assert hop.by == "docker-proxy" and hop.kind == "proxy"
    assert hop.after == endpoint(flow.server.peername) and hop.after[0] == gateway == hop.evidence["gateway"]
    assert hop.before == (host, port), "one binding leads to 7008 from this gateway: the hop names it"
    assert hop.evidence["proxy_pid"] == proxy.pid
