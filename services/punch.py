"""socklab punch: hole punching between two NATs, paired by the registry's rendezvous (RFC 5128 section 3).

`socklab punch PEER` asks the registry for a rendezvous with PEER over the punch socket's own port;
`socklab punch --serve` (each LAN client runs one) waits for anyone who asks for it. The registry tells
both at once each other's private and public names (shared.registry_protocol), and both then punch:
- udp: both send to the peer's private name (where it may share the LAN) and public name every 50 ms, and to
  wherever the peer's packets come from (a peer-reflexive name, as ICE learns one); each packet says
  which of the sender's candidates it went to and which of the receiver's candidates reached it, so
  one packet back that names ours proves both directions;
- tcp: both connect from the port they asked the registry from (SO_REUSEADDR and SO_REUSEPORT, the
  rendezvous stream still open), to the private and the public name, retrying until one connection
  opens: a simultaneous open through both NATs when the SYNs cross.
Both ends report the outcome under the rendezvous id as one flow, so the collector joins them, judges
it and names both routers' rewrites from their conntrack events (services.paths).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from shared import stun
from shared.collector_protocol import QueryOp, query_collector
from shared.config import Config, load_config
from shared.framing import pack_frame, recv_frame, unpack_map
from shared.names import format_name, name_to_wire, route_source
from shared.readiness import READY_DIR, wait_ready
from shared.registry_protocol import PUNCH_PROTOS, Rendezvous, connect
from shared.report_model import Flow
from shared.reporter import Reporter

log = logging.getLogger(__name__)

Address = tuple[str, int]
PUNCH_TIMEOUT = 1.5  # seconds a punch tries before it says it failed
SEND_INTERVAL = 0.05  # seconds between rounds of udp packets or tcp connect attempts
FINAL_PACKETS = 3  # packets a finished udp end still sends, so the peer learns ours arrived
STUN_ATTEMPTS, STUN_TIMEOUT = 3, 0.5
PEER_WAIT = 3.0  # seconds the registry holds a request for a peer that has not asked yet
SERVE_WAIT = 20.0  # a serving end asks again this often, so its udp mapping (30 s idle) stays fresh
CONNECT_TIMEOUT = 5.0  # seconds to open the rendezvous stream
FLOW_WAIT = 3.0  # seconds the requester waits for the collector to join both ends and both routers


@dataclass
class PunchOutcome:
    """What one end of a punch saw: whether it connected, through which candidate, the names, the time."""

    rendezvous: Rendezvous
    local: Address
    connected: bool = False
    candidate: str | None = None
    reached: Address | None = None
    seen_from: Address | None = None
    seen_as: Address | None = None
    elapsed: float = 0.0
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The outcome as `--json` prints it and the closing record's extra carries it."""
        rv = self.rendezvous
        return {
            "rendezvous": rv.id,
            "proto": rv.proto,
            "role": str(rv.role),
            "outcome": "connected" if self.connected else "failed",
            "candidate": self.candidate,
            "elapsed_ms": round(self.elapsed * 1000, 1),
            "reason": self.reason,
            "me": {
                "name": rv.me.name,
                "local": name_to_wire(self.local),
                "public": name_to_wire(rv.me.public),
                "seen_by_peer_as": name_to_wire(self.seen_as),
            },
            "peer": {
                "name": rv.peer.name,
                "private": name_to_wire(rv.peer.private),
                "public": name_to_wire(rv.peer.public),
                "reached_at": name_to_wire(self.reached),
                "seen_from": name_to_wire(self.seen_from),
            },
        }


def candidates_of(rv: Rendezvous) -> dict[str, Address]:
    """Where to try the peer: its private name first where it may share our LAN, then its public name.

    It may share our LAN where the registry saw both of us from one address: behind the same NAT (Ford,
    Srisuresh and Kegel, section 3.3). Elsewhere its private name is another network's, and what a packet
    to it meets on the way (here: the Docker host, routing between its bridges) is no part of the punch.
    """
    found = {}
    if rv.peer.public[0] == rv.me.public[0] or rv.peer.public == rv.peer.private:
        found["private"] = rv.peer.private
    if rv.peer.public != rv.peer.private:
        found["public"] = rv.peer.public
    return found


