"""The swarm's cases: what each end sees of a flow between nodes, and who rewrote it on the way.

Each case is socklab's client, run in client-wan's task, aimed at echo another way:
  overlay    echo's address as the registry saw it register: task to task over the wan overlay (VXLAN)
  dnsrr      the service name `echo`, which a dnsrr service's DNS answers with its task's address
  host-port  echo's node's own address, port 7007 published in `mode: host`: the client's node masquerades
             the task leaving the overlay through docker_gwbridge, echo's node DNATs to its task
  gwbridge   echo outside the swarm (a container on the nodes' network): the source a task shows outside
  vip        the service's virtual IP (needs IPVS)
  ingress    a port published on the ingress routing mesh, reached on another node (needs IPVS; moby#25526)
The nodes' conntrack followers (socklab node-conntrack) give the collector each node's rewrites.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from docker.models.containers import Container

from shared.stack import parse_json_lines
from shared.swarm import Node, ipvs_missing

log = logging.getLogger(__name__)

ECHO_PORT = 7007
KINDS = ("--scenario", "tcp", "--scenario", "udp")


@dataclass(frozen=True)
class Placement:
    """Where the swarm's pieces run: each service's node and task container, and echo outside the swarm."""

    tasks: dict[str, tuple[Node, Container]]
    outside: str

    def node_of(self, service: str) -> Node:
        """The node a service's task runs on."""
        return self.tasks[service][0]


@dataclass(frozen=True)
class SwarmCase:
    """One way from client-wan's task to an echo: the client's arguments, and whether it needs IPVS."""

    name: str
    what: str
    args: Callable[[Placement], list[str]]
    needs_ipvs: bool = False


def never(_: Placement) -> list[str]:
    """A case this host cannot run has no arguments: it is reported unavailable instead."""
    return []


CASES = (
    SwarmCase("overlay", "task to task over the overlay", lambda p: [*KINDS, "--scenario", "udp-sendto"]),
    SwarmCase("dnsrr", "through the service name (dnsrr)", lambda p: ["--echo", f"echo:{ECHO_PORT}", *KINDS]),
    SwarmCase(
        "host-port",
        "to echo's node, a mode: host published port",
        lambda p: ["--echo", f"{p.node_of('echo').address}:{ECHO_PORT}", *KINDS],
    ),
    SwarmCase(
        "gwbridge", "leaving the overlay to a host outside", lambda p: ["--echo", f"{p.outside}:{ECHO_PORT}", *KINDS]
    ),
    SwarmCase("vip", "through the service's virtual IP", never, needs_ipvs=True),
    SwarmCase("ingress", "through the ingress routing mesh", never, needs_ipvs=True),
)


@dataclass
class CaseResult:
    """What one case ran (the client's flows, as `socklab client --json` printed them), or why it could not."""

    case: SwarmCase
    outcomes: list[dict]
    unavailable: str | None = None


def run_case(case: SwarmCase, placement: Placement) -> CaseResult:
    """Run one case in client-wan's task; a case needing IPVS where there is none is unavailable, with the reason."""
    reason = ipvs_missing() if case.needs_ipvs else None
    if reason is not None:
        return CaseResult(case, [], f"unavailable: {reason}")
    if case.needs_ipvs:
        return CaseResult(case, [], "unavailable: IPVS is present, but this case is not written yet")
    _, client = placement.tasks["client-wan"]
    command = ["socklab", "client", "--json", "--tag", f"swarm-{case.name}", *case.args(placement)]
    code, output = client.exec_run(command, user="socklab")
    text = output.decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n{text}")
    return CaseResult(case, parse_json_lines(text))


def run_cases(placement: Placement) -> list[CaseResult]:
    """Every case, in order."""
    return [run_case(case, placement) for case in CASES]
