"""client: looks echo up in the registry, then runs its scenarios and reports both of its names.

Every scenario reports its getsockname last, carrying the scenario's name: its arrival tells the
collector the client's end of the flow is complete.

The scenarios are one table, SCENARIOS: a row per scenario (name, kind, proto, family, runner), so a
new scenario is a new row. Kinds, each for IPv4 and IPv6 where echo registered from that family:
  tcp        connect() from an ephemeral port
  tcp-bound  bind() to an explicit source port, then connect()
  udp        connect()ed UDP: send() and recv()
  udp-sendto unconnected UDP bound to the route's source address: sendto() and recvfrom()
and unix, a stream over the Unix socket on the shared volume. Every flow's first bytes carry its
flow id, and echo's answer tells the client how echo saw it (its reflexive name).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from shared.config import load_config
from shared.echo_protocol import (
    MAX_DATAGRAM,
    Datagram,
    Hello,
    pack_datagram,
    pack_hello,
    reflection_from_wire,
    unpack_reflection_datagram,
)
from shared.framing import recv_frame
from shared.names import Name, address_family, format_name, name_to_wire, parse_hostport, route_source
from shared.readiness import mark_ready, wait_ready
from shared.record import Family, Proto, Role, new_flow_id
from shared.registry_protocol import Registration, lookup, register
from shared.reporter import Reporter

log = logging.getLogger(__name__)

PAYLOAD = b"socklab " * 64
TIMEOUT = 3.0


@dataclass(frozen=True)
class Target:
    """Where one scenario sends to (an IP (host, port), or a path for unix), and the source port tcp-bound binds."""

    scenario: Scenario
    address: tuple[str, int] | str
    bind_port: int = 0
    tag: str = ""

    @property
    def name(self) -> str:
        """The scenario's name in records and the report: TAG-NAME where the run was tagged (swarm-overlay-tcp4)."""
        return f"{self.tag}-{self.scenario.name}" if self.tag else self.scenario.name


@dataclass
class Outcome:
    """What the client saw of one flow."""

    flow: str
    scenario: str
    local: Name
    remote: Name
    reflexive: Name | None


def run_stream(reporter: Reporter, target: Target) -> Outcome:
    """One stream flow from an ephemeral port: connect, hello, echo, and every name reported."""
    return stream_flow(reporter, target, bind=False)


def run_bound_stream(reporter: Reporter, target: Target) -> Outcome:
    """One stream flow from the explicit source port: bind, connect, hello, echo."""
    return stream_flow(reporter, target, bind=True)


def stream_flow(reporter: Reporter, target: Target, bind: bool) -> Outcome:
    """One stream flow: [bind], connect, hello, echo, and every name reported."""
    flow = new_flow_id()
    family = socket.AF_UNIX if isinstance(target.address, str) else address_family(target.address[0])
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        if bind:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", target.bind_port))
            reporter.observe(sock, "bind", flow, Role.CLIENT, local=sock.getsockname())
        sock.connect(target.address)
        reporter.observe(sock, "connect", flow, Role.CLIENT, remote=target.address)
        sock.sendall(pack_hello(Hello(flow, len(PAYLOAD))) + PAYLOAD)
        reflexive = reflection_from_wire(recv_frame(sock), flow).peer
        local, remote = sock.getsockname(), sock.getpeername()
        extra = {"scenario": target.name, "reflexive": name_to_wire(reflexive)}
        reporter.observe(sock, "getpeername", flow, Role.CLIENT, remote=remote)
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=local, extra=extra)
        echoed = bytearray()
        while chunk := sock.recv(65536):
            echoed += chunk
        if bytes(echoed) != PAYLOAD:
            raise ValueError(f"echo returned {len(echoed)} bytes, not the {len(PAYLOAD)} sent")
    return Outcome(flow, target.name, local, remote, reflexive)