def stun_binding(sock: socket.socket, server: Address) -> bytes:
    """One Binding transaction from the punch socket, so the registry sees its public name; its transaction id."""
    request = stun.binding_request()
    packet = stun.pack_message(request, fingerprint=True)
    for _ in range(STUN_ATTEMPTS):
        sock.sendto(packet, server)
        sock.settimeout(STUN_TIMEOUT)
        try:
            while True:
                data, _source = sock.recvfrom(2048)
                try:
                    answer = stun.unpack_message(data)
                except ValueError as exc:
                    log.info("ignored a packet that is not STUN: %s", exc)
                    continue
                if answer.transaction_id == request.transaction_id:
                    return request.transaction_id
        except TimeoutError:
            continue
    raise TimeoutError(f"no STUN answer from {server[0]}:{server[1]} after {STUN_ATTEMPTS} tries")


def punch_udp(sock: socket.socket, rv: Rendezvous, timeout: float) -> PunchOutcome:
    """Send to every candidate until a packet back says one of ours arrived, or the time is up."""
    outcome = PunchOutcome(rv, sock.getsockname())
    candidates = candidates_of(rv)
    heard: str | None = None
    start = time.monotonic()
    deadline, next_round = start + timeout, start
    while (now := time.monotonic()) < deadline:
        if now >= next_round:
            for label, address in candidates.items():
                sock.sendto(punch_packet(rv, label, heard, outcome.seen_from), address)
            next_round = now + SEND_INTERVAL
        readable, _, _ = select.select([sock], [], [], max(0.0, min(next_round, deadline) - now))
        if not readable:
            continue
        data, source = sock.recvfrom(2048)
        message = read_punch_packet(data, rv)
        if message is None:
            continue
        heard, outcome.seen_from = message["to"], (source[0], source[1])
        if outcome.seen_from not in candidates.values():
            candidates["reflexive"] = outcome.seen_from
        if message.get("heard") in candidates:
            outcome.connected, outcome.candidate = True, message["heard"]
            outcome.reached = candidates[message["heard"]]
            outcome.seen_as = (message["seen"][0], message["seen"][1])
            label = next(k for k, v in candidates.items() if v == outcome.seen_from)
            for _ in range(FINAL_PACKETS):
                sock.sendto(punch_packet(rv, label, heard, outcome.seen_from), outcome.seen_from)
            break
    outcome.elapsed = time.monotonic() - start
    if not outcome.connected:
        outcome.reason = (
            f"the peer's packets arrived (from {format_name(outcome.seen_from)}) but none of ours reached it"
            if outcome.seen_from
            else f"no packet from the peer within {timeout:g} s"
        )
    return outcome


def punch_packet(rv: Rendezvous, to: str, heard: str | None, seen: Address | None) -> bytes:
    """One punch datagram: the rendezvous, our candidate label it goes to, and what we heard of the peer."""
    return msgpack.packb(
        {"rv": rv.id, "from": rv.me.name, "to": to, "heard": heard, "seen": list(seen) if seen else None},
        use_bin_type=True,
    )


def read_punch_packet(data: bytes, rv: Rendezvous) -> dict[str, Any] | None:
    """A punch datagram of this rendezvous from the peer; anything else is logged and ignored."""
    try:
        message = unpack_map(data, "punch packet")
        if message.get("rv") != rv.id or message.get("from") != rv.peer.name or not isinstance(message.get("to"), str):
            raise ValueError("not this rendezvous's punch packet")
        if message.get("heard") is not None and not isinstance(message.get("seen"), list):
            raise ValueError("a punch packet that heard us must say whom it saw")
    except ValueError as exc:
        log.info("ignored a datagram: %s", exc)
        return None
    return message


