"""router: forwards between lan and wan and translates lan's addresses with iptables.

NAT_MODE selects the mapping:
  cone       MASQUERADE: one mapping per internal address and port, the port kept when it is free
             (endpoint-independent mapping with port preservation, as Linux conntrack does it)
  symmetric  MASQUERADE --random-fully: a fresh random port for every new destination address and port
             (address-and-port-dependent mapping)
NAT_FILTER selects what may come in unsolicited:
  address-and-port-dependent  only replies conntrack expects (Linux's own behaviour, the default)
  endpoint-independent        any UDP to the router's WAN address is forwarded to the DMZ host
                              (SOCKLAB_DMZ) on the same port: with port preservation, a full cone
NAT_HAIRPIN=on lets LAN hosts reach the DMZ host's mappings through the router's WAN address,
arriving from that WAN address as RFC 4787 section 6 asks.

The rules live in chains of their own (SOCKLAB_PRE, SOCKLAB_POST), so `socklab router --apply`
can switch behaviour in a running router without touching Docker's rules.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import subprocess
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAPPINGS = {"cone": [], "symmetric": ["--random-fully"]}
FILTERS = ("address-and-port-dependent", "endpoint-independent")
CHAINS = {"SOCKLAB_PRE": "PREROUTING", "SOCKLAB_POST": "POSTROUTING"}
READY_FILE = "/run/socklab-router-ready"


@dataclass(frozen=True)
class NatBehaviour:
    """What the router is asked to do, and the addresses it does it with."""

    mode: str
    filtering: str
    hairpin: bool
    lan: str
    lan6: str | None
    wan_address: str
    dmz: str | None


def nat_rules(nat: NatBehaviour) -> list[list[str]]:
    """The iptables commands for a behaviour, appended to socklab's own chains."""
    if nat.mode not in MAPPINGS:
        raise ValueError(f"NAT_MODE {nat.mode!r} is not one of {', '.join(MAPPINGS)}")
    if nat.filtering not in FILTERS:
        raise ValueError(f"NAT_FILTER {nat.filtering!r} is not one of {', '.join(FILTERS)}")
    if (nat.filtering == "endpoint-independent" or nat.hairpin) and not nat.dmz:
        raise ValueError("endpoint-independent filtering and hairpinning need a DMZ host (SOCKLAB_DMZ)")
    random = MAPPINGS[nat.mode]
    masquerade = ["-t", "nat", "-A", "SOCKLAB_POST", "-j", "MASQUERADE", *random]
    rules = [["iptables", *masquerade[:4], "-s", nat.lan, "!", "-d", nat.lan, *masquerade[4:]]]
    if nat.lan6:
        rules.append(["ip6tables", *masquerade[:4], "-s", nat.lan6, "!", "-d", nat.lan6, *masquerade[4:]])
    to_dmz = ["-p", "udp", "-d", nat.wan_address, "-j", "DNAT", "--to-destination", str(nat.dmz)]
    if nat.filtering == "endpoint-independent":
        rules.append(["iptables", "-t", "nat", "-A", "SOCKLAB_PRE", "!", "-s", nat.lan, *to_dmz])
    if nat.hairpin:
        rules.append(["iptables", "-t", "nat", "-A", "SOCKLAB_PRE", "-s", nat.lan, *to_dmz])
        rules.append(
            [
                "iptables",
                "-t",
                "nat",
                "-A",
                "SOCKLAB_POST",
                "-s",
                nat.lan,
                "-d",
                nat.lan,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "SNAT",
                "--to-source",
                nat.wan_address,
            ]
        )
    return rules


def chain_setup(tool: str) -> list[list[str]]:
    """Create socklab's chains once and jump to them from the built-in ones."""
    commands = []
    for chain, parent in CHAINS.items():
        commands.append([tool, "-t", "nat", "-N", chain])
        commands.append([tool, "-t", "nat", "-A", parent, "-j", chain])
    return commands


def chain_flush(tool: str) -> list[list[str]]:
    """Empty socklab's chains before a new behaviour goes in."""
    return [[tool, "-t", "nat", "-F", chain] for chain in CHAINS]


def find_wan_address(lan: str) -> str:
    """The router's IPv4 address outside the LAN, read from its interfaces."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], check=True, capture_output=True, text=True).stdout
    network = ipaddress.ip_network(lan)
    for link in json.loads(out):
        for addr in link.get("addr_info", []):
            ip = ipaddress.ip_address(addr["local"])
            if not ip.is_loopback and ip not in network:
                return str(ip)
    raise RuntimeError("the router has no address outside the LAN")


def run(commands: list[list[str]]) -> None:
    """Run iptables commands, each logged, stopping at the first failure."""
    for command in commands:
        log.info("%s", " ".join(command))
        subprocess.run(command, check=True)


def apply(nat: NatBehaviour, first_time: bool) -> None:
    """Install a behaviour; when switching, forget old mappings so the new rules decide every flow."""
    tools = ["iptables", "ip6tables"] if nat.lan6 else ["iptables"]
    for tool in tools:
        run(chain_setup(tool) if first_time else chain_flush(tool))
    run(nat_rules(nat))
    if not first_time:
        subprocess.run(["conntrack", "-F"], check=True, capture_output=True)
    with open(READY_FILE, "w") as f:
        json.dump({"mode": nat.mode, "filtering": nat.filtering, "hairpin": nat.hairpin}, f)


def main(argv: list[str] | None = None) -> None:
    """Install the NAT rules and stay up, or (--apply) switch a running router's behaviour and exit."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="socklab router", description=main.__doc__)
    parser.add_argument("--mode", default=env.get("NAT_MODE", "cone"), choices=sorted(MAPPINGS))
    parser.add_argument("--filter", default=env.get("NAT_FILTER", FILTERS[0]), choices=FILTERS)
    parser.add_argument("--hairpin", default=env.get("NAT_HAIRPIN", "off"), choices=("on", "off"))
    parser.add_argument("--lan", default=env.get("SOCKLAB_LAN_SUBNET", "192.168.50.0/24"))
    parser.add_argument("--lan6", default=env.get("SOCKLAB_LAN6_SUBNET", "fd00:50::/64"))
    parser.add_argument("--dmz", default=env.get("SOCKLAB_DMZ"), help="LAN host for inbound and hairpin UDP")
    parser.add_argument("--apply", action="store_true", help="switch a running router, then exit")
    args = parser.parse_args(argv)
    nat = NatBehaviour(
        args.mode, args.filter, args.hairpin == "on", args.lan, args.lan6 or None, find_wan_address(args.lan), args.dmz
    )
    apply(nat, first_time=not args.apply)
    log.info("router: %s mapping, %s filtering, hairpin %s", nat.mode, nat.filtering, args.hairpin)
    if not args.apply:
        threading.Event().wait()
