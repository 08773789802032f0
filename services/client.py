"""client: looks echo up in the registry, then runs its scenarios and reports both of its names.

Every scenario reports its getsockname last, carrying the scenario's name: its arrival tells the
collector the client's end of the flow is complete.

Scenarios, for each address family echo registered from:
  tcp        connect() from an ephemeral port
  tcp-bound  bind() to an explicit source port, then connect()
  udp        connect()ed UDP: send() and recv()
  udp-sendto unconnected UDP bound to the route's source address: sendto() and recvfrom()
and unix, a stream over the Unix socket on the shared volume. Every flow's first bytes carry its
flow id, and echo's answer tells the client how echo saw it (its reflexive name).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from shared.record import Role, new_flow_id
from shared.registry_protocol import lookup, register
from shared.reporter import Reporter

log = logging.getLogger(__name__)

PAYLOAD = b"socklab " * 64
TIMEOUT = 3.0


@dataclass
class Target:
    """Where a scenario sends to: an IP (host, port) for tcp and udp, a path for unix."""

    scenario: str
    address: tuple[str, int] | str


@dataclass
class Outcome:
    """What the client saw of one flow."""

    flow: str
    scenario: str
    local: Name
    remote: Name
    reflexive: Name | None


def run_stream(reporter: Reporter, target: Target, bind_port: int | None = None) -> Outcome:
    """One stream flow: [bind], connect, hello, echo, and every name reported."""
    flow = new_flow_id()
    family = socket.AF_UNIX if isinstance(target.address, str) else address_family(target.address[0])
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        if bind_port is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", bind_port))
            reporter.observe(sock, "bind", flow, Role.CLIENT, local=sock.getsockname())
        sock.connect(target.address)
        reporter.observe(sock, "connect", flow, Role.CLIENT, remote=target.address)
        sock.sendall(pack_hello(Hello(flow, len(PAYLOAD))) + PAYLOAD)
        reflexive = reflection_from_wire(recv_frame(sock), flow).peer
        local, remote = sock.getsockname(), sock.getpeername()
        extra = {"scenario": target.scenario, "reflexive": name_to_wire(reflexive)}
        reporter.observe(sock, "getpeername", flow, Role.CLIENT, remote=remote)
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=local, extra=extra)
        echoed = bytearray()
        while chunk := sock.recv(65536):
            echoed += chunk
        if bytes(echoed) != PAYLOAD:
            raise ValueError(f"echo returned {len(echoed)} bytes, not the {len(PAYLOAD)} sent")
    return Outcome(flow, target.scenario, local, remote, reflexive)


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
        extra = {"scenario": target.scenario, "reflexive": name_to_wire(reflexive)}
        reporter.observe(sock, "getpeername", flow, Role.CLIENT, remote=remote)
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=local, extra=extra)
    return Outcome(flow, target.scenario, local, remote, reflexive)


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
        extra = {"scenario": target.scenario, "reflexive": name_to_wire(reflexive)}
        reporter.observe(sock, "getsockname", flow, Role.CLIENT, local=sock.getsockname(), extra=extra)
    return Outcome(flow, target.scenario, local, remote, reflexive)


Runner = Callable[[Reporter, Target], Outcome]


def scenario_runners(bind_port: int) -> dict[str, Runner]:
    """Every scenario kind by name."""
    return {
        "tcp": run_stream,
        "tcp-bound": lambda reporter, target: run_stream(reporter, target, bind_port),
        "udp": run_udp_connected,
        "udp-sendto": run_udp_sendto,
        "unix": run_stream,
    }


def find_echo(registries: list[tuple[str, int]], reporter: Reporter) -> dict[str, tuple[str, dict[str, Any]]]:
    """Ask the registry where echo is, by address family: the address the registry observed echo at."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for address in registries:
        try:
            registrations = lookup(address, "echo", reporter)
        except (OSError, LookupError, ValueError) as exc:
            log.warning("lookup at %s failed: %s", format_name(address), exc)
            continue
        for entry in registrations:
            found["6" if entry.family == "ipv6" else "4"] = (entry.host, entry.ports)
    return found


def plan_targets(echo: dict[str, tuple[str, dict[str, Any]]], unix_path: str | None, kinds: list[str]) -> list[Target]:
    """Turn echo's addresses into one target per scenario kind and family."""
    targets = []
    for kind in kinds:
        if kind == "unix":
            if unix_path and os.path.exists(unix_path):
                targets.append(Target("unix", unix_path))
            continue
        proto = "tcp" if kind.startswith("tcp") else "udp"
        for fam, (host, ports) in sorted(echo.items()):
            targets.append(Target(f"{kind}{fam}", (host, int(ports[proto]))))
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


def run_scenarios(
    reporter: Reporter, targets: list[Target], bind_port: int, as_json: bool = False
) -> list[Outcome | Exception]:
    """Run every target once; a failing scenario is logged and the rest still run."""
    runners = scenario_runners(bind_port)
    results: list[Outcome | Exception] = []
    for target in targets:
        kind = target.scenario.rstrip("46")
        try:
            outcome = runners[kind](reporter, target)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("%s to %s failed: %s", target.scenario, format_name(target.address), exc)
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
    parser.add_argument("--scenario", action="append", choices=sorted(scenario_runners(0)), help="kinds to run")
    parser.add_argument("--echo", help="echo's host:port, instead of asking the registry")
    parser.add_argument("--bind-port", type=int, default=cfg.bind_port, help="source port for tcp-bound")
    parser.add_argument("--serve", action="store_true", help="after the first round, stay up for exec")
    parser.add_argument("--ready-file", default="/tmp/socklab-client-ready")
    parser.add_argument("--register", action="store_true", help="register this client with the registry")
    parser.add_argument("--json", action="store_true", help="print each flow as a JSON line")
    args = parser.parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service)
    registries = [parse_hostport(a) for a in cfg.registry.split(",")]
    failures = 0
    try:
        if args.register:
            register(registries[0], cfg.service, {}, reporter)
        if args.echo:
            host, port = parse_hostport(args.echo)
            echo = {"6" if ":" in host else "4": (host, {"tcp": port, "udp": port})}
        else:
            echo = find_echo(registries, reporter)
        kinds = args.scenario or list(scenario_runners(0))
        targets = plan_targets(echo, cfg.unix_path, kinds)
        for _ in range(args.repeat):
            results = run_scenarios(reporter, targets, args.bind_port, args.json)
            failures += sum(isinstance(r, Exception) for r in results)
        if args.serve:
            with open(args.ready_file, "w") as f:
                f.write(f"{len(targets)} targets, {failures} failures\n")
            threading.Event().wait()
    finally:
        reporter.close()
        context.term()
    if failures:
        sys.exit(f"{failures} scenario runs failed")
