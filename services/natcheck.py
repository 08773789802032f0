"""socklab natcheck: classify the NAT in front of this host with RFC 5780's tests against the registry.

Mapping (RFC 5780 section 4.3): Binding requests from one socket to the primary address, to the
alternate address on the primary port, and to the alternate address and port; the mapped
addresses they come back with tell endpoint-independent, address-dependent or
address-and-port-dependent mapping ("none" when the mapped name is the socket's own).
Filtering (section 4.4), from a fresh socket so no earlier mapping lets answers in: a request
asking for the answer from the other address and port, then from the other port only.
Hairpinning (section 4.5): a request sent to our own mapped address must come back to us.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import zmq

from services.stun_server import stun_flow_id
from shared import stun
from shared.config import load_config
from shared.names import format_name, parse_hostport, route_source
from shared.record import Role
from shared.reporter import Reporter

log = logging.getLogger(__name__)

BEHAVIOURS = ("endpoint-independent", "address-dependent", "address-and-port-dependent")


@dataclass
class StunTest:
    """One transaction of the procedure, as the client saw it."""

    name: str
    local: tuple[str, int]
    destination: tuple[str, int]
    mapped: tuple[str, int] | None = None
    response_origin: tuple[str, int] | None = None
    other_address: tuple[str, int] | None = None


class StunProbe:
    """One UDP socket bound to the route's source address, doing Binding transactions with retransmits."""

    def __init__(self, reporter: Reporter, server: tuple[str, int], timeout: float, attempts: int) -> None:
        self.reporter, self.timeout, self.attempts = reporter, timeout, attempts
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((route_source(*server), 0))
        self.local: tuple[str, int] = self.sock.getsockname()
        reporter.observe(self.sock, "bind", None, Role.CLIENT, local=self.local)

    def transact(self, name: str, destination: tuple[str, int], change: int = 0) -> StunTest:
        """Send a Binding request (asking for CHANGE-REQUEST `change`) and wait for its answer."""
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        if change:
            request.attributes[stun.Attr.CHANGE_REQUEST] = change
        test = StunTest(name, self.local, destination)
        reply = self.exchange(stun.pack_message(request, fingerprint=True), request.transaction_id, destination)
        if reply is not None:
            message, _source = reply
            test.mapped = message.attributes.get(stun.Attr.XOR_MAPPED_ADDRESS)
            test.response_origin = message.attributes.get(stun.Attr.RESPONSE_ORIGIN)
            test.other_address = message.attributes.get(stun.Attr.OTHER_ADDRESS)
        return test

    def exchange(
        self, packet: bytes, tid: bytes, destination: tuple[str, int], want: stun.Class = stun.Class.RESPONSE
    ) -> tuple[stun.Message, tuple[str, int]] | None:
        """sendto, then recvfrom until a message of class `want` with our transaction id arrives."""
        flow = stun_flow_id(tid)
        for _ in range(self.attempts):
            self.sock.sendto(packet, destination)
            self.reporter.observe(self.sock, "sendto", flow, Role.CLIENT, local=self.local, remote=destination)
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    data, source = self.sock.recvfrom(2048)
                except TimeoutError:
                    break
                try:
                    message = stun.unpack_message(data)
                except ValueError as exc:
                    log.info("ignored a packet from %s: %s", source, exc)
                    continue
                if message.transaction_id == tid and message.cls == want:
                    self.reporter.observe(self.sock, "recvfrom", flow, Role.CLIENT, local=self.local, remote=source)
                    return message, source
        return None

    def hairpin(self, mapped: tuple[str, int]) -> bool:
        """Send a request to our own mapped address; receiving that very request back means hairpinning."""
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        packet = stun.pack_message(request, fingerprint=True)
        return self.exchange(packet, request.transaction_id, mapped, want=stun.Class.REQUEST) is not None

    def close(self) -> None:
        """Close the probe's socket."""
        self.sock.close()


def classify(first: tuple[str, int] | None, second: tuple[str, int] | None, third: tuple[str, int] | None) -> str:
    """RFC 5780 section 4.3's reading of the three mapped addresses."""
    if first is not None and first == second:
        return BEHAVIOURS[0]
    if second is not None and second == third:
        return BEHAVIOURS[1]
    return BEHAVIOURS[2]