def run_udp_connected(reporter: Reporter, target: Target) -> Outcome:
    """One connected-UDP flow: connect, send, recv."""
    assert isinstance(target.address, tuple)
    flow = new_flow_id()
    with socket.socket(address_family(target.address[0]), socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(target.address)
        reporter.observe(sock, "connect", flow, Role.CLIENT, remote=target.address)
        sock.send(pack_datagram(Datagram(flow, PAYLOAD)))
        reflexive = unpack_reflection_datagram(sock.recv(MAX_DATAGRAM), flow).peer
        local, remote = sock.getsockname(), sock.getpeername()
        extra = {"scenario": target.name, "reflexive": name_to_wire(reflexive)}
        reporter.observe(sock, "getpeername", flow, Role.CLIENT, remote=remote)
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=local, extra=extra)
    return Outcome(flow, target.name, local, remote, reflexive)


def run_udp_sendto(reporter: Reporter, target: Target) -> Outcome:
    """One unconnected-UDP flow: bind to the route's source address, sendto, recvfrom."""
    assert isinstance(target.address, tuple)
    flow = new_flow_id()
    host = target.address[0]
    with socket.socket(address_family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((route_source(*target.address), 0))
        local = sock.getsockname()
        reporter.observe(sock, "bind", flow, Role.CLIENT, local=local)
        sock.sendto(pack_datagram(Datagram(flow, PAYLOAD)), target.address)
        reporter.observe(sock, "sendto", flow, Role.CLIENT, remote=target.address)
        data, remote = sock.recvfrom(MAX_DATAGRAM)
        reflexive = unpack_reflection_datagram(data, flow).peer
        reporter.observe(sock, "recvfrom", flow, Role.CLIENT, remote=remote)
        extra = {"scenario": target.name, "reflexive": name_to_wire(reflexive)}
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=sock.getsockname(), extra=extra)
    return Outcome(flow, target.name, local, remote, reflexive)


Runner = Callable[[Reporter, Target], Outcome]


@dataclass(frozen=True)
class Scenario:
    """One row of the client's scenarios: its name in records and the report, its kind (--scenario), how it runs."""

    name: str
    kind: str
    proto: Proto
    family: Family
    run: Runner


SCENARIOS = (
    Scenario("tcp4", "tcp", Proto.TCP, Family.IPV4, run_stream),
    Scenario("tcp6", "tcp", Proto.TCP, Family.IPV6, run_stream),
    Scenario("tcp-bound4", "tcp-bound", Proto.TCP, Family.IPV4, run_bound_stream),
    Scenario("tcp-bound6", "tcp-bound", Proto.TCP, Family.IPV6, run_bound_stream),
    Scenario("udp4", "udp", Proto.UDP, Family.IPV4, run_udp_connected),
    Scenario("udp6", "udp", Proto.UDP, Family.IPV6, run_udp_connected),
    Scenario("udp-sendto4", "udp-sendto", Proto.UDP, Family.IPV4, run_udp_sendto),
    Scenario("udp-sendto6", "udp-sendto", Proto.UDP, Family.IPV6, run_udp_sendto),
    Scenario("unix", "unix", Proto.UNIX, Family.UNIX, run_stream),
)
KINDS = tuple(dict.fromkeys(s.kind for s in SCENARIOS))


def find_echo(registries: Sequence[tuple[str, int]], reporter: Reporter) -> dict[Family, Registration]:
    """Ask the registry where echo is, by address family: the address the registry observed echo at."""
    found: dict[Family, Registration] = {}
    for address in registries:
        try:
            registrations = lookup(address, "echo", reporter)
        except (OSError, LookupError, ValueError) as exc:
            log.warning("lookup at %s failed: %s", format_name(address), exc)
            continue
        for entry in registrations:
            found[entry.family] = entry
    return found


