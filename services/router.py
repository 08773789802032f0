"""router: forwards between lan and wan and translates lan's addresses with iptables MASQUERADE.

NAT_MODE selects the translation:
  cone       MASQUERADE: one mapping per internal address and port, the port kept when free
  symmetric  MASQUERADE --random-fully: a fresh random port for every new destination
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import threading

log = logging.getLogger(__name__)

MODES = {"cone": [], "symmetric": ["--random-fully"]}


def nat_rules(mode: str, lan: str, lan6: str | None) -> list[list[str]]:
    """The iptables commands for a mode: masquerade whatever leaves lan for elsewhere."""
    if mode not in MODES:
        raise ValueError(f"NAT_MODE {mode!r} is not one of {', '.join(MODES)}")
    rules = [["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", lan, "!", "-d", lan, "-j", "MASQUERADE", *MODES[mode]]]
    if lan6:
        rules.append(
            ["ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", lan6, "!", "-d", lan6, "-j", "MASQUERADE", *MODES[mode]]
        )
    return rules


def main(argv: list[str] | None = None) -> None:
    """Install the NAT rules, say so in a ready file, and stay up."""
    parser = argparse.ArgumentParser(prog="socklab router", description=main.__doc__)
    parser.add_argument("--mode", default=os.environ.get("NAT_MODE", "cone"), choices=sorted(MODES))
    parser.add_argument("--lan", default=os.environ.get("SOCKLAB_LAN_SUBNET", "192.168.50.0/24"))
    parser.add_argument("--lan6", default=os.environ.get("SOCKLAB_LAN6_SUBNET", "fd00:50::/64"))
    parser.add_argument("--ready-file", default="/run/socklab-router-ready")
    args = parser.parse_args(argv)
    for rule in nat_rules(args.mode, args.lan, args.lan6 or None):
        log.info("%s", " ".join(rule))
        subprocess.run(rule, check=True)
    with open(args.ready_file, "w") as f:
        f.write(args.mode + "\n")
    log.info("router up in %s mode", args.mode)
    threading.Event().wait()
