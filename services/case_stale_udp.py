"""Stale UDP conntrack (moby#8795): a UDP client keeps sending to echo's published port while echo restarts.

The client is this host, sending from one socket to echo's published UDP port on wan's gateway. A
packet the host sends to a published port on one of its own non-loopback addresses meets Docker's
DNAT in the nat table's OUTPUT chain, so the host's conntrack holds an entry: our port -> the
gateway's port, replies from echo:7007. When echo stops, Docker deletes the DNAT rule and the
entries that lead to echo; the client's next datagram, with no rule to meet, makes an entry without
translation, to the host itself. Conntrack decides a flow's translation once, on its first packet,
and a UDP entry lives as long as packets keep coming (nf_conntrack_udp_timeout after the last), so
when echo is back that entry still decides for the same socket: its datagrams stay on the host.
Nobody listens there without Docker's userland proxy (blackholed); with it, docker-proxy does, and
echo sees the gateway instead of the client. A new source port is a new entry, translated afresh;
so is the old port once `conntrack -D` (run from a container in the host's network namespace)
deletes its entry.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress

import zmq

from services.case_views import CaseFlow
from shared.conntrack import ConntrackEntry
from shared.docker_host import describe_entry, engine_name, host_conntrack
from shared.echo_protocol import MAX_DATAGRAM, Datagram, pack_datagram, unpack_reflection_datagram
from shared.names import Name, name_to_wire, route_source, unmap_host
from shared.polling import wait_for
from shared.record import Role, new_flow_id
from shared.report_model import Flow
from shared.reporter import Reporter
from shared.stack import IMAGE, PROBE_LABEL, Stack

ECHO_PORT = 7007
ANSWER_WAIT = 0.5
SEND_INTERVAL = 0.05


class UdpSender:
    """One unconnected UDP socket on this host that sends a framed datagram per step and reports its end."""

    def __init__(self, reporter: Reporter, destination: tuple[str, int]) -> None:
        self.reporter, self.destination = reporter, destination
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((route_source(*destination), 0))
        self.sock.settimeout(ANSWER_WAIT)

    @property
    def port(self) -> int:
        """The source port every datagram of this socket leaves from."""
        return int(self.sock.getsockname()[1])

    def send(self, step: str) -> tuple[str, Name | None]:
        """One datagram under a new flow id; the name echo saw us by, or None when no answer came."""
        flow = new_flow_id()
        self.sock.sendto(pack_datagram(Datagram(flow, step.encode())), self.destination)
        self.reporter.observe(self.sock, "sendto", flow, Role.CLIENT, remote=self.destination)
        peer: Name | None = None
        with suppress(TimeoutError, ValueError):
            while peer is None:
                data, source = self.sock.recvfrom(MAX_DATAGRAM)
                with suppress(ValueError):
                    peer = unpack_reflection_datagram(data, flow).peer
                    self.reporter.observe(self.sock, "recvfrom", flow, Role.CLIENT, remote=source)
        extra = {"scenario": "stale-udp", "reflexive": name_to_wire(peer)}
        self.reporter.observe(self.sock, "getsockname", flow, Role.CLIENT, local=self.sock.getsockname(), extra=extra)
        return flow, peer

    def close(self) -> None:
        """Close the socket (its conntrack entry then times out)."""
        self.sock.close()


def entry_for(port: int, destination: tuple[str, int]) -> ConntrackEntry | None:
    """The host's conntrack entry for our socket's datagrams to the published port."""
    host, dport = destination
    found = [e for e in host_conntrack() if e.proto == "udp" and e.sport == port and e.dst == host and e.dport == dport]
    return found[0] if found else None


def judge(entry: ConntrackEntry | None, answered: bool, echo_ip: str) -> str:
    """Who handled a datagram, read from the conntrack entry it followed and whether echo answered."""
    if entry is None:
        return "nobody: no conntrack entry" if not answered else "unknown: answered without a conntrack entry"
    if entry.reply_src == entry.dst:
        stale = "a stale entry without translation: the datagram stayed on the host"
        return f"docker-proxy, listening there ({stale})" if answered else f"nobody: blackholed by {stale}"
    if entry.reply_src == echo_ip:
        return "docker-dnat: the entry translates to echo's address" + ("" if answered else ", yet no answer")
    return f"nobody: the entry translates to {entry.reply_src}, not echo's {echo_ip}"


def step(stack: Stack, sender: UdpSender, name: str, echo_ip: str) -> CaseFlow:
    """Send one datagram and gather both ends' views, the entry it followed, and who handled it."""
    flow_id, peer = sender.send(name)
    flow: Flow = stack.wait_for_flow(flow_id, both_ends=peer is not None)
    entry = entry_for(sender.port, sender.destination)
    evidence = {"host conntrack": describe_entry(entry) if entry else "no entry"}
    return CaseFlow("stale-udp", name, flow, judge(entry, peer is not None, echo_ip), evidence)