def reusable_tcp_socket(local: Address) -> socket.socket:
    """A TCP socket on the punch port, which the rendezvous stream and every attempt share."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(local)
    return sock


def punch_tcp(local: Address, rv: Rendezvous, timeout: float) -> tuple[PunchOutcome, socket.socket | None]:
    """Connect from the registered port to every candidate, retrying, and accept on it, until a connection opens.

    Where the peer's port answers a SYN with a reset (no NAT between, or a NAT that forwards it), the two
    ends' attempts never overlap; the listener on the same port (Ford, Srisuresh and Kegel, section 4.2)
    takes the peer's SYN instead.
    """
    outcome = PunchOutcome(rv, local)
    candidates = candidates_of(rv)
    attempts: dict[socket.socket, str] = {}
    retry_at = {label: 0.0 for label in candidates}
    start = time.monotonic()
    deadline, winner = start + timeout, None
    listener = reusable_tcp_socket(local)
    listener.listen(4)
    listener.setblocking(False)
    try:
        while winner is None and (now := time.monotonic()) < deadline:
            for label, address in candidates.items():
                if retry_at[label] <= now and label not in attempts.values():
                    sock = reusable_tcp_socket(local)
                    sock.setblocking(False)
                    sock.connect_ex(address)
                    attempts[sock] = label
            readable, writable, _ = select.select([listener], list(attempts), [], min(SEND_INTERVAL, deadline - now))
            if readable:
                winner, source = listener.accept()
                outcome.candidate = next((k for k, v in candidates.items() if v == source[:2]), "reflexive")
                break
            for sock in writable:
                label = attempts.pop(sock)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error == 0 and winner is None:
                    winner, outcome.candidate = sock, label
                    continue
                log.info("connect to %s (%s): %s", candidates[label], label, errno.errorcode.get(error, error))
                sock.close()
                retry_at[label] = time.monotonic() + SEND_INTERVAL
    finally:
        listener.close()
        for sock in attempts:
            sock.close()
    if winner is None:
        outcome.elapsed = time.monotonic() - start
        outcome.reason = f"no connection opened within {timeout:g} s"
        return outcome, None
    greet(winner, rv, outcome, max(0.2, deadline - time.monotonic()))
    outcome.elapsed = time.monotonic() - start
    return outcome, winner


def greet(sock: socket.socket, rv: Rendezvous, outcome: PunchOutcome, timeout: float) -> None:
    """Say who we are and whom we see over the new connection, and read the same from the peer."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    peer = sock.getpeername()
    outcome.reached = outcome.seen_from = (peer[0], peer[1])
    try:
        sock.sendall(pack_frame({"rv": rv.id, "from": rv.me.name, "seen": list(peer)}))
        hello = recv_frame(sock)
        if hello.get("rv") != rv.id or hello.get("from") != rv.peer.name or not isinstance(hello.get("seen"), list):
            raise ValueError("the connection's first frame is not the peer's hello")
    except (OSError, ValueError) as exc:
        outcome.reason = f"connected to {peer[0]}:{peer[1]}, but no hello from the peer: {exc}"
        return
    outcome.connected, outcome.seen_as = True, (hello["seen"][0], hello["seen"][1])


def report_udp(reporter: Reporter, sock: socket.socket, outcome: PunchOutcome) -> None:
    """Both ends report the punch under the rendezvous id: where we sent, whom we heard, our own name."""
    rv = outcome.rendezvous
    sent_to = outcome.reached or rv.peer.public
    reporter.observe(sock, "sendto", rv.id, rv.role, remote=sent_to)
    if outcome.seen_from:
        reporter.observe(sock, "recvfrom", rv.id, rv.role, remote=outcome.seen_from)
    close_end(reporter, sock, outcome)


def report_tcp(reporter: Reporter, sock: socket.socket, outcome: PunchOutcome) -> None:
    """Both ends report the connection (or the attempt) under the rendezvous id."""
    rv = outcome.rendezvous
    reporter.observe(sock, "connect", rv.id, rv.role, remote=outcome.reached or rv.peer.public)
    if outcome.seen_from:
        reporter.observe(sock, "getpeername", rv.id, rv.role, remote=outcome.seen_from)
    close_end(reporter, sock, outcome)


