"""Configuration: every environment variable socklab reads, declared once and parsed once.

SETTINGS is the one declaration (variable, default, meaning, parser); README.md's configuration table
is generated from it (`socklab config --markdown`), and a unit test keeps the two equal.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.names import parse_hostport
from shared.nat import ROUTER_FILTERS, Behaviour, NatMode

Address = tuple[str, int]
T = TypeVar("T")
SWITCH_WORDS = {"on": True, "off": False}


def parse_port(text: str) -> int:
    """A TCP or UDP port number, 0 letting the kernel choose."""
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return port


def parse_text(text: str) -> str:
    """Any non-empty string: endpoints, paths, service names."""
    if not text:
        raise ValueError("must not be empty")
    return text


def parse_addresses(text: str) -> tuple[Address, ...]:
    """Comma-separated host:port or [v6]:port, at least one."""
    addresses = tuple(parse_hostport(item.strip()) for item in text.split(",") if item.strip())
    if not addresses:
        raise ValueError("needs at least one host:port")
    return addresses


def parse_ipv4_address(text: str) -> ipaddress.IPv4Address:
    """One IPv4 address, with an error that says so."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 address ({exc})") from None


def parse_ipv4_hosts(text: str) -> tuple[str, ...]:
    """Comma-separated IPv4 addresses, possibly none."""
    return tuple(str(parse_ipv4_address(item.strip())) for item in text.split(",") if item.strip())


def parse_nat_mode(text: str) -> NatMode:
    """One of the router's mappings."""
    try:
        return NatMode(text)
    except ValueError:
        raise ValueError(f"{text!r} is not one of {', '.join(NatMode)}") from None


def parse_router_filter(text: str) -> Behaviour:
    """One of the filtering behaviours the router can set up."""
    if text not in ROUTER_FILTERS:
        raise ValueError(f"{text!r} is not one of {', '.join(ROUTER_FILTERS)}")
    return Behaviour(text)


def parse_switch(text: str) -> bool:
    """on or off."""
    try:
        return SWITCH_WORDS[text]
    except KeyError:
        raise ValueError(f"{text!r} is not one of {', '.join(SWITCH_WORDS)}") from None


