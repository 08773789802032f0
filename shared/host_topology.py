"""Where a service runs, as it says itself: interfaces, addresses and routes from `ip -j addr`/`ip -j route`.

Reported once at start as a topology record (shared.record.Topology), so the collector can draw the
networks and gateways without a Docker socket of its own.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Any

from shared.record import Interface, Route, Topology

log = logging.getLogger(__name__)

IP_COMMANDS = {
    "addr": ["ip", "-j", "addr", "show"],
    "route4": ["ip", "-j", "-4", "route", "show", "table", "main"],
    "route6": ["ip", "-j", "-6", "route", "show", "table", "main"],
}


def parse_interfaces(shown: list[dict[str, Any]]) -> tuple[Interface, ...]:
    """Interfaces with global addresses, from `ip -j addr` (loopback and link-local left out)."""
    interfaces = []
    for link in shown:
        addresses = tuple(
            f"{info['local']}/{info['prefixlen']}"
            for info in link.get("addr_info", [])
            if info.get("scope") == "global" and "local" in info and "prefixlen" in info
        )
        if addresses:
            interfaces.append(Interface(str(link.get("ifname", "?")), addresses))
    return tuple(interfaces)


def parse_routes(shown: list[dict[str, Any]], default: str) -> tuple[Route, ...]:
    """Routes from `ip -j -4|-6 route`, "default" written as its prefix (0.0.0.0/0 or ::/0), link-local left out."""
    return tuple(
        Route(
            default if route["dst"] == "default" else str(route["dst"]),
            route.get("gateway"),
            str(route.get("dev", "?")),
        )
        for route in shown
        if "dst" in route and not str(route["dst"]).startswith("fe80:")
    )


def run_ip(command: list[str]) -> list[dict[str, Any]]:
    """One `ip -j` command's answer; empty (and logged) where iproute2 is missing or fails."""
    try:
        shown = json.loads(subprocess.run(command, capture_output=True, check=True, timeout=5).stdout or b"[]")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.info("no topology from %s: %s", " ".join(command), exc)
        return []
    return shown if isinstance(shown, list) else []


def read_topology(service: str, host: str) -> Topology:
    """This host's interfaces and routes, as the topology record reports them."""
    routes = parse_routes(run_ip(IP_COMMANDS["route4"]), "0.0.0.0/0") + parse_routes(
        run_ip(IP_COMMANDS["route6"]), "::/0"
    )
    return Topology(
        service=service,
        host=host,
        container=os.path.exists("/.dockerenv"),
        interfaces=parse_interfaces(run_ip(IP_COMMANDS["addr"])),
        routes=routes,
    )