def close_end(reporter: Reporter, sock: socket.socket, outcome: PunchOutcome) -> None:
    """The closing getsockname, with the scenario and the whole outcome."""
    rv = outcome.rendezvous
    extra = {"scenario": f"punch-{rv.proto}", "punch": outcome.to_wire()}
    reporter.observe(sock, "getsockname", rv.id, rv.role, local=outcome.local, extra=extra)


class ParkedStreams:
    """A serving end's rendezvous streams while they wait, shut when a router it sits behind switches behaviour.

    `socklab router --apply` flushes conntrack, so a waiting request's public name may be stale: the
    router's ready file changes, and the serving end asks again from a fresh socket.
    """

    def __init__(self, routers: list[str]) -> None:
        self.paths = [READY_DIR / router for router in routers]
        self.streams: set[socket.socket] = set()
        self.lock = threading.Lock()

    def stamps(self) -> list[int]:
        """When each router last wrote its setup (0: not yet)."""
        return [path.stat().st_mtime_ns if path.exists() else 0 for path in self.paths]

    def watch(self, stop: threading.Event) -> None:
        """Shut every waiting stream whenever a router's setup changes."""
        last = self.stamps()
        while not stop.wait(0.1):
            if (now := self.stamps()) != last:
                last = now
                with self.lock:
                    for stream in self.streams:
                        stream.shutdown(socket.SHUT_RDWR)

    def add(self, stream: socket.socket) -> None:
        """A stream starts waiting."""
        with self.lock:
            self.streams.add(stream)

    def discard(self, stream: socket.socket) -> None:
        """A stream's wait is over."""
        with self.lock:
            self.streams.discard(stream)


def meet(
    stream: socket.socket,
    parked: ParkedStreams | None,
    cfg: Config,
    reporter: Reporter,
    peer: str,
    private: Address,
    **how: Any,
) -> Rendezvous:
    """The rendezvous on an open stream, which `parked` may shut while it waits."""
    if parked:
        parked.add(stream)
    try:
        return connect(stream, cfg.registries[0], cfg.service, peer, private, reporter, **how)
    finally:
        if parked:
            parked.discard(stream)


def punch_once(
    cfg: Config,
    reporter: Reporter,
    peer: str,
    proto: str,
    wait: float,
    timeout: float,
    parked: ParkedStreams | None = None,
) -> PunchOutcome:
    """Meet `peer` (empty: whoever asks for us) at the registry, punch, report; the outcome."""
    registry = cfg.registries[0]
    local_host = route_source(*registry)
    if proto == "udp":
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            socket.create_connection(registry, CONNECT_TIMEOUT) as stream,
        ):
            sock.bind((local_host, 0))
            transaction = stun_binding(sock, (registry[0], cfg.stun_port))
            rv = meet(stream, parked, cfg, reporter, peer, sock.getsockname(), stun=transaction, wait=wait)
            outcome = punch_udp(sock, rv, timeout)
            report_udp(reporter, sock, outcome)
            return outcome
    with reusable_tcp_socket((local_host, 0)) as stream:
        local = stream.getsockname()
        stream.settimeout(CONNECT_TIMEOUT)
        stream.connect(registry)
        rv = meet(stream, parked, cfg, reporter, peer, local, wait=wait)
        outcome, connection = punch_tcp(local, rv, timeout)
        with connection or reusable_tcp_socket((local_host, 0)) as sock:
            report_tcp(reporter, sock, outcome)
        return outcome