def parse_ipv4_network(text: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet such as 192.168.50.0/24."""
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 subnet ({exc})") from None


def parse_ipv6_network(text: str) -> ipaddress.IPv6Network | None:
    """An IPv6 subnet such as fd00:50::/64; empty for none."""
    try:
        return ipaddress.IPv6Network(text) if text else None
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv6 subnet ({exc})") from None


def parse_ipv4_host(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address, as iptables' DNAT needs it; empty for none."""
    return parse_ipv4_address(text) if text else None


def parse_seconds(text: str) -> int:
    """A whole number of seconds, at least 1: a kernel timeout."""
    try:
        seconds = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number of seconds") from None
    if seconds < 1:
        raise ValueError(f"{seconds} s is not a timeout: at least 1")
    return seconds


def parse_log_level(text: str) -> str:
    """A logging level name: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    level = text.upper()
    if level not in logging.getLevelNamesMapping() or level == "NOTSET":
        raise ValueError(f"{text!r} is not a log level")
    return level


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Let argparse use a setting's parser for its command-line override, with the parser's own message."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


@dataclass(frozen=True)
class Setting:
    """One environment variable: where it lands in Config, its default as written, and what it means."""

    variable: str
    field: str
    default: str
    meaning: str
    parse: Callable[[str], Any]
    shown_default: str = ""


SETTINGS = (
    Setting("SOCKLAB_SERVICE", "service", "", "service name in every record", parse_text, "the subcommand"),
    Setting(
        "SOCKLAB_NODE",
        "node",
        "",
        "the Docker engine's name in every record (docker/compose sets it from `docker info`; swarm: the node's)",
        str,
    ),
    Setting(
        "SOCKLAB_COLLECTOR",
        "collector",
        "tcp://collector:5555",
        "collector's ROUTER endpoint (records in, acks back)",
        parse_text,
    ),
    Setting("SOCKLAB_QUERY", "query", "tcp://collector:5556", "collector's REP endpoint", parse_text),
    Setting(
        "SOCKLAB_REGISTRY",
        "registries",
        "registry:5300",
        "registry host:port, comma-separated (IPv4 and IPv6); the first is asked first",
        parse_addresses,
    ),
    Setting("SOCKLAB_ECHO_PORT", "echo_port", "7007", "echo's TCP and UDP port", parse_port),
    Setting(
        "SOCKLAB_WHOAMI_PORT",
        "whoami_port",
        "7008",
        "echo's whoami port (TCP and UDP): one line, how you were seen",
        parse_port,
    ),
    Setting(
        "SOCKLAB_HTTP_WHOAMI_PORT",
        "http_whoami_port",
        "7080",
        "echo's whoami over HTTP: JSON, or text/html",
        parse_port,
    ),
    Setting("SOCKLAB_UNIX_PATH", "unix_path", "/run/socklab/echo.sock", "echo's Unix socket; empty: none", str),
    Setting("SOCKLAB_REGISTRY_PORT", "registry_port", "5300", "registry's TCP port", parse_port),
    Setting("SOCKLAB_STUN_PORT", "stun_port", "3478", "registry's STUN port (UDP)", parse_port),
    Setting(
        "SOCKLAB_STUN_ADDRESSES",
        "stun_addresses",
        "",
        "registry: primary,alternate IPv4 for RFC 5780; empty: one dual-stack socket",
        parse_ipv4_hosts,
    ),
    Setting("SOCKLAB_STUN_ALT_PORT", "stun_alt_port", "3479", "registry: RFC 5780's alternate port", parse_port),
    Setting(
        "SOCKLAB_KEYS",
        "keys",
        "/run/socklab-keys",
        "CurveZMQ keys: the collector makes them here at first start; a client reads server.key and client.key_secret",
        parse_text,
    ),
    Setting("SOCKLAB_STORE", "store", "/var/lib/socklab/records.bin", "collector's append-only store", parse_text),
    Setting(
        "SOCKLAB_INGEST_PORT", "ingest_port", "5555", "collector's ROUTER port (records in, acks back)", parse_port
    ),
    Setting("SOCKLAB_QUERY_PORT", "query_port", "5556", "collector's REP port", parse_port),
    Setting("SOCKLAB_HTTP_PORT", "http_port", "8080", "collector's live page (/ and /report.json)", parse_port),
    Setting("SOCKLAB_BIND_PORT", "bind_port", "47000", "the client's explicit source port (tcp-bound)", parse_port),
    Setting("NAT_MODE", "nat_mode", NatMode.CONE, f"router mapping: {' or '.join(NatMode)}", parse_nat_mode),
    Setting(
        "NAT_FILTER",
        "nat_filter",
        Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        f"router filtering: {' or '.join(ROUTER_FILTERS)} (to the DMZ host)",
        parse_router_filter,
    ),
    Setting("NAT_HAIRPIN", "nat_hairpin", "off", "router hairpinning for the DMZ host: on or off", parse_switch),
    Setting("NAT_MODE2", "nat_mode2", NatMode.CONE, "router2 (lan2's NAT): its NAT_MODE", parse_nat_mode),
    Setting(
        "NAT_FILTER2",
        "nat_filter2",
        Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        "router2 (lan2's NAT): its NAT_FILTER",
        parse_router_filter,
    ),
    Setting("NAT_HAIRPIN2", "nat_hairpin2", "off", "router2 (lan2's NAT): its NAT_HAIRPIN", parse_switch),
    Setting(
        "NAT_MODE_CGN", "nat_mode_cgn", NatMode.CONE, "cgn (TOPOLOGY=cgn's carrier NAT): its NAT_MODE", parse_nat_mode
    ),
    Setting(
        "NAT_FILTER_CGN",
        "nat_filter_cgn",
        Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        "cgn (TOPOLOGY=cgn's carrier NAT): its NAT_FILTER",
        parse_router_filter,
    ),
    Setting("NAT_HAIRPIN_CGN", "nat_hairpin_cgn", "on", "cgn: its NAT_HAIRPIN (RFC 6888 REQ-9: on)", parse_switch),
    Setting(
        "SOCKLAB_LAN_SUBNET", "lan_subnet", "192.168.50.0/24", "router: the LAN it masquerades", parse_ipv4_network
    ),
    Setting(
        "SOCKLAB_LAN6_SUBNET", "lan6_subnet", "fd00:50::/64", "router: the IPv6 LAN; empty: none", parse_ipv6_network
    ),
    Setting(
        "SOCKLAB_DMZ",
        "dmz",
        "",
        "router: the LAN host inbound and hairpinned UDP goes to (compose: client-lan's address)",
        parse_ipv4_host,
    ),
    Setting(
        "SOCKLAB_ROUTER_UDP_TIMEOUT",
        "router_udp_timeout",
        "30",
        "router: seconds an idle UDP mapping lives (compose sets its net.netfilter.nf_conntrack_udp_timeout)",
        parse_seconds,
    ),
    Setting(
        "SOCKLAB_ROUTER_UDP_STREAM_TIMEOUT",
        "router_udp_stream_timeout",
        "120",
        "router: the same once a UDP flow has run both ways for 2 s (nf_conntrack_udp_timeout_stream)",
        parse_seconds,
    ),
    Setting("SOCKLAB_LOG", "log_level", "INFO", "log level", parse_log_level),
)


@dataclass(frozen=True)
class Config:
    """Everything any service or command reads from its environment, already parsed."""

    service: str
    node: str
    collector: str
    query: str
    registries: tuple[Address, ...]
    echo_port: int
    whoami_port: int
    http_whoami_port: int
    unix_path: str
    registry_port: int
    stun_port: int
    stun_addresses: tuple[str, ...]
    stun_alt_port: int
    keys: str
    store: str
    ingest_port: int
    query_port: int
    http_port: int
    bind_port: int
    nat_mode: NatMode
    nat_filter: Behaviour
    nat_hairpin: bool
    nat_mode2: NatMode
    nat_filter2: Behaviour
    nat_hairpin2: bool
    nat_mode_cgn: NatMode
    nat_filter_cgn: Behaviour
    nat_hairpin_cgn: bool
    lan_subnet: ipaddress.IPv4Network
    lan6_subnet: ipaddress.IPv6Network | None
    dmz: ipaddress.IPv4Address | None
    router_udp_timeout: int
    router_udp_stream_timeout: int
    log_level: str


def read_setting(setting: Setting, env: Mapping[str, str]) -> Any:
    """Parse one variable, or its default; a bad value is a ValueError that names the variable."""
    text = env.get(setting.variable, setting.default)
    try:
        return setting.parse(text.strip())
    except ValueError as exc:
        raise ValueError(f"{setting.variable}={text!r}: {exc}") from None


def load_config(service: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and parse every variable once, so that compose and tests can supply every address."""
    values = {"SOCKLAB_SERVICE": service, **(os.environ if env is None else env)}
    return Config(**{s.field: read_setting(s, values) for s in SETTINGS})


def markdown_table() -> str:
    """README.md's configuration table, written from SETTINGS so the two cannot drift."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.shown_default or s.default or "(empty)"
        lines.append(f"| {s.variable} | {default} | {s.meaning} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print what this environment configures, or (--markdown) the README's table of every variable."""
    parser = argparse.ArgumentParser(prog="socklab config", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="the README's configuration table")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
        return
    cfg = load_config("config")
    for s in SETTINGS:
        print(f"{s.variable:24} {getattr(cfg, s.field)}")
