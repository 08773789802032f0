"""router: forwards between lan and wan and translates lan's addresses with iptables.

Its settings (NAT_MODE, NAT_FILTER, NAT_HAIRPIN, SOCKLAB_DMZ, the LAN subnets) come from shared.config;
README.md's "NAT behaviour" says what each value does. The rules live in chains of their own
(SOCKLAB_PRE, SOCKLAB_POST), so `socklab router --apply` can switch behaviour in a running router
without touching Docker's rules. It sits on ctl only to report: every conntrack event (NEW, DESTROY) is
streamed to the collector (services.conntrack_events), the kernel's evidence of each translation; its
rules match the LAN's addresses and the WAN address only, so ctl traffic is never translated.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import zmq

from services.conntrack_events import follow_conntrack, read_setup
from shared.config import (
    argument_type,
    load_config,
    parse_ipv4_host,
    parse_ipv4_network,
    parse_ipv6_network,
    parse_nat_mode,
    parse_router_filter,
    parse_switch,
)
from shared.names import parse_hostport, route_source
from shared.nat import ROUTER_FILTERS, Behaviour, NatMode
from shared.readiness import READY_DIR, mark_ready
from shared.reporter import Reporter

log = logging.getLogger(__name__)

# cone: Linux keeps the source port when it is free and one mapping per internal name (endpoint-independent);
# symmetric: a random port for every new destination address and port (address-and-port-dependent).
MASQUERADE_OPTIONS = {NatMode.CONE: [], NatMode.SYMMETRIC: ["--random-fully"]}
CHAINS = {"SOCKLAB_PRE": "PREROUTING", "SOCKLAB_POST": "POSTROUTING"}
# The filter table's chain: new connections to the router's own WAN address are dropped before conntrack
# confirms them, as a home router's firewall does, so a peer's early punch leaves no entry whose tuple
# would make the kernel move the LAN host's mapping to another port (RFC 5128 section 3.3).
INPUT_CHAIN = "SOCKLAB_IN"
# The filter table's chain for forwarded packets: LAN hosts on different access networks (a CGN's
# subscribers) reach each other only through a rewrite (hairpin), never by their private names.
FORWARD_CHAIN = "SOCKLAB_FWD"
RESOLVE_TIMEOUT = 10.0  # the collector is started before the router (compose), its name may lag a moment
# What each rule is for; the router's setup names them, so the collector can say which rule rewrote a flow.
RULE_SNAT4, RULE_SNAT6, RULE_INBOUND = "snat-ipv4", "snat-ipv6", "inbound-dnat"
RULE_HAIRPIN_DNAT, RULE_HAIRPIN_SNAT = "hairpin-dnat", "hairpin-snat"
RULE_INPUT_DROP = "inbound-drop"
RULE_ISOLATION4, RULE_ISOLATION6 = "isolation-ipv4", "isolation-ipv6"
# The kernel's idle timeouts for UDP entries in this network namespace (compose's sysctls set them).
UDP_TIMEOUTS = {
    "udp_timeout": Path("/proc/sys/net/netfilter/nf_conntrack_udp_timeout"),
    "udp_timeout_stream": Path("/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream"),
}


@dataclass(frozen=True)
class RouterSetup:
    """The NAT the router is asked to be (mapping, filtering, hairpin), and the addresses it does it with."""

    mode: NatMode
    filtering: Behaviour
    hairpin: bool
    lan: ipaddress.IPv4Network
    lan6: ipaddress.IPv6Network | None
    wan_address: str
    dmz: ipaddress.IPv4Address | None


def nat_rules(nat: RouterSetup) -> list[list[str]]:
    """The iptables commands for a behaviour, appended to socklab's own chains."""
    return list(named_rules(nat).values())


