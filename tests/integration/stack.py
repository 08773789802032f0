"""socklab's own integration tests' extras on the one stack handle (shared.stack.Stack, from the pytest
plugin's session): scripts run inside containers, comparing hosts and entries."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

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


def punch(stack: Stack, *args: str, service: str = "client-lan", env: dict[str, str] | None = None) -> tuple[int, str]:
    """`socklab punch ARGS` in a client's container: its exit status and what it printed."""
    code, output = stack.container(service).exec_run(["socklab", "punch", *args], user="socklab", environment=env)
    return code, output.decode(errors="replace")


def last_json(output: str) -> dict[str, Any]:
    """The JSON line `--json` printed (log lines go to stderr, which exec_run merges)."""
    printed: dict[str, Any] = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    return printed


def address(name: list[Any]) -> tuple[str, int]:
    """A name as `--json` prints it ([host, port]), as conntrack's tuples hold it."""
    return str(name[0]), int(name[1])


def entry_between(entries: list[ConntrackEntry], inside: tuple[str, int], outside: tuple[str, int]) -> ConntrackEntry:
    """The one entry that carried a LAN host's packets to the peer, whichever direction made it."""
    found = [
        e
        for e in entries
        if ((e.src, e.sport), (e.dst, e.dport)) == (inside, outside)
        or ((e.reply_src, e.reply_sport), (e.reply_dst, e.reply_dport)) == (inside, outside)
    ]
    assert len(found) == 1, f"expected one entry for {inside} <-> {outside}, found {found}"
    return found[0]


def outside_name(entry: ConntrackEntry, inside: tuple[str, int]) -> tuple[str, int]:
    """The name the LAN host's packets left the router with, as the entry records it."""
    if (entry.src, entry.sport) == inside:
        return entry.reply_dst, entry.reply_dport
    return entry.dst, entry.dport