def run_natcheck(reporter: Reporter, server: tuple[str, int], timeout: float, attempts: int) -> dict[str, Any]:
    """The whole procedure; the summary is also reported to the collector."""
    mapping_probe = StunProbe(reporter, server, timeout, attempts)
    filtering_probe = StunProbe(reporter, server, timeout, attempts)
    try:
        first = mapping_probe.transact("mapping-1 primary", server)
        if first.mapped is None:
            raise TimeoutError(f"no STUN answer from {format_name(server)}")
        tests = [first]
        local, mapped = mapping_probe.local, first.mapped
        if mapped == local:
            mapping = "none"
        elif first.other_address is None:
            mapping = "unknown: the server has no alternate address"
        else:
            other_host, other_port = first.other_address
            second = mapping_probe.transact("mapping-2 alternate address", (other_host, server[1]))
            tests.append(second)
            third = None
            if second.mapped != first.mapped:
                third = mapping_probe.transact("mapping-3 alternate address and port", (other_host, other_port))
                tests.append(third)
            mapping = classify(first.mapped, second.mapped, third.mapped if third else None)
        tests.append(filtering_probe.transact("filtering-1 primary", server))
        both = filtering_probe.transact(
            "filtering-2 change address and port", server, stun.CHANGE_IP | stun.CHANGE_PORT
        )
        tests.append(both)
        if both.mapped is not None:
            filtering = BEHAVIOURS[0]
        else:
            port_only = filtering_probe.transact("filtering-3 change port", server, stun.CHANGE_PORT)
            tests.append(port_only)
            filtering = BEHAVIOURS[1] if port_only.mapped is not None else BEHAVIOURS[2]
        summary = {
            "mapping": mapping,
            "filtering": filtering,
            "port_preserved": mapped[1] == local[1],
            "hairpin": mapping_probe.hairpin(mapped),
            "mapped_address": list(mapped),
            "local_address": list(local),
            "server": list(server),
            "tests": [asdict(t) for t in tests],
        }
        reporter.observe(mapping_probe.sock, "getsockname", None, Role.CLIENT, local=local, extra={"natcheck": summary})
        return json.loads(json.dumps(summary))
    finally:
        mapping_probe.close()
        filtering_probe.close()


def format_summary(result: dict[str, Any]) -> str:
    """A netcheck-like summary for people."""
    lines = [
        f"NAT check against {format_name(tuple(result['server']))}",
        f"  local address:  {format_name(tuple(result['local_address']))}",
        f"  mapped address: {format_name(tuple(result['mapped_address']))}",
        f"  mapping:        {result['mapping']}",
        f"  filtering:      {result['filtering']}",
        f"  port preserved: {'yes' if result['port_preserved'] else 'no'}",
        f"  hairpinning:    {'yes' if result['hairpin'] else 'no'}",
    ]
    for test in result["tests"]:
        seen = format_name(tuple(test["mapped"])) if test["mapped"] else "no answer"
        lines.append(f"    {test['name']:38} to {format_name(tuple(test['destination'])):22} -> {seen}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the RFC 5780 tests against the registry's STUN port and print what the NAT does."""
    cfg = load_config("natcheck")
    parser = argparse.ArgumentParser(prog="socklab natcheck", description=main.__doc__)
    default_server = f"{parse_hostport(cfg.registry.split(',')[0])[0]}:{cfg.stun_port}"
    parser.add_argument("--server", default=default_server, help="STUN server host[:port]")
    parser.add_argument("--json", action="store_true", help="one JSON object for machines")
    parser.add_argument("--timeout", type=float, default=0.4, help="seconds to wait for each attempt")
    parser.add_argument("--attempts", type=int, default=3, help="sends per request before giving up")
    args = parser.parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service)
    try:
        result = run_natcheck(reporter, parse_hostport(args.server, cfg.stun_port), args.timeout, args.attempts)
    except (TimeoutError, OSError) as exc:
        sys.exit(f"natcheck: {exc}")
    finally:
        reporter.close()
        context.term()
    print(json.dumps(result) if args.json else format_summary(result))
