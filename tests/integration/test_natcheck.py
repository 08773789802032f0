"""natcheck against each router behaviour: its RFC 5780 classification and the mappings conntrack holds."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shared.nat import Behaviour
from shared.report_model import NatCheckResult
from shared.stack import Stack
from tests.helpers import wait_for
from tests.integration.stack import only, same_host

pytestmark = pytest.mark.integration

# (mapping, filtering, hairpin) asked of the router -> what RFC 5780's tests must find: mapping, filtering,
# port preserved, hairpinning.
BEHAVIOURS = {
    "cone": (
        ("cone", "address-and-port-dependent", "off"),
        (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT, True, False),
    ),
    "full-cone-hairpin": (
        ("cone", "endpoint-independent", "on"),
        (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ENDPOINT_INDEPENDENT, True, True),
    ),
    "symmetric": (
        ("symmetric", "address-and-port-dependent", "off"),
        (Behaviour.ADDRESS_AND_PORT_DEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT, False, False),
    ),
}
Expected = tuple[Behaviour, Behaviour, bool, bool]


@pytest.fixture
def router_behaviour(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Expected]:
    """Switch the running router to a behaviour, and back to compose's default afterwards."""
    (mode, filtering, hairpin), expected = BEHAVIOURS[request.param]
    stack.exec(
        "router",
        "socklab",
        "router",
        "--apply",
        "--mode",
        mode,
        "--filter",
        filtering,
        "--hairpin",
        hairpin,
        user="root",
    )
    try:
        yield expected
    finally:
        stack.exec("router", "socklab", "router", "--apply", user="root")


@pytest.mark.parametrize("router_behaviour", list(BEHAVIOURS), indirect=True)
def test_natcheck_classifies_router_and_matches_conntrack(stack: Stack, router_behaviour: Expected) -> None:
    printed = json.loads(stack.exec("client-lan", "socklab", "natcheck", "--json").strip().splitlines()[-1])
    result = NatCheckResult.from_wire(printed)
    entries = stack.conntrack("-p", "udp")
    lan_ip, router_wan = stack.ip("client-lan", "lan"), stack.ip("router", "wan")
    found = (result.mapping, result.filtering, result.port_preserved, result.hairpin)
    assert found == router_behaviour, result
    assert result.local_address[0] == lan_ip
    assert same_host(result.mapped_address[0], router_wan)
    mapped_tests = [t for t in result.tests if t.mapped]
    assert mapped_tests, result
    for test in mapped_tests:
        (src, sport), (host, port) = test.local, test.destination
        entry = only(
            [e for e in entries if e.src == src and e.sport == sport and e.dst == host and e.dport == port],
            test.name,
        )
        assert (entry.reply_dst, entry.reply_dport) == test.mapped, f"{test.name}: conntrack disagrees"
    wait_for(
        lambda: any(check.result == result for check in stack.report().natchecks),
        "the collector to hold the same natcheck result",
    )
