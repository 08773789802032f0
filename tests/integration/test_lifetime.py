"""NAT mapping lifetime (RFC 4787 REQ-5): natcheck --lifetime against the router's UDP timeout and conntrack's timer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.report_model import NatCheckResult
from shared.stack import Stack, parse_json_lines
from tests.helpers import wait_for
from tests.integration.stack import same_host

pytestmark = pytest.mark.integration

SHORT_TIMEOUT = 5
SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"
# `conntrack -L` prints the seconds an entry has left right after the protocol number: "udp 17 4 src=...".
CONNTRACK_TIMER = re.compile(r"^udp\s+17\s+(\d+)\s+src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)", re.M)


def recreate_router(stack: Stack, monkeypatch: pytest.MonkeyPatch, udp_timeout: int) -> None:
    """Start the router again as `SOCKLAB_ROUTER_UDP_TIMEOUT=N make up` would, and wait until its rules are in."""
    monkeypatch.setenv("SOCKLAB_ROUTER_UDP_TIMEOUT", str(udp_timeout))
    stack.compose("up", "--detach", "--no-build", "--no-deps", "router")

    def ready_with_timeout() -> bool:
        code, note = stack.container("collector").exec_run(["cat", "/run/socklab-ready/router"])
        return code == 0 and json.loads(note).get("udp_timeout") == udp_timeout

    wait_for(ready_with_timeout, f"the router ready with a {udp_timeout} s UDP timeout", timeout=30, interval=0.1)


@pytest.fixture
def short_udp_timeout(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The router with a 5 s UDP timeout for one test, compose's default again afterwards."""
    default = int(stack.exec("router", "cat", SYSCTL))
    recreate_router(stack, monkeypatch, SHORT_TIMEOUT)
    try:
        yield SHORT_TIMEOUT
    finally:
        recreate_router(stack, monkeypatch, default)


def test_natcheck_lifetime_finds_the_routers_udp_timeout(stack: Stack, short_udp_timeout: int) -> None:
    assert int(stack.exec("router", "cat", SYSCTL)) == short_udp_timeout
    assert int(Path(SYSCTL).read_text()) != short_udp_timeout, "the sysctl is the router's namespace's alone"
    # conntrack's own timer on a fresh UDP mapping, right after its one exchange.
    [outcome] = stack.run_client("client-lan", "--scenario", "udp", "--echo", "{}:{}".format(*stack.echo_address()))
    table = stack.exec(
        "router", "conntrack", "-L", "-p", "udp", "--orig-port-src", str(outcome["local"][1]), user="root"
    )
    [timer] = [int(m[0]) for m in CONNTRACK_TIMER.findall(table) if m[1] == outcome["local"][0]]
    assert short_udp_timeout - 2 <= timer <= short_udp_timeout

    command = ["socklab", "natcheck", "--json", "--lifetime", "--lifetime-max", "8", "--resolution", "1"]
    result = NatCheckResult.from_wire(parse_json_lines(stack.run_beside("client-lan", command))[-1])
    measured = result.lifetime
    assert measured is not None and measured.expired is not None, result
    assert measured.survived < short_udp_timeout <= measured.expired < short_udp_timeout + 1
    assert measured.expired - measured.survived <= 1.5, "the search splits its bracket to the resolution"
    assert timer <= measured.expired, "conntrack's timer agrees: no mapping outlives it"
    probes = measured.probes
    assert len({p.local for p in probes}) == len(probes), "every probe a fresh socket"
    assert all(same_host(p.mapped[0], stack.ip("router", "wan")) for p in probes), "the registry saw the router"
    assert [p.alive for p in probes] == [p.idle < short_udp_timeout for p in probes]
    newest = wait_for(lambda: stack.report().natchecks, "natcheck's summary in the collector")[-1]
    assert newest.result.lifetime == measured, "the collector holds the same measurement"
