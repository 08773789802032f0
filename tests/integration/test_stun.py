"""STUN clients socklab did not write, behind the router, against the registry's STUN port."""

from __future__ import annotations

import json
import re

import pytest

from shared.names import endpoint
from shared.stack import Stack
from tests.helpers import wait_for
from tests.integration.stack import run_script, same_host

pytestmark = pytest.mark.integration


def registry_saw(stack: Stack, host: str, port: int) -> bool:
    """Whether the collector holds a registry STUN record whose peer is (host, port)."""
    return any(
        flow.flow.startswith("stun-")
        and flow.server
        and flow.server.peername is not None
        and endpoint(flow.server.peername) == (host, port)
        for flow in stack.report().flows
    )


def test_aioice_behind_nat_learns_router_wan_address(stack: Stack) -> None:
    registry = stack.ip("registry", "wan")
    output = run_script(stack, "client-lan", "aioice_candidates.py", registry)
    entries = stack.conntrack("-p", "udp")
    candidates = json.loads(output.strip().splitlines()[-1])
    lan_ip, router_wan = stack.ip("client-lan", "lan"), stack.ip("router", "wan")
    [(_, host, port, _related, related_port)] = [c for c in candidates if c[0] == "srflx" and c[3] == lan_ip]
    assert host == router_wan, "the registry told aioice the router's WAN address"
    [entry] = [e for e in entries if e.src == lan_ip and e.sport == related_port and e.dst == registry]
    assert (entry.reply_dst, entry.reply_dport) == (host, port), "and the port conntrack mapped"
    wait_for(lambda: registry_saw(stack, host, port), "the registry's view of the same name in the collector")


def test_classic_rfc3489_client_learns_router_wan_address(stack: Stack) -> None:
    registry = stack.ip("registry", "wan")
    code, raw = stack.container("client-lan").exec_run(["stun", registry, "-v"], user="socklab")
    output = raw.decode(errors="replace")
    match = re.search(r"MappedAddress = ([\d.]+):(\d+)", output)
    assert match, f"stun (exit {code}) printed no mapped address:\n{output}"
    assert same_host(match.group(1), stack.ip("router", "wan"))
    wait_for(lambda: registry_saw(stack, match.group(1), int(match.group(2))), "the registry's view in the collector")
