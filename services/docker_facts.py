"""socklab docker-facts: the Docker host's own rewrites of published ports, reported to the collector.

Runs on the host, in the project's venv (the collector has no Docker socket). It reads Docker through
the `docker` package: each container of the compose project, its networks (address, gateway) and its
port bindings; and, from /proc, whether a docker-proxy process serves a binding (Docker's
userland-proxy setting at work: the proxy accepts the connection and opens its own from the bridge
gateway). A binding no proxy serves is Docker's DNAT in the host kernel. Each binding becomes a
"docker-binding" record (shared.record.DockerBinding), so the collector can name the rewriter of every
flow to a published port (services.paths). It first copies the host's CurveZMQ keys out of the
collector (shared.docker_host) into --keys (SOCKLAB_KEYS), where the host's other commands find them.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zmq
from docker.errors import DockerException

import docker
from services.paths import ANY_HOST, DOCKER_DNAT, dnat_rule
from shared.config import load_config
from shared.conntrack import ConntrackEntry
from shared.docker_host import DockerProxy, engine_name, fetch_host_keys, host_conntrack, list_docker_proxies
from shared.names import format_name
from shared.record import ConntrackEvent, ConntrackEventType, ConntrackTuple, DockerBinding, Family, Mechanism, Proto
from shared.reporter import Reporter

log = logging.getLogger(__name__)

ProxyKey = tuple[str, str, int]
PROXY_OPTIONS = ("-proto", "-host-ip", "-host-port", "-container-ip", "-container-port")


def find_proxies(proc: Path = Path("/proc")) -> dict[ProxyKey, DockerProxy]:
    """Every docker-proxy process with a whole command line, by (proto, host ip, host port)."""
    proxies = {}
    for proxy in list_docker_proxies(proc):
        options = proxy.options
        if all(key in options for key in PROXY_OPTIONS) and options["-host-port"].isdigit():
            proxies[(options["-proto"], canonical(options["-host-ip"]), int(options["-host-port"]))] = proxy
    return proxies


def canonical(host: str) -> str:
    """An address as the records write it (Docker writes '::1' and '0.0.0.0' alike), or the text unchanged."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    return host


