"""Any client is welcome: raw echo and whoami (line and HTTP) in-process on loopback, their one-sided
flows in the collector, and the bad input and limits they survive."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.collector import read_record
from services.echo import MAX_PENDING, EchoServer, Limits, StreamConn
from services.flows import join_flows
from services.oneside import RAW_ECHO, WHOAMI, WHOAMI_HTTP
from services.whoami import MAX_HEAD, choose_type
from shared.framing import pack_frame, recv_frame
from shared.names import format_name
from shared.record import Family, Method, Observation, Proto, Role, pack_observation
from shared.report_model import Flow, FlowVerdict, check_evidence
from tests.conftest import LiveCollector, Loops, MakeReporter, serving
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

SEEN_AS = {"127.0.0.1": "::ffff:127.0.0.1", "::1": "::1"}


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(family(host), socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect((host, port))
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def recv_exactly(sock: socket.socket, length: int) -> bytes:
    data = bytearray()
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        assert chunk, f"closed after {len(data)} of {length} bytes"
        data += chunk
    return bytes(data)


def names(sock: socket.socket, host: str) -> tuple[str, str]:
    """How a dual-stack echo names this client and the address it reached, as whoami writes them."""
    mine, theirs = sock.getsockname(), sock.getpeername()
    return format_name((SEEN_AS[host], mine[1], 0, 0)), format_name((SEEN_AS[host], theirs[1], 0, 0))


def one_sided_flow(live_collector: LiveCollector, peer: str, scenario: str) -> Flow:
    """The complete server-only flow whose evidence names this peer."""

    def find() -> Flow | None:
        flows = join_flows(live_collector.records())
        return next(
            (f for f in flows if f.complete and f.scenario == scenario and f.evidence.get("peer") == peer), None
        )

    return wait_for(find, f"a complete {scenario} flow from {peer}")


@pytest.fixture
def make_echo(make_reporter: MakeReporter, loops: Loops, tmp_path: Path) -> Iterator[Any]:
    """echo with limits of the test's choosing, served until the test ends."""
    running: list[Iterator[Any]] = []

    def make(limits: Limits) -> EchoServer:
        server = EchoServer(make_reporter("echo"), 0, None, whoami_port=0, http_port=0, limits=limits)
        server.listen()
        running.append(serving(loops, server))
        return next(running[-1])

    yield make
    for server in running:
        for _ in server:
            pass


# Raw echo on echo's own port.


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_raw_tcp_bytes_come_back_at_once_and_show_as_a_server_only_flow(
    echo_server: EchoServer, live_collector: LiveCollector, host: str
) -> None:
    with connect(host, echo_server.port) as sock:
        sock.sendall(b"hi\n")
        assert recv_exactly(sock, 3) == b"hi\n", "a person typing gets the line back without closing"
        later = b"\x00\x00 later bytes are raw too\n"
        sock.sendall(later)
        assert recv_exactly(sock, len(later)) == later
        peer, local = names(sock, host)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    flow = one_sided_flow(live_collector, peer, RAW_ECHO)
    assert flow.verdict == FlowVerdict.SERVER_ONLY and flow.client is None and flow.server is not None
    assert format_name(flow.server.peername) == peer and format_name(flow.server.sockname) == local
    assert flow.evidence == {
        "client": "any",
        "proto": "tcp",
        "peer": peer,
        "local": local,
        "bytes_in": 3 + len(later),
        "bytes_out": 3 + len(later),
        "closed": "done",
    }


def test_a_lone_zero_byte_waits_for_the_next_and_is_echoed_at_eof(echo_server: EchoServer) -> None:
    with connect("127.0.0.1", echo_server.port) as sock:
        sock.sendall(b"\x00")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b"\x00"
    with connect("127.0.0.1", echo_server.port) as sock:
        sock.sendall(b"\x00")
        time.sleep(0.1)
        sock.sendall(b"x")
        assert recv_exactly(sock, 2) == b"\x00x"


def test_a_megabyte_line_is_echoed_with_bounded_buffering(echo_server: EchoServer) -> None:
    line = b"a" * (1024 * 1024) + b"\n"
    echo_server.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit it
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", echo_server.port))
        sender = threading.Thread(target=sock.sendall, args=(line,), daemon=True)
        sender.start()
        held = wait_for(lambda: held_back(echo_server), "echo to hold back bytes for a client that does not read")
        time.sleep(0.2)
        assert held_back(echo_server) <= MAX_PENDING + 65536, "echo stops reading once its buffer is full"
        assert recv_exactly(sock, len(line)) == line and held > 0
        sender.join(5)


def held_back(server: EchoServer) -> int:
    conns = [key.data for key in list(server.selector.get_map().values()) if isinstance(key.data, StreamConn)]
    return sum(len(conn.pending) for conn in conns)


SENT = 20