def joined_flow(context: zmq.Context, endpoint: str, flow: str, timeout: float) -> Flow | None:
    """The collector's flow for the punch once both ends and both routers are in it (or what it has by then)."""
    deadline, found = time.monotonic() + timeout, None
    while True:
        try:
            found = Flow.from_wire(query_collector(context, endpoint, {"op": str(QueryOp.FLOW), "flow": flow})["flow"])
        except (RuntimeError, TimeoutError, ValueError) as exc:
            log.info("flow %s not joined yet: %s", flow, exc)
        if found and found.client and found.server and len({hop.by for hop in found.path}) >= 2:
            return found
        if time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def serve(cfg: Config, context: zmq.Context, proto: str, stop: threading.Event, parked: ParkedStreams) -> None:
    """Answer every peer that asks for this client, one punch at a time, asking the registry again and again."""
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)  # a ZeroMQ socket is one thread's
    while not stop.is_set():
        try:
            outcome = punch_once(cfg, reporter, "", proto, SERVE_WAIT, PUNCH_TIMEOUT, parked)
            log.info("punch %s with %s: %s", proto, outcome.rendezvous.peer.name, json.dumps(outcome.to_wire()))
        except LookupError as exc:
            log.debug("%s: %s", proto, exc)
        except (OSError, EOFError, ValueError) as exc:
            log.info("punch %s: %s; asking again", proto, exc)
            stop.wait(0.5)


def format_outcome(outcome: PunchOutcome) -> str:
    """One line a person reads."""
    wire = outcome.to_wire()
    me, peer = wire["me"], wire["peer"]
    if outcome.connected:
        return (
            f"{wire['proto']} punch to {peer['name']} connected in {wire['elapsed_ms']} ms via its {outcome.candidate} "
            f"name {peer['reached_at']}; it saw us as {me['seen_by_peer_as']}, we saw it as {peer['seen_from']}"
        )
    return f"{wire['proto']} punch to {peer['name']} failed after {wire['elapsed_ms']} ms: {outcome.reason}"


def main(argv: list[str] | None = None) -> None:
    """Punch a hole to PEER through both NATs (exit 0 if connected, 1 if not), or --serve every peer that asks."""
    cfg = load_config("punch")
    parser = argparse.ArgumentParser(prog="socklab punch", description=main.__doc__)
    parser.add_argument("peer", nargs="?", help="the registered name of the peer (e.g. client-lan2)")
    parser.add_argument("--proto", choices=PUNCH_PROTOS, default="udp")
    parser.add_argument("--json", action="store_true", help="print the outcome and the joined flow as JSON")
    parser.add_argument("--wait", type=float, default=PEER_WAIT, help="seconds to wait for the peer to ask (3)")
    parser.add_argument("--timeout", type=float, default=PUNCH_TIMEOUT, help="seconds to punch (1.5)")
    parser.add_argument("--serve", action="store_true", help="answer every peer that asks, udp and tcp, until stopped")
    parser.add_argument("--after", action="append", default=[], metavar="SERVICE", help="wait until it is ready")
    args = parser.parse_args(argv)
    if bool(args.peer) == args.serve:
        parser.error("name a PEER, or --serve")
    # A packet sent before our router's rules are in gets a conntrack entry without NAT, which its retries keep.
    wait_ready(args.after, timeout=60)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)
    try:
        if args.serve:
            stop, parked = threading.Event(), ParkedStreams(args.after)
            for proto in PUNCH_PROTOS:
                threading.Thread(target=serve, args=(cfg, context, proto, stop, parked), daemon=True).start()
            parked.watch(stop)
        try:
            outcome = punch_once(cfg, reporter, args.peer, args.proto, args.wait, args.timeout)
        except (LookupError, OSError, EOFError, ValueError) as exc:
            sys.exit(f"socklab punch: {exc}")
        if args.json:
            wait = FLOW_WAIT if outcome.connected else 0.0  # a failed punch has no path to wait for
            flow = joined_flow(context, cfg.query, outcome.rendezvous.id, wait)
            print(json.dumps({**outcome.to_wire(), "flow": flow.to_wire() if flow else None}))
        else:
            print(format_outcome(outcome))
        if not outcome.connected:
            sys.exit(1)
    finally:
        reporter.close()
        context.term()
