"""socklab's own integration tests' extras on the one stack handle (shared.stack.Stack, from the pytest
plugin's session): scripts run inside containers, comparing hosts and entries."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import zmq

from services import docker_facts
from services.client import SCENARIOS, Outcome, Target
from shared.conntrack import ConntrackEntry
from shared.names import unmap_host
from shared.reporter import Reporter
from shared.stack import Stack

SCRIPTS = Path(__file__).parent / "scripts"


def only(entries: list[ConntrackEntry], what: str) -> ConntrackEntry:
    """The one conntrack entry a flow must have; fail showing what was found instead."""
    assert len(entries) == 1, f"expected one conntrack entry for {what}, found {entries}"
    return entries[0]


def same_host(a: str, b: str) -> bool:
    """Compare hosts as addresses, IPv4-mapped names unmapped."""
    return ipaddress.ip_address(unmap_host(a)) == ipaddress.ip_address(unmap_host(b))


def run_script(stack: Stack, service: str, script: str, *args: str) -> str:
    """Run a script from tests/integration/scripts with python3 inside a service's container.

    Its text goes in as `python3 -c`'s argument: the container's file system is read-only, and `docker cp`
    does not reach a tmpfs.
    """
    return stack.exec(service, "python3", "-c", (SCRIPTS / script).read_text(), *args)


def run_from_host(stack: Stack, scenario_name: str, host: str) -> tuple[Outcome, int, str]:
    """Run one client scenario from the host against echo's port published on `host`: the user's own view."""
    [scenario] = [s for s in SCENARIOS if s.name == scenario_name]
    proto = str(scenario.proto)
    port = stack.published_port("echo", f"7007/{proto}", host)
    context = zmq.Context()
    reporter = Reporter(context, stack.ingest_endpoint(), "test-host", keys=stack.keys)
    try:
        return scenario.run(reporter, Target(scenario, (host, port))), port, proto
    finally:
        reporter.close()
        context.term()


def report_docker_facts(stack: Stack) -> None:
    """Have `socklab docker-facts` report the stack's published-port bindings, with the host's keys."""
    endpoint = stack.ingest_endpoint()
    docker_facts.main(["--project", stack.project, "--quiet", "--collector", endpoint, "--keys", stack.keys])