def test_raw_udp_is_echoed_and_reported_as_one_flow_per_pair(
    echo_server: EchoServer, live_collector: LiveCollector
) -> None:
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for i in range(SENT):
            sock.sendto(b"junk %d" % i, ("127.0.0.1", echo_server.port))
            assert sock.recv(100) == b"junk %d" % i
        peer = format_name(("::ffff:127.0.0.1", sock.getsockname()[1], 0, 0))
    elapsed = time.monotonic() - start
    flow = one_sided_flow(live_collector, peer, RAW_ECHO)
    assert flow.verdict == FlowVerdict.SERVER_ONLY and flow.proto == "udp"
    assert flow.evidence["local"] == format_name(("::ffff:127.0.0.1", echo_server.port, 0, 0)), "the arrival address"
    wait_for(
        lambda: [f for f in join_flows(live_collector.records(flow.flow)) if f.evidence.get("datagrams") == SENT],
        "the grown count to be reported",
    )
    # the first datagram's record and counts, then at most one count a report interval the datagrams spanned
    bound = 4 + int(elapsed / echo_server.limits.report_interval)
    assert len([o for o in live_collector.records() if o.flow == flow.flow]) <= bound < SENT, "not one per datagram"


def test_udp_pairs_beyond_the_cap_are_answered_and_counted(make_echo: Any, live_collector: LiveCollector) -> None:
    server = make_echo(Limits(max_udp_pairs=2))
    for _ in range(4):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"x", ("127.0.0.1", server.port))
            assert sock.recv(10) == b"x"
    wait_for(lambda: server.stats["oneside_datagrams"] == 4, "echo to count every datagram it answered")
    assert server.udp_pairs.unreported == 2

    def reported() -> int:
        return len([f for f in join_flows(live_collector.records()) if f.scenario == RAW_ECHO and f.proto == "udp"])

    wait_for(lambda: reported() >= 2, "the reported pairs")
    time.sleep(0.2)
    assert reported() == 2, "pairs beyond the cap are counted, not reported"


# whoami: one line.


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_whoami_tcp_says_the_line_at_once_and_closes(
    echo_server: EchoServer, live_collector: LiveCollector, host: str
) -> None:
    assert echo_server.whoami_port is not None
    with connect(host, echo_server.whoami_port) as sock:
        peer, local = names(sock, host)
        assert read_to_eof(sock) == f"you are {peer} at {local}\n".encode(), "without sending a byte"
    flow = one_sided_flow(live_collector, peer, WHOAMI)
    assert flow.verdict == FlowVerdict.SERVER_ONLY and flow.evidence["bytes_out"] == len(f"you are {peer} at {local}\n")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_whoami_udp_answers_any_datagram_with_the_line(echo_server: EchoServer, host: str) -> None:
    assert echo_server.whoami_port is not None
    with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((host, echo_server.whoami_port))
        for datagram in (b"", b"\xff" * 1000, b"who?"):
            sock.send(datagram)
            peer, local = names(sock, host)
            assert sock.recv(1000) == f"you are {peer} at {local}\n".encode()


# whoami over HTTP.


def http(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes, tuple[str, str]]:
    """Send raw request bytes; return the status, headers, body and how whoami named us."""
    with connect(host, port) as sock:
        seen = names(sock, host)
        sock.sendall(request)
        raw = read_to_eof(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body, seen


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_http_whoami_gives_curl_json(echo_server: EchoServer, live_collector: LiveCollector, host: str) -> None:
    assert echo_server.http_port is not None
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
    status, headers, body, (peer, local) = http(echo_server.http_port, request, host)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    facts = json.loads(body)
    assert (facts["peer"], facts["local"], facts["proto"]) == (peer, local, "tcp")
    flow = one_sided_flow(live_collector, peer, WHOAMI_HTTP)
    assert flow.flow == facts["flow"] and flow.verdict == FlowVerdict.SERVER_ONLY
    assert flow.evidence["request_line"] == "GET / HTTP/1.1" and flow.evidence["user_agent"] == "curl/7.88.1"
    assert flow.evidence["status"] == 200


def test_http_whoami_gives_a_browser_escaped_html(echo_server: EchoServer) -> None:
    assert echo_server.http_port is not None
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    request = f"GET /<b> HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode()
    status, headers, body, (peer, local) = http(echo_server.http_port, request)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f"you are {peer} at {local}".encode() in body and b"<b>" not in body


def test_http_head_has_get_headers_and_no_body(echo_server: EchoServer) -> None:
    assert echo_server.http_port is not None
    status, headers, body, _ = http(echo_server.http_port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / SPDY/3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"b" * (2 * MAX_HEAD), 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    ],
    ids=["tls", "bad-header", "not-http", "big-header", "endless-head", "post"],
)
def test_http_garbage_gets_its_status_and_the_port_keeps_serving(
    echo_server: EchoServer, request_bytes: bytes, status: int
) -> None:
    assert echo_server.http_port is not None
    assert http(echo_server.http_port, request_bytes)[0] == status
    assert http(echo_server.http_port, b"GET / HTTP/1.0\r\n\r\n")[0] == 200