def resolve(host: str, port: int) -> tuple[str, int]:
    """An address literal as given; a name as this host's resolver answers it (a swarm service's DNS, say)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
        log.info("%s resolved to %s", host, resolved[0])
        return str(resolved[0]), port
    return host, port


def plan_targets(
    echo: dict[Family, Registration], unix_path: str | None, kinds: Sequence[str], bind_port: int, tag: str = ""
) -> list[Target]:
    """One target per scenario of the chosen kinds that echo can be reached for: its family registered, or its path."""
    targets = []
    for scenario in SCENARIOS:
        if scenario.kind not in kinds:
            continue
        if scenario.family == Family.UNIX:
            if unix_path and os.path.exists(unix_path):
                targets.append(Target(scenario, unix_path, tag=tag))
        elif registration := echo.get(scenario.family):
            port = int(registration.ports[scenario.proto])
            targets.append(Target(scenario, (registration.host, port), bind_port, tag))
    return targets


def print_outcome(outcome: Outcome, as_json: bool) -> None:
    """One line per flow: for people, or a JSON object for tests and scripts."""
    if as_json:
        fields = {"flow": outcome.flow, "scenario": outcome.scenario}
        names = {k: name_to_wire(getattr(outcome, k)) for k in ("local", "remote", "reflexive")}
        print(json.dumps({**fields, **names}), flush=True)
        return
    print(
        f"{outcome.scenario:14} {outcome.flow}  me {format_name(outcome.local):28} "
        f"-> {format_name(outcome.remote):28} echo saw me as {format_name(outcome.reflexive)}",
        flush=True,
    )


def run_scenarios(reporter: Reporter, targets: list[Target], as_json: bool = False) -> list[Outcome | Exception]:
    """Run every target once; a failing scenario is logged and the rest still run."""
    results: list[Outcome | Exception] = []
    for target in targets:
        try:
            outcome = target.scenario.run(reporter, target)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("%s to %s failed: %s", target.name, format_name(target.address), exc)
            results.append(exc)
            continue
        print_outcome(outcome, as_json)
        results.append(outcome)
    return results


def main(argv: list[str] | None = None) -> None:
    """Run the scenarios once, or --repeat times, or once and then stay up (--serve)."""
    cfg = load_config("client")
    parser = argparse.ArgumentParser(prog="socklab client", description=main.__doc__)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of scenarios to run")
    parser.add_argument("--scenario", action="append", choices=sorted(KINDS), help="kinds to run")
    parser.add_argument("--echo", help="echo's host:port (a name is resolved here), instead of asking the registry")
    parser.add_argument("--tag", default="", help="prefix for the scenarios' names in records (swarm-overlay)")
    parser.add_argument("--bind-port", type=int, default=cfg.bind_port, help="source port for tcp-bound")
    parser.add_argument("--serve", action="store_true", help="after the first round, stay up for exec")
    parser.add_argument("--after", action="append", default=[], metavar="SERVICE", help="wait until it is ready")
    parser.add_argument("--register", action="store_true", help="register this client with the registry")
    parser.add_argument("--json", action="store_true", help="print each flow as a JSON line")
    args = parser.parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)
    reporter.report_topology()
    failures = 0
    try:
        wait_ready(args.after, timeout=60)
        if args.register:
            register(cfg.registries[0], cfg.service, {}, reporter)
        if args.echo:
            host, port = resolve(*parse_hostport(args.echo))
            given = Registration("echo", None, (host, port), {Proto.TCP: port, Proto.UDP: port})
            echo = {given.family: given}
        else:
            echo = find_echo(cfg.registries, reporter)
        targets = plan_targets(echo, cfg.unix_path, args.scenario or KINDS, args.bind_port, args.tag)
        for _ in range(args.repeat):
            results = run_scenarios(reporter, targets, args.json)
            failures += sum(isinstance(r, Exception) for r in results)
        if args.serve:
            mark_ready(cfg.service, f"first round done: {len(targets)} targets, {failures} failures")
            threading.Event().wait()
    finally:
        reporter.close()
        context.term()
    if failures:
        sys.exit(f"{failures} scenario runs failed")
