"""socklab in your own integration tests: how does a server see your container, behind a NAT or not?

Install socklab with its pytest extra (`pip install -e 'path/to/socklab[pytest]'`), build its image
once (`make image` in socklab's checkout), and the `socklab_stack` fixture is yours in any test: it
starts a socklab stack for the session (or attaches to one already up) and takes down what it started.
Here a bare Debian container stands in for your service's image: nothing of socklab runs inside it,
socklab's client runs beside it, in its network namespace, so the names are the ones your service gets.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testcontainers.core.container import DockerContainer

from shared.names import Endpoint, endpoint
from shared.nat import MODE_MAPPING, NatMode
from shared.report_model import Flow, FlowVerdict
from shared.stack import Stack

pytestmark = pytest.mark.socklab

YOUR_IMAGE = "socklab/base:bookworm"


@pytest.fixture
def your_container() -> Iterator[DockerContainer]:
    """Your service's container; here one that just stays up."""
    with DockerContainer(YOUR_IMAGE).with_command(["sleep", "infinity"]) as container:
        yield container


def both_names(flow: Flow) -> tuple[Endpoint, Endpoint]:
    """Your end's own name and the name the server saw it by, as (host, port) with ::ffff: hosts unmapped."""
    assert flow.client is not None and flow.client.sockname is not None, f"no client end: {flow}"
    assert flow.server is not None and flow.server.peername is not None, f"no server end: {flow}"
    return endpoint(flow.client.sockname), endpoint(flow.server.peername)


def router_mapping(stack: Stack) -> str:
    """The mapping behaviour the stack's router was started with, from its environment as Docker holds it."""
    env = dict(item.split("=", 1) for item in stack.container("router").attrs["Config"]["Env"])
    return MODE_MAPPING[NatMode(env["NAT_MODE"])]


def test_behind_the_nat_echo_sees_your_container_as_the_routers_wan_address(
    socklab_stack: Stack, your_container: DockerContainer
) -> None:
    """A flow from your container on lan crosses the router's source NAT; natcheck says what kind of NAT it is."""
    socklab_stack.join(your_container, "lan")
    your_lan_ip, router_wan_ip = socklab_stack.ip(your_container, "lan"), socklab_stack.ip("router", "wan")

    flow = socklab_stack.observe(your_container, "echo", "tcp")

    your_name, name_echo_saw = both_names(flow)
    assert flow.verdict == FlowVerdict.SNAT
    assert your_name[0] == your_lan_ip, "your container names itself by its LAN address"
    assert name_echo_saw[0] == router_wan_ip, "echo sees the router's WAN address"
    assert flow.port_preserved == (name_echo_saw[1] == your_name[1])

    nat = socklab_stack.natcheck(your_container)
    assert nat.local_address[0] == your_lan_ip
    assert nat.mapped_address[0] == router_wan_ip
    assert nat.mapping == router_mapping(socklab_stack)


def test_on_wan_echo_sees_your_container_as_it_is(socklab_stack: Stack, your_container: DockerContainer) -> None:
    """Beside echo on wan nothing translates: both ends see the same two names, over UDP as over TCP."""
    socklab_stack.join(your_container, "wan")
    your_wan_ip = socklab_stack.ip(your_container, "wan")

    flow = socklab_stack.observe(your_container, "echo", "udp")

    your_name, name_echo_saw = both_names(flow)
    assert flow.verdict == FlowVerdict.DIRECT
    assert your_name[0] == your_wan_ip
    assert name_echo_saw == your_name
