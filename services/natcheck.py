"""socklab natcheck: classify the NAT in front of this host with RFC 5780's tests against the registry.

Every test runs from one UDP socket bound to the route's source address, so every mapping the NAT
makes belongs to one concrete local name. The order keeps the filtering tests honest (RFC 5780
section 4.4 says they are sensitive to prior state): they follow mapping test I directly, before
mapping tests II and III send to the alternate address and open the NAT's filter for the very
answers the filtering tests ask for.

  mapping-1 primary                      the mapped address; equal to our own name: no NAT
  filtering-2 change address and port    an answer: endpoint-independent filtering
  filtering-3 change port                an answer: address-dependent, none: address-and-port-dependent
  mapping-2 alternate address            same mapped address as mapping-1: endpoint-independent mapping
  mapping-3 alternate address and port   same as mapping-2: address-dependent, else address-and-port-dependent
  hairpin (section 4.5)                  a request sent to our own mapped address comes back to us

With --lifetime it also measures how long an idle mapping lives (services/lifetime.py, section 4.6).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import socket
import sys
import time

import zmq

from services.lifetime import measure_lifetime
from shared import stun
from shared.config import load_config
from shared.names import format_name, parse_hostport, route_source
from shared.nat import Behaviour
from shared.record import Role
from shared.report_model import Address, NatCheckResult, StunTransaction
from shared.reporter import Reporter

log = logging.getLogger(__name__)

ANSWERS = (stun.Class.RESPONSE, stun.Class.ERROR)


class StunProbe:
    """One UDP socket bound to the route's source address, doing Binding transactions with retransmits."""

    def __init__(self, reporter: Reporter, server: Address, timeout: float, attempts: int) -> None:
        self.reporter, self.timeout, self.attempts = reporter, timeout, attempts
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((route_source(*server), 0))
        self.local: Address = self.sock.getsockname()
        reporter.observe(self.sock, "bind", None, Role.CLIENT, local=self.local)

    def transact(self, name: str, destination: Address, change: int = 0) -> StunTransaction:
        """Send a Binding request (with CHANGE-REQUEST `change`) and read what its answer says."""
        answer = self.exchange(stun.binding_request(change), destination, ANSWERS)
        if answer is None:
            return StunTransaction(name, self.local, destination)
        message, source = answer
        attrs = message.attributes
        if message.cls == stun.Class.ERROR:
            error = attrs.get(stun.Attr.ERROR_CODE, (0, "no ERROR-CODE"))
            return StunTransaction(name, self.local, destination, source=source, error=error)
        return StunTransaction(
            name,
            self.local,
            destination,
            mapped=attrs.get(stun.Attr.XOR_MAPPED_ADDRESS, attrs.get(stun.Attr.MAPPED_ADDRESS)),
            source=source,
            response_origin=attrs.get(stun.Attr.RESPONSE_ORIGIN),
            other_address=attrs.get(stun.Attr.OTHER_ADDRESS),
        )

    def exchange(
        self, request: stun.Message, destination: Address, want: tuple[stun.Class, ...]
    ) -> tuple[stun.Message, Address] | None:
        """sendto, then recvfrom until a message of a class in `want` with our transaction id arrives."""
        packet = stun.pack_message(request, fingerprint=True)
        flow = stun.flow_id(request.transaction_id)
        for attempt in range(self.attempts):
            self.sock.sendto(packet, destination)
            self.reporter.observe(self.sock, "sendto", flow, Role.CLIENT, remote=destination)
            if attempt == 0:
                local = self.sock.getsockname()
                self.reporter.observe(self.sock, "getsockname", flow, Role.CLIENT, local=local)
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
                    log.info("ignored a packet from %s: %s", format_name(source), exc)
                    continue
                if message.transaction_id == request.transaction_id and message.cls in want:
                    self.observe_arrival(flow, message, source)
                    return message, source
        return None

    def observe_arrival(self, flow: str, message: stun.Message, source: Address) -> None:
        """Report a recvfrom; a request arriving (our own, hairpinned) makes this socket its server end."""
        if message.cls == stun.Class.REQUEST:
            self.reporter.observe(self.sock, "recvfrom", flow, Role.SERVER, local=self.local, remote=source)
        else:
            self.reporter.observe(self.sock, "recvfrom", flow, Role.CLIENT, remote=source)

    def hairpin(self, mapped: Address) -> bool:
        """Send a request to our own mapped address; receiving that very request back means hairpinning."""
        return self.exchange(stun.binding_request(), mapped, (stun.Class.REQUEST,)) is not None

    def close(self) -> None:
        """Close the probe's socket."""
        self.sock.close()


def classify(first: Address | None, second: Address | None, third: Address | None) -> Behaviour:
    """RFC 5780 section 4.3's reading of the three mapped addresses; a missing answer leaves it unknown."""
    if first is None or second is None:
        return Behaviour.UNKNOWN
    if first == second:
        return Behaviour.ENDPOINT_INDEPENDENT
    if third is None:
        return Behaviour.UNKNOWN
    return Behaviour.ADDRESS_DEPENDENT if second == third else Behaviour.ADDRESS_AND_PORT_DEPENDENT


def check_mapping(probe: StunProbe, server: Address, first: StunTransaction, tests: list[StunTransaction]) -> Behaviour:
    """Mapping tests II and III (section 4.3), appended to `tests`, and what they say."""
    if first.mapped == probe.local:
        return Behaviour.NONE
    if first.other_address is None:
        return Behaviour.UNKNOWN
    other_host, other_port = first.other_address
    second = probe.transact("mapping-2 alternate address", (other_host, server[1]))
    tests.append(second)
    if second.mapped is None or second.mapped == first.mapped:
        return classify(first.mapped, second.mapped, None)
    third = probe.transact("mapping-3 alternate address and port", (other_host, other_port))
    tests.append(third)
    return classify(first.mapped, second.mapped, third.mapped)


