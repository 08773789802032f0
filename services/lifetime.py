"""natcheck --lifetime: how long an idle UDP mapping lives on the NAT (RFC 4787 REQ-5, RFC 5780 section 4.6).

A probe is a fresh mapping: a new socket X sends one Binding request to the server and learns its
mapped address from the answer, then stays silent. After `idle` seconds another new socket Y sends a
Binding request carrying RESPONSE-PORT = X's mapped port (RFC 5780 section 7.5); the server answers
to Y's mapped host at that port, from the very address X's request went to, so the NAT lets the
answer in to X exactly while X's mapping lives. Y's request makes a mapping of its own and touches
none of X's, and X never sends again, so no probe refreshes another.

The search is bounded: probes run side by side, each on its own clock. A first round waits doubling
idle times (resolution, twice that, ... up to the bound) and brackets the lifetime between the
longest idle that survived and the shortest that did not; a second round splits that bracket at
every `resolution`. A round ends at its first expired probe, since longer idles expire too, so the
whole search takes about three lifetimes. The answer is the shortest idle that expired, in seconds.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared import stun
from shared.names import format_name
from shared.record import Role
from shared.report_model import Address, LifetimeProbe, MappingLifetime

if TYPE_CHECKING:
    from services.natcheck import StunProbe

log = logging.getLogger(__name__)

OpenProbe = Callable[[], "StunProbe"]


@dataclass
class Mapping:
    """A probe's socket X, the mapping its one request made, and when the answer said so."""

    probe: StunProbe
    mapped: Address
    since: float
    idle: float


def open_mapping(open_probe: OpenProbe, server: Address, idle: float) -> Mapping:
    """A fresh socket's one Binding transaction: the mapping it made and when."""
    probe = open_probe()
    answer = probe.transact("lifetime mapping", server)
    if answer.mapped is None:
        probe.close()
        raise TimeoutError(f"no STUN Binding answer from {format_name(server)} for a lifetime probe")
    return Mapping(probe, answer.mapped, time.monotonic(), idle)


def still_mapped(mapping: Mapping, open_probe: OpenProbe, server: Address) -> LifetimeProbe:
    """Ask, from a new socket, for an answer to reach the mapping; it arrives only while the mapping lives."""
    asker = open_probe()
    try:
        request = stun.binding_request()
        request.attributes[stun.Attr.RESPONSE_PORT] = mapping.mapped[1]
        packet, flow = stun.pack_message(request, fingerprint=True), stun.flow_id(request.transaction_id)
        idle = time.monotonic() - mapping.since
        alive = False
        for _ in range(asker.attempts):
            asker.sock.sendto(packet, server)
            asker.reporter.observe(asker.sock, "sendto", flow, Role.CLIENT, local=asker.local, remote=server)
            if alive := answered(mapping.probe, asker, request, flow):
                break
    finally:
        asker.close()
    log.info("mapping %s idle %.2f s: %s", format_name(mapping.mapped), idle, "alive" if alive else "expired")
    return LifetimeProbe(round(idle, 3), mapping.probe.local, mapping.mapped, alive)


def answered(target: StunProbe, asker: StunProbe, request: stun.Message, flow: str) -> bool:
    """Wait one timeout for the answer at the mapping's socket; at the asker's, the server ignored RESPONSE-PORT."""
    deadline = time.monotonic() + asker.timeout
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([target.sock, asker.sock], [], [], left)
        for sock in readable:
            data, source = sock.recvfrom(2048)
            try:
                message = stun.unpack_message(data)
            except ValueError as exc:
                log.info("ignored a packet from %s: %s", format_name(source), exc)
                continue
            if message.transaction_id != request.transaction_id:
                continue
            if sock is asker.sock:
                raise OSError(f"{format_name(source)} ignores RESPONSE-PORT: no lifetime can be measured through it")
            target.reporter.observe(sock, "recvfrom", flow, Role.CLIENT, local=target.local, remote=source)
            return True
    return False


def run_round(open_probe: OpenProbe, server: Address, idles: list[float]) -> list[LifetimeProbe]:
    """Make a mapping per idle time at once, then test each when its time comes, until one has expired."""
    mappings = [open_mapping(open_probe, server, idle) for idle in sorted(idles)]
    results: list[LifetimeProbe] = []
    try:
        for mapping in mappings:
            time.sleep(max(0.0, mapping.since + mapping.idle - time.monotonic()))
            results.append(still_mapped(mapping, open_probe, server))
            if not results[-1].alive:
                break
    finally:
        for mapping in mappings:
            mapping.probe.close()
    return results


def doubling(resolution: float, bound: float) -> list[float]:
    """The first round's idle times: resolution, twice that, ... and the bound itself."""
    idles, idle = [], resolution
    while idle < bound:
        idles.append(idle)
        idle *= 2
    return [*idles, bound]


def splitting(survived: float, expired: float, resolution: float) -> list[float]:
    """The second round's idle times: every `resolution` inside the bracket (none within half a step of its ends)."""
    count = round((expired - survived) / resolution) - 1
    return [round(survived + resolution * step, 3) for step in range(1, count + 1)]


def bracket(probes: list[LifetimeProbe]) -> tuple[float, float | None]:
    """The longest idle a mapping survived and the shortest it did not (None: none expired)."""
    survived = max((p.idle for p in probes if p.alive), default=0.0)
    expired = min((p.idle for p in probes if not p.alive), default=None)
    return survived, expired


def measure_lifetime(open_probe: OpenProbe, server: Address, bound: float, resolution: float) -> MappingLifetime:
    """Search for the idle time after which a mapping is gone, within `bound` seconds, to `resolution`."""
    if not 0 < resolution <= bound:
        raise ValueError(f"need 0 < resolution ({resolution:g} s) <= bound ({bound:g} s)")
    probes = run_round(open_probe, server, doubling(resolution, bound))
    survived, expired = bracket(probes)
    if expired is not None and (inside := splitting(survived, expired, resolution)):
        probes += run_round(open_probe, server, inside)
        survived, expired = bracket(probes)
    return MappingLifetime(survived, expired, tuple(sorted(probes, key=lambda p: p.idle)))