def container_addresses(attrs: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(network, address, gateway) for each of a container's networks and address families."""
    found = []
    for network, settings in attrs["NetworkSettings"]["Networks"].items():
        for address, gateway in (("IPAddress", "Gateway"), ("GlobalIPv6Address", "IPv6Gateway")):
            if settings.get(address) and settings.get(gateway):
                found.append((network, settings[address], settings[gateway]))
    return found


def bindings_of(
    attrs: dict[str, Any], proxies: dict[ProxyKey, DockerProxy], service: str, host: str
) -> list[DockerBinding]:
    """A container's published ports as records: the proxy's own target where one serves it, else each address."""
    name = attrs["Name"].lstrip("/")
    addresses = container_addresses(attrs)
    bindings = []
    for port_proto, published in (attrs["NetworkSettings"].get("Ports") or {}).items():
        port_text, _, proto = port_proto.partition("/")
        if proto not in (Proto.TCP, Proto.UDP) or not published:
            continue
        for binding in published:
            host_ip, host_port = canonical(binding["HostIp"] or "0.0.0.0"), int(binding["HostPort"])
            proxy = proxies.get((proto, host_ip, host_port))
            for network, address, gateway in addresses:
                if proxy is None and ipaddress.ip_address(address).version != ipaddress.ip_address(host_ip).version:
                    continue
                if proxy is not None and canonical(proxy.container_ip) != canonical(address):
                    continue
                bindings.append(
                    DockerBinding(
                        service=service,
                        host=host,
                        proto=Proto(proto),
                        host_ip=host_ip,
                        host_port=host_port,
                        container=name,
                        container_ip=canonical(address),
                        container_port=int(port_text),
                        network=network,
                        gateway=canonical(gateway),
                        mechanism=Mechanism.DOCKER_PROXY if proxy else Mechanism.DOCKER_DNAT,
                        proxy_pid=proxy.pid if proxy else None,
                        proxy_command=proxy.command if proxy else (),
                    )
                )
    return bindings


def dnat_events(
    bindings: Iterable[DockerBinding], entries: Iterable[ConntrackEntry], host: str
) -> list[ConntrackEvent]:
    """The host kernel's entries Docker's DNAT made for a binding (the host's own connections to a published
    address, or any without the userland proxy), as listed records: what a flow only echo reported is joined to."""
    events = []
    for entry in entries:
        target = (canonical(entry.reply_src), entry.reply_sport)
        for binding in bindings:
            published = binding.host_ip in ANY_HOST or canonical(entry.dst) == binding.host_ip
            if (
                entry.proto == binding.proto
                and published
                and entry.dport == binding.host_port
                and target == (binding.container_ip, binding.container_port)
                and (canonical(entry.dst), entry.dport) != target
            ):
                events.append(listed_event(entry, binding, host))
                break
    return events


def listed_event(entry: ConntrackEntry, binding: DockerBinding, host: str) -> ConntrackEvent:
    """One DNAT'ed host entry as a conntrack record: its tuples, and Docker's rule as the setup that explains it."""
    setup = {"rules": {"inbound-dnat": dnat_rule(binding)}, "wan_address": binding.host_ip, "network": binding.network}
    return ConntrackEvent(
        service=DOCKER_DNAT,
        host=host,
        event=ConntrackEventType.LISTED,
        id=entry.id or 0,
        proto=Proto(entry.proto),
        family=Family.IPV6 if ":" in entry.src else Family.IPV4,
        original=ConntrackTuple(entry.src, entry.dst, entry.sport, entry.dport),
        reply=ConntrackTuple(entry.reply_src, entry.reply_dst, entry.reply_sport, entry.reply_dport),
        setup=setup,
    )


def project_containers(client: docker.DockerClient, project: str) -> list[Any]:
    """The compose project's running containers."""
    return client.containers.list(filters={"label": f"com.docker.compose.project={project}"})


def find_collector(containers: Iterable[Any]) -> Any:
    """The project's collector container."""
    for container in containers:
        if container.labels.get("com.docker.compose.service") == "collector":
            return container
    raise LookupError("the project has no collector")


def collector_endpoint(collector: Any) -> str:
    """The collector's PULL port as the host reaches it: its published 5555/tcp."""
    for binding in collector.attrs["NetworkSettings"]["Ports"].get("5555/tcp") or []:
        host = canonical(binding["HostIp"] or "127.0.0.1")
        return f"tcp://{format_name((host, int(binding['HostPort'])))}"
    raise LookupError("the project's collector has no published port 5555")


def read_host_conntrack() -> list[ConntrackEntry]:
    """The host's conntrack table, or none where this user may not read it (said once, in the log)."""
    try:
        return host_conntrack()
    except OSError as exc:
        log.warning("the host's conntrack table is unreadable, no docker-dnat entries reported: %s", exc)
        return []


def format_binding(binding: DockerBinding) -> str:
    """One binding for people."""
    how = f"docker-proxy pid {binding.proxy_pid}" if binding.proxy_pid else "Docker's DNAT (no userland proxy)"
    return (
        f"{binding.proto} {format_name((binding.host_ip, binding.host_port))} -> {binding.container} "
        f"{format_name((binding.container_ip, binding.container_port))} on {binding.network} "
        f"(gateway {binding.gateway}): {how}"
    )


def main(argv: list[str] | None = None) -> None:
    """Report the Docker host's published-port bindings of a compose project to its collector."""
    cfg = load_config("host")
    parser = argparse.ArgumentParser(prog="socklab docker-facts", description=main.__doc__)
    parser.add_argument("--project", default=os.environ.get("COMPOSE_PROJECT_NAME", "socklab"))
    parser.add_argument("--collector", help="collector's ROUTER endpoint (default: its published port)")
    parser.add_argument("--quiet", action="store_true", help="report without printing")
    parser.add_argument("--keys", default=cfg.keys, help="where the host's keys are copied from the collector to")
    args = parser.parse_args(argv)
    try:
        client = docker.from_env()
        containers = project_containers(client, args.project)
        collector = find_collector(containers)
        endpoint = args.collector or collector_endpoint(collector)
        fetch_host_keys(collector, Path(args.keys))
    except (DockerException, LookupError, FileNotFoundError) as exc:
        sys.exit(f"docker-facts: {exc}")
    proxies = find_proxies()
    service = cfg.service
    bindings = [b for c in containers for b in bindings_of(c.attrs, proxies, service, socket.gethostname())]
    context = zmq.Context()
    reporter = Reporter(context, endpoint, service, node=cfg.node or engine_name(client), keys=args.keys)
    try:
        for binding in bindings:
            reporter.report(binding)
            if not args.quiet:
                print(format_binding(binding))
        for event in dnat_events(bindings, read_host_conntrack(), socket.gethostname()):
            reporter.report(event)
            if not args.quiet:
                print(f"{DOCKER_DNAT}: {event.proto} {event.original.to_wire()} -> {event.reply.to_wire()}")
    finally:
        reporter.close()
        context.term()
    log.debug("reported %d bindings of project %s to %s", len(bindings), args.project, endpoint)
