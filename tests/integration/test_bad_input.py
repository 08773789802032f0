"""Garbage from another container to every port: each service counts it, keeps serving, and loses nothing."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tests.integration.stack import Stack, wait_for

pytestmark = pytest.mark.integration

# Runs inside client-wan: garbage to echo (TCP, UDP), registry (TCP frames and requests, STUN) and collector.
GARBAGE = r"""
import json, socket, struct, sys
import msgpack, zmq
from shared.registry_protocol import request
from shared.framing import pack_frame, recv_frame
from shared.reporter import Reporter

echo, registry = sys.argv[1], sys.argv[2]

def closed_by_server(address, payload):
    with socket.create_connection(address, timeout=3) as s:
        s.sendall(payload)
        assert s.recv(100) == b"", "server should close a stream that is not frames"

for payload in (b"GET / HTTP/1.0\r\n\r\n", struct.pack("!I", 1 << 30), struct.pack("!I", 1) + b"\x01"):
    closed_by_server((echo, 7007), payload)
closed_by_server((registry, 5300), b"\xff" * 16)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.sendto(b"\xc1 not msgpack", (echo, 7007))
udp.sendto(msgpack.packb([1, 2, 3]), (echo, 7007))
for packet in (b"\x00\x01\x00\x00", b"\xff" * 20, b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"\x00" * 12):
    udp.sendto(packet, (registry, 3478))
with socket.create_connection((registry, 5300), timeout=3) as s:
    for bad in ({"op": "lookup"}, {"op": "dance", "flow": "x"}, {"op": "lookup", "flow": "y"}):
        s.sendall(pack_frame(bad))
        assert recv_frame(s)["ok"] is False
ctx = zmq.Context()
push = ctx.socket(zmq.PUSH)
push.connect("tcp://collector:5555")
push.send(b"\xc1 not a record")
push.send(msgpack.packb({"v": 1, "service": "x"}))
push.close(linger=3000)
reporter = Reporter(ctx, "tcp://collector:5555", "garbage")
print(json.dumps(request((registry, 5300), {"op": "stats"}, reporter)["stats"]))
reporter.close()
ctx.term()
"""


def test_garbage_is_counted_and_nothing_is_lost(stack: Stack) -> None:
    before = stack.query("report")
    since = int(time.time()) - 1
    echo, registry = stack.ip("echo", "wan"), stack.ip("registry", "wan")
    output = stack.exec("client-wan", "python3", "-c", GARBAGE, echo, registry)
    stats = json.loads(output.strip().splitlines()[-1])
    assert stats["rejected"] >= 1 and stats["bad_requests"] >= 3 and stats["stun_rejected"] >= 3, stats

    def rejects(report: dict[str, Any], service: str) -> int:
        return int(report["service_rejects"].get(service, 0))

    after = wait_for(
        lambda: (
            (r := stack.query("report"))["rejected"] >= before["rejected"] + 2
            and rejects(r, "echo") >= rejects(before, "echo") + 5
            and r
        ),
        "the collector to count two bad records and hold echo's five rejections",
    )
    assert after["rejected"] == before["rejected"] + 2
    assert rejects(after, "echo") - rejects(before, "echo") == 5, after["service_rejects"]
    echo_log = stack.container("echo").logs(since=since).decode()
    assert echo_log.count("rejected") >= 5, "echo's own log tells the same rejections"

    outcomes = stack.run_client("client-wan", "--scenario", "tcp", "--scenario", "udp", "--scenario", "unix")
    for outcome in outcomes:
        assert stack.wait_for_flow(outcome["flow"])["verdict"] == "direct", "every service still serves"
    kept = {f["flow"] for f in stack.query("report")["flows"]}
    assert {f["flow"] for f in before["flows"]} <= kept, "no stored flow was lost"


def test_collector_restart_loses_nothing_stored(stack: Stack) -> None:
    before = stack.query("report")
    stack.container("collector").restart(timeout=5)
    after = wait_for(lambda: stack.try_query("report"), "the collector to answer after its restart", 30)
    assert after["records"] >= before["records"]
    assert {f["flow"] for f in before["flows"]} <= {f["flow"] for f in after["flows"]}


def test_live_page_shows_the_same_flows(stack: Stack) -> None:
    [outcome] = stack.run_client("client-wan", "--scenario", "udp", "--echo", f"{stack.ip('echo', 'wan')}:7007")
    stack.wait_for_flow(outcome["flow"])
    base = f"http://127.0.0.1:{stack.published_port('collector', '8080/tcp')}"
    served = json.loads(urllib.request.urlopen(f"{base}/report.json", timeout=5).read())
    assert outcome["flow"] in {f["flow"] for f in served["flows"]}
    page = urllib.request.urlopen(f"{base}/", timeout=5).read().decode()
    assert 'http-equiv="refresh"' in page and outcome["local"][0] in page