def test_choose_type_follows_accept_weights() -> None:
    assert choose_type(None) == choose_type("*/*") == choose_type("application/json") == "application/json"
    assert choose_type("text/html, */*;q=0.8") == "text/html"
    assert choose_type("text/*") == "text/html"
    assert choose_type("text/plain") == "text/plain"
    assert choose_type("text/html;q=0.5, application/json") == "application/json"
    assert choose_type("image/png") == "application/json", "nothing acceptable: JSON rather than 406"


# Limits: half-open clients, many connections.


def test_half_open_clients_are_closed_after_the_timeout(make_echo: Any, live_collector: LiveCollector) -> None:
    server = make_echo(Limits(http_timeout=0.3, idle_timeout=0.3))
    with connect("127.0.0.1", server.http_port) as http_sock, connect("127.0.0.1", server.port) as echo_sock:
        http_sock.sendall(b"GET / HTTP/1.1\r\n")
        echo_sock.sendall(b"\x00")
        started = time.monotonic()
        assert http_sock.recv(100) == b"" and echo_sock.recv(100) == b""
        assert time.monotonic() - started < 3
        peer = format_name(("::ffff:127.0.0.1", http_sock.getsockname()[1], 0, 0))
    assert one_sided_flow(live_collector, peer, WHOAMI_HTTP).evidence["closed"] == "idle timeout"
    assert server.stats["idle_closed"] == 2


def test_streams_beyond_the_cap_wait_in_the_backlog(make_echo: Any) -> None:
    server = make_echo(Limits(max_streams=3))
    held = [connect("127.0.0.1", server.whoami_port) for _ in range(3)]
    try:
        for sock in held:
            assert sock.recv(100).startswith(b"you are")
        with connect("127.0.0.1", server.whoami_port) as late:
            late.settimeout(0.3)
            with pytest.raises(TimeoutError):
                late.recv(100)
            held.pop().close()
            late.settimeout(5)
            assert late.recv(100).startswith(b"you are"), "served once a stream closed"
    finally:
        for sock in held:
            sock.close()
    assert server.stats["stream_cap"] >= 1


def test_evidence_is_a_flat_map() -> None:
    assert check_evidence({"peer": "x", "bytes_in": 3, "ok": True, "ua": None}, "e") == {
        "peer": "x",
        "bytes_in": 3,
        "ok": True,
        "ua": None,
    }
    for bad in ({"nested": {"a": 1}}, {"list": [1]}, {1: "x"}, ["peer"]):
        with pytest.raises(ValueError):
            check_evidence(bad, "evidence")


SERVER_WITH_FEW_DESCRIPTORS = """
import resource, sys, threading, zmq
from services.echo import EchoServer
from services.registry import RegistryServer
from shared.reporter import Reporter
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
reporter = Reporter(zmq.Context(), sys.argv[1], sys.argv[3])
if sys.argv[3] == "echo":
    server = EchoServer(reporter, 0, None, whoami_port=0)
    server.listen()
    print(server.whoami_port, flush=True)
else:
    server = RegistryServer(reporter, 0, 0)
    print(server.port, flush=True)
server.serve(threading.Event())
"""


def served(service: str, sock: socket.socket) -> bool:
    """Whether a server answers a fresh client: echo's whoami line, or the registry's stats."""
    if service == "echo":
        return sock.recv(100).startswith(b"you are")
    sock.sendall(pack_frame({"op": "stats", "flow": "late"}))
    return recv_frame(sock)["ok"] is True


def cpu_seconds(pid: int) -> float:
    """User and system time a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("service", ["echo", "registry"])
def test_out_of_descriptors_backs_off_instead_of_spinning(
    live_collector: LiveCollector, tmp_path: Path, service: str
) -> None:
    log = tmp_path / "server.log"  # a file, not a pipe: a spinning server must not be stopped by a full pipe
    echo = subprocess.Popen(
        [sys.executable, "-c", SERVER_WITH_FEW_DESCRIPTORS, live_collector.ingest, "48", service],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    held: list[socket.socket] = []
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(80)]
        time.sleep(0.5)
        before = cpu_seconds(echo.pid)
        time.sleep(1.0)
        assert cpu_seconds(echo.pid) - before < 0.1, f"{service} must not spin on a listener it cannot accept from"
        for sock in held:
            sock.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
            late.settimeout(5)
            assert served(service, late), "served again once descriptors are free"
    finally:
        for sock in held:
            sock.close()
        echo.terminate()
        echo.communicate(timeout=5)
    errors = log.read_text()
    assert "Too many open files" in errors and "not accepting" in errors


def test_the_collector_rejects_a_record_whose_evidence_is_not_flat() -> None:
    good = Observation("echo", "h", "f1", Role.SERVER, Proto.TCP, Family.IPV6, Method.GETPEERNAME, extra={})
    for extra in ({"evidence": {"peer": ["a"]}}, {"evidence": "peer"}):
        with pytest.raises(ValueError, match="evidence"):
            read_record(pack_observation(replace(good, extra=extra)))
    kept, _ = read_record(pack_observation(replace(good, extra={"evidence": {"peer": "x"}})))
    assert isinstance(kept, Observation) and kept.extra["evidence"] == {"peer": "x"}