def named_rules(nat: RouterSetup) -> dict[str, list[str]]:
    """The iptables commands for a behaviour, by purpose: what a conntrack entry's rewrite is explained by."""
    if nat.filtering not in ROUTER_FILTERS:
        raise ValueError(f"the router cannot do {nat.filtering} filtering, only {', '.join(ROUTER_FILTERS)}")
    if (nat.filtering == Behaviour.ENDPOINT_INDEPENDENT or nat.hairpin) and not nat.dmz:
        raise ValueError("endpoint-independent filtering and hairpinning need a DMZ host (SOCKLAB_DMZ)")
    lan = str(nat.lan)
    masquerade = ["-t", "nat", "-A", "SOCKLAB_POST", "-j", "MASQUERADE", *MASQUERADE_OPTIONS[nat.mode]]
    rules = {RULE_SNAT4: ["iptables", *masquerade[:4], "-s", lan, "!", "-d", lan, *masquerade[4:]]}
    if nat.lan6:
        lan6 = str(nat.lan6)
        rules[RULE_SNAT6] = ["ip6tables", *masquerade[:4], "-s", lan6, "!", "-d", lan6, *masquerade[4:]]
    to_dmz = ["-p", "udp", "-d", nat.wan_address, "-j", "DNAT", "--to-destination", str(nat.dmz)]
    if nat.filtering == Behaviour.ENDPOINT_INDEPENDENT:
        rules[RULE_INBOUND] = ["iptables", "-t", "nat", "-A", "SOCKLAB_PRE", "!", "-s", lan, *to_dmz]
    if nat.hairpin:
        rules[RULE_HAIRPIN_DNAT] = ["iptables", "-t", "nat", "-A", "SOCKLAB_PRE", "-s", lan, *to_dmz]
        rules[RULE_HAIRPIN_SNAT] = [
            "iptables",
            "-t",
            "nat",
            "-A",
            "SOCKLAB_POST",
            "-s",
            lan,
            "-d",
            lan,
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "-j",
            "SNAT",
            "--to-source",
            nat.wan_address,
        ]
    # Last, so the NAT rules keep their places: filter-table rules, whatever the behaviour.
    rules[RULE_INPUT_DROP] = [
        "iptables",
        "-A",
        INPUT_CHAIN,
        "-d",
        nat.wan_address,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-j",
        "DROP",
    ]
    isolate = ["-A", FORWARD_CHAIN, "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP"]
    rules[RULE_ISOLATION4] = ["iptables", *isolate[:2], "-s", lan, "-d", lan, *isolate[2:]]
    if nat.lan6:
        rules[RULE_ISOLATION6] = ["ip6tables", *isolate[:2], "-s", str(nat.lan6), "-d", str(nat.lan6), *isolate[2:]]
    return rules


def chain_setup(tool: str) -> list[list[str]]:
    """Create socklab's chains once and jump to them from the built-in ones."""
    commands = []
    for chain, parent in CHAINS.items():
        commands.append([tool, "-t", "nat", "-N", chain])
        commands.append([tool, "-t", "nat", "-A", parent, "-j", chain])
    for chain, parent in ((INPUT_CHAIN, "INPUT"), (FORWARD_CHAIN, "FORWARD")):
        commands.append([tool, "-N", chain])
        commands.append([tool, "-A", parent, "-j", chain])
    return commands


def chain_flush(tool: str) -> list[list[str]]:
    """Empty socklab's chains before a new behaviour goes in."""
    return [[tool, "-t", "nat", "-F", chain] for chain in CHAINS] + [
        [tool, "-F", INPUT_CHAIN],
        [tool, "-F", FORWARD_CHAIN],
    ]


def find_wan_address(network: ipaddress.IPv4Network, ctl: str | None = None) -> str:
    """The router's IPv4 address outside the LAN and off ctl (where reports go), read from its interfaces."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], check=True, capture_output=True, text=True).stdout
    for link in json.loads(out):
        if ctl is not None and any(addr["local"] == ctl for addr in link.get("addr_info", [])):
            continue
        for addr in link.get("addr_info", []):
            ip = ipaddress.ip_address(addr["local"])
            if not ip.is_loopback and ip not in network:
                return str(ip)
    raise RuntimeError("the router has no address outside the LAN")


def read_udp_timeouts() -> dict[str, int]:
    """The seconds an idle UDP mapping lives here, as the kernel has them (not as we were told)."""
    return {name: int(path.read_text()) for name, path in UDP_TIMEOUTS.items()}


def check_udp_timeouts(configured: dict[str, int]) -> None:
    """Say loudly when the kernel's UDP timeouts are not the configured ones (a router started without the sysctls)."""
    for name, seconds in read_udp_timeouts().items():
        if seconds != configured[name]:
            log.warning("nf_conntrack_%s is %d s, not the configured %d s", name, seconds, configured[name])


