"""The kernel's own record of every translation: entries of `conntrack -L` or /proc/net/nf_conntrack.

The independent truth the integration tests (and the pytest plugin's users) hold the NAT's work against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ConntrackEntry:
    """One line of `conntrack -L`: the original direction and the reply direction."""

    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str
    reply_dst: str
    reply_sport: int
    reply_dport: int
    id: int | None = None


CONNTRACK_TUPLE = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")
CONNTRACK_ID = re.compile(r"\bid=(\d+)")


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    """Read TCP and UDP entries from `conntrack -L` (with its id under `-o id`) or /proc/net/nf_conntrack."""
    entries = []
    for line in text.splitlines():
        tuples = CONNTRACK_TUPLE.findall(line)
        proto = next((word for word in line.split() if word in ("tcp", "udp")), None)
        if len(tuples) != 2 or proto is None:
            continue
        (src, dst, sport, dport), (rsrc, rdst, rsport, rdport) = tuples
        found = CONNTRACK_ID.search(line)
        conntrack_id = int(found.group(1)) if found else None
        entries.append(
            ConntrackEntry(proto, src, dst, int(sport), int(dport), rsrc, rdst, int(rsport), int(rdport), conntrack_id)
        )
    return entries