def delete_entry(stack: Stack, port: int) -> str:
    """`conntrack -D` for our source port, from a throwaway container in the host's network namespace."""
    output = stack.docker.containers.run(
        IMAGE,
        ["conntrack", "-D", "-p", "udp", "--orig-port-src", str(port), "--orig-port-dst", str(ECHO_PORT)],
        network_mode="host",
        cap_add=["NET_ADMIN"],
        user="root",
        labels={PROBE_LABEL: stack.project},
        remove=True,
        stderr=True,
    )
    return bytes(output).decode(errors="replace").strip()


def keep_sending_while(sender: UdpSender, action: Callable[[], object]) -> int:
    """Run `action` in a thread while the sender keeps sending; how many datagrams went out meanwhile."""
    worker = threading.Thread(target=action)
    worker.start()
    sent = 0
    while worker.is_alive():
        sender.sock.sendto(b"still here", sender.destination)
        sent += 1
        time.sleep(SEND_INTERVAL)
    worker.join()
    return sent


def wait_for_echo(reporter: Reporter, published: tuple[str, int]) -> None:
    """Echo answers again: a fresh socket (a fresh entry) gets an answer."""

    def answers() -> bool:
        fresh = UdpSender(reporter, published)
        try:
            return fresh.send("is echo back?")[1] is not None
        finally:
            fresh.close()

    wait_for(answers, "echo answering at its published port", timeout=30, interval=0.2)


def run_stale_udp(stack: Stack) -> list[CaseFlow]:
    """One socket before and after echo's restart; then a new source port; then the old one after conntrack -D."""
    gateway = stack.endpoint("echo", "wan")["Gateway"]
    published = (gateway, stack.published_port("echo", f"{ECHO_PORT}/udp", gateway))
    echo = stack.container("echo")
    echo_ip = unmap_host(stack.ip("echo", "wan"))
    context = zmq.Context()
    reporter = Reporter(context, stack.ingest_endpoint(), "host", node=engine_name(stack.docker), keys=stack.keys)
    sender, fresh = UdpSender(reporter, published), UdpSender(reporter, published)
    try:
        rows = [step(stack, sender, "before echo restarts", echo_ip)]
        sent = keep_sending_while(sender, lambda: echo.restart(timeout=2))
        wait_for_echo(reporter, published)
        rows.append(step(stack, sender, f"after its restart ({sent} sent meanwhile)", echo_ip))
        rows.append(step(stack, fresh, "a new source port", echo_ip))
        deleted = delete_entry(stack, sender.port)
        row = step(stack, sender, "the first port after conntrack -D", echo_ip)
        rows.append(CaseFlow(row.case, row.step, row.flow, row.rewriter, {**row.evidence, "conntrack -D": deleted}))
        return rows
    finally:
        sender.close()
        fresh.close()
        reporter.close()
        context.term()