def run(commands: list[list[str]]) -> None:
    """Run iptables commands, each logged, stopping at the first failure."""
    for command in commands:
        log.info("%s", " ".join(command))
        subprocess.run(command, check=True)


def apply(nat: RouterSetup, first_time: bool, service: str = "router") -> None:
    """Install a behaviour; when switching, forget old mappings so the new rules decide every flow."""
    tools = ["iptables", "ip6tables"] if nat.lan6 else ["iptables"]
    for tool in tools:
        run(chain_setup(tool) if first_time else chain_flush(tool))
    rules = named_rules(nat)
    run(list(rules.values()))
    if not first_time:
        subprocess.run(["conntrack", "-F"], check=True, capture_output=True)
    mark_ready(service, json.dumps({**describe_setup(nat, rules), **read_udp_timeouts()}))


def describe_setup(nat: RouterSetup, rules: dict[str, list[str]]) -> dict[str, Any]:
    """The setup as the ready file keeps it and every conntrack record carries it: the evidence's context."""
    return {
        "mode": str(nat.mode),
        "filtering": str(nat.filtering),
        "hairpin": nat.hairpin,
        "wan_address": nat.wan_address,
        "lan": [str(net) for net in (nat.lan, nat.lan6) if net],
        "rules": {purpose: " ".join(command) for purpose, command in rules.items()},
    }


def collector_source(endpoint: str) -> str | None:
    """The router's own address toward the collector (its ctl address), which is never its WAN address."""
    host, port = parse_hostport(endpoint.removeprefix("tcp://"))
    deadline = time.monotonic() + RESOLVE_TIMEOUT
    while True:
        try:
            return route_source(socket.gethostbyname(host), port)
        except OSError as exc:
            if time.monotonic() > deadline:
                log.warning("collector %s unreachable, its route not excluded: %s", endpoint, exc)
                return None
            time.sleep(0.1)


def stream_conntrack(endpoint: str, service: str, node: str) -> None:
    """Stream conntrack events to the collector from a thread of its own, through its own Reporter."""
    context = zmq.Context()
    reporter = Reporter(context, endpoint, service, node=node)
    reporter.report_topology()  # before the thread takes the socket over
    setup = partial(read_setup, str(READY_DIR / service))
    threading.Thread(target=follow_conntrack, args=(reporter, setup), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Install the NAT rules and stay up, or (--apply) switch a running router's behaviour and exit."""
    cfg = load_config("router")
    parser = argparse.ArgumentParser(prog="socklab router", description=main.__doc__)
    parser.add_argument("--mode", type=argument_type(parse_nat_mode), default=cfg.nat_mode, choices=list(NatMode))
    parser.add_argument(
        "--filter", type=argument_type(parse_router_filter), default=cfg.nat_filter, choices=ROUTER_FILTERS
    )
    parser.add_argument("--hairpin", type=argument_type(parse_switch), default=cfg.nat_hairpin, metavar="{on,off}")
    parser.add_argument("--lan", type=argument_type(parse_ipv4_network), default=cfg.lan_subnet)
    parser.add_argument("--lan6", type=argument_type(parse_ipv6_network), default=cfg.lan6_subnet)
    parser.add_argument(
        "--dmz", type=argument_type(parse_ipv4_host), default=cfg.dmz, help="LAN host for inbound and hairpin UDP"
    )
    parser.add_argument("--apply", action="store_true", help="switch a running router, then exit")
    args = parser.parse_args(argv)
    wan_address = find_wan_address(args.lan, collector_source(cfg.collector))
    nat = RouterSetup(args.mode, args.filter, args.hairpin, args.lan, args.lan6, wan_address, args.dmz)
    check_udp_timeouts({"udp_timeout": cfg.router_udp_timeout, "udp_timeout_stream": cfg.router_udp_stream_timeout})
    if not args.apply:  # before the rules and the ready file: no flow it lets through goes unrecorded
        stream_conntrack(cfg.collector, cfg.service, cfg.node)
    apply(nat, first_time=not args.apply, service=cfg.service)
    log.info("router: %s mapping, %s filtering, hairpin %s", nat.mode, nat.filtering, "on" if nat.hairpin else "off")
    if not args.apply:
        threading.Event().wait()
