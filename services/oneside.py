"""One-sided flows: what echo keeps about clients that are not socklab's (nc, socat, curl, a browser).

Such a client sends no flow id, so echo makes one and reports the server's view alone, with its
evidence (shared.report_model.check_evidence: a flat map), and the collector shows the flow as
`server-only`. A stream is one flow; UDP has no connection, so a flow is a (peer, local) pair, kept
in a bounded table: pairs beyond the cap are still answered but not reported, and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from services.whoami import Seen
from shared.names import Name, format_name
from shared.record import new_flow_id
from shared.report_model import ANY_CLIENT

log = logging.getLogger(__name__)

RAW_ECHO, WHOAMI, WHOAMI_HTTP = "raw-echo", "whoami", "whoami-http"  # the scenario each flow is shown under
MAX_UDP_PAIRS = 1024
UDP_PAIR_IDLE = 120.0


def first_evidence(seen: Seen) -> dict[str, Any]:
    """What the server saw when the flow began: the client is any program, and both names."""
    return {"client": ANY_CLIENT, "proto": seen.proto, "peer": format_name(seen.peer), "local": format_name(seen.local)}


@dataclass
class UdpPair:
    """One peer talking to one local address: a one-sided UDP flow and its counts."""

    seen: Seen
    scenario: str
    last_seen: float
    datagrams: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reported: int = 0  # datagrams counted in the last report

    def counts(self) -> dict[str, Any]:
        """The evidence that grows with every datagram."""
        return {"datagrams": self.datagrams, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


class UdpPairs:
    """A bounded table of UDP flows, keyed by (local, peer, flow id): a one-sided flow has none until echo makes
    one; socklab's own datagrams name theirs, so each peer name a flow shows is kept and counted."""

    def __init__(
        self, limit: int = MAX_UDP_PAIRS, idle: float = UDP_PAIR_IDLE, when_full: str = "not reported"
    ) -> None:
        self.limit = limit
        self.when_full = when_full
        self.idle = idle
        self.pairs: dict[tuple[Name, Name, str | None], UdpPair] = {}
        self.unreported = 0

    def find(
        self, scenario: str, peer: Name, local: Name, now: float, flow: str | None = None
    ) -> tuple[UdpPair | None, bool]:
        """The pair for a datagram and whether it is new; None when the table is full (counted)."""
        key = (local, peer, flow)
        pair = self.pairs.get(key)
        if pair is not None:
            pair.last_seen = now
            return pair, False
        if len(self.pairs) >= self.limit:
            self.unreported += 1
            if self.unreported in (1, 10, 100) or self.unreported % 1000 == 0:
                log.warning("UDP pair table full (%d): %d datagrams %s", self.limit, self.unreported, self.when_full)
            return None, False
        pair = UdpPair(Seen(flow or new_flow_id(), "udp", peer, local), scenario, now)
        self.pairs[key] = pair
        return pair, True

    def forget(self, peer: Name, local: Name, flow: str | None = None) -> None:
        """Drop a pair whose first answer failed, so the next datagram starts it afresh."""
        self.pairs.pop((local, peer, flow), None)

    def changed(self) -> list[UdpPair]:
        """Pairs whose counts moved since they were last reported."""
        return [pair for pair in self.pairs.values() if pair.datagrams != pair.reported]

    def expire(self, now: float) -> None:
        """Forget pairs idle for longer than `idle` (report their counts first: call changed())."""
        for key in [key for key, pair in self.pairs.items() if now - pair.last_seen > self.idle]:
            del self.pairs[key]