def check_filtering(
    probe: StunProbe, server: Address, first: StunTransaction, tests: list[StunTransaction]
) -> Behaviour:
    """Filtering tests II and III (section 4.4), appended to `tests`: an answer means the filter let it in."""
    if first.other_address is None:
        return Behaviour.UNKNOWN
    both = probe.transact("filtering-2 change address and port", server, stun.CHANGE_IP | stun.CHANGE_PORT)
    tests.append(both)
    if both.error:
        return Behaviour.UNKNOWN
    if both.mapped is not None:
        return Behaviour.ENDPOINT_INDEPENDENT
    port_only = probe.transact("filtering-3 change port", server, stun.CHANGE_PORT)
    tests.append(port_only)
    if port_only.error:
        return Behaviour.UNKNOWN
    return Behaviour.ADDRESS_DEPENDENT if port_only.mapped is not None else Behaviour.ADDRESS_AND_PORT_DEPENDENT


def run_natcheck(
    reporter: Reporter, server: Address, timeout: float, attempts: int, lifetime: tuple[float, float] | None = None
) -> NatCheckResult:
    """The whole procedure, and with `lifetime` (bound, resolution) the mapping lifetime; reported to the collector."""
    probe = StunProbe(reporter, server, timeout, attempts)
    try:
        first = probe.transact("mapping-1 primary", server)
        if first.mapped is None:
            said = f": error {first.error[0]} {first.error[1]}" if first.error else ""
            raise TimeoutError(f"no STUN Binding answer from {format_name(server)}{said}")
        tests = [first]
        filtering = check_filtering(probe, server, first, tests)
        mapping = check_mapping(probe, server, first, tests)
        result = NatCheckResult(
            mapping=mapping,
            filtering=filtering,
            port_preserved=first.mapped[1] == probe.local[1],
            hairpin=probe.hairpin(first.mapped),
            mapped_address=first.mapped,
            local_address=probe.local,
            server=server,
            other_address=first.other_address,
            tests=tuple(tests),
        )
        if lifetime is not None:
            measured = measure_lifetime(lambda: StunProbe(reporter, server, timeout, attempts), server, *lifetime)
            result = dataclasses.replace(result, lifetime=measured)
        extra = {"natcheck": result.to_wire()}
        reporter.observe(probe.sock, "getsockname", None, Role.CLIENT, local=probe.local, extra=extra)
        return result
    finally:
        probe.close()


def resolve_ipv4(server: Address) -> Address:
    """Resolve once, so every test names one concrete address (RFC 5780's alternates are IPv4)."""
    try:
        address = socket.getaddrinfo(*server, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {server[0]!r} to IPv4: {exc.strerror}") from None
    return str(address[0]), server[1]


def format_summary(result: NatCheckResult) -> str:
    """A netcheck-like summary for people."""
    lines = [
        f"NAT check against {format_name(result.server)}",
        f"  local address:  {format_name(result.local_address)}",
        f"  mapped address: {format_name(result.mapped_address)}",
        f"  mapping:        {result.mapping}",
        f"  filtering:      {result.filtering}",
        f"  port preserved: {'yes' if result.port_preserved else 'no'}",
        f"  hairpinning:    {'yes' if result.hairpin else 'no'}",
    ]
    if result.lifetime is not None:
        expired = result.lifetime.expired
        said = f"{expired:g} s" if expired is not None else "longer than the search's bound"
        lines.append(f"  mapping lifetime: {said} (an idle mapping survived {result.lifetime.survived:g} s)")
    if result.other_address is None:
        lines.append("  (the server has no alternate address: set SOCKLAB_STUN_ADDRESSES on the registry)")
    for test in result.tests:
        if test.mapped:
            seen = f"{format_name(test.mapped)} from {format_name(test.source)}"
        elif test.error:
            seen = f"error {test.error[0]} {test.error[1]}"
        else:
            seen = "no answer"
        lines.append(f"    {test.name:38} to {format_name(test.destination):22} -> {seen}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the RFC 5780 tests against the registry's STUN port and print what the NAT does."""
    cfg = load_config("natcheck")
    parser = argparse.ArgumentParser(prog="socklab natcheck", description=main.__doc__)
    default_server = format_name((cfg.registries[0][0], cfg.stun_port))
    parser.add_argument("--server", metavar="HOST[:PORT]", default=default_server, help="default %(default)s")
    parser.add_argument("--json", action="store_true", help="print one JSON object for machines")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=0.4, help="wait per send (0.4)")
    parser.add_argument("--attempts", metavar="N", type=int, default=3, help="sends per request (3)")
    parser.add_argument("--lifetime", action="store_true", help="also measure how long an idle UDP mapping lives")
    parser.add_argument("--lifetime-max", metavar="SECONDS", type=float, default=64.0, help="search bound (64)")
    parser.add_argument("--resolution", metavar="SECONDS", type=float, default=1.0, help="lifetime's precision (1)")
    args = parser.parse_args(argv)
    if args.lifetime and not 0 < args.resolution <= args.lifetime_max:
        parser.error("--resolution must be above 0 and at most --lifetime-max")
    try:
        server = parse_hostport(args.server, cfg.stun_port)
    except ValueError as exc:
        parser.error(str(exc))
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)
    try:
        lifetime = (args.lifetime_max, args.resolution) if args.lifetime else None
        result = run_natcheck(reporter, resolve_ipv4(server), args.timeout, args.attempts, lifetime)
    except (TimeoutError, OSError) as exc:
        sys.exit(f"natcheck: {exc}")
    finally:
        reporter.close()
        context.term()
    print(json.dumps(result.to_wire()) if args.json else format_summary(result))
