"""The collector: bad records counted and kept out, the store replayed after a restart, queries answered."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import pytest
import zmq

from services.collector import Collector, Store, serve_page
from services.report import format_table, query_collector
from shared.record import Observation, Proto, Role, pack_observation
from shared.reporter import Reporter
from tests.conftest import LiveCollector, wait_until

pytestmark = pytest.mark.unit


def observation(flow: str, role: Role, method: str, **names: object) -> bytes:
    return pack_observation(Observation("svc", "h", flow, role, Proto.UDP, "ipv4", method, **names))  # type: ignore[arg-type]


GOOD = [
    observation("f1", Role.CLIENT, "getsockname", local=("192.168.50.20", 5000)),
    observation("f1", Role.CLIENT, "getpeername", remote=("198.51.100.10", 7007)),
    observation("f1", Role.SERVER, "recvmsg", local=("198.51.100.10", 7007), remote=("198.51.100.2", 5000)),
]


def test_bad_records_are_counted_and_not_stored(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    results = [collector.ingest(raw) for raw in [b"\xc1", GOOD[0], msgpack.packb({"v": 1}), GOOD[1], GOOD[2]]]
    assert results == [False, True, False, True, True]
    report = collector.report()
    assert (report["records"], report["rejected"]) == (3, 2)
    [flow] = report["flows"]
    assert (flow["verdict"], flow["port_preserved"]) == ("snat", True)
    assert report["methods"] == {"getsockname": 1, "getpeername": 1, "recvmsg": 1}


def test_store_replays_after_a_restart_and_skips_a_torn_tail(tmp_path: Path) -> None:
    path = str(tmp_path / "r.bin")
    first = Collector(Store(path))
    for raw in GOOD:
        first.ingest(raw)
    first.store.close()
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01\x00partial")
    second = Collector(Store(path))
    assert second.report()["flows"] == first.report()["flows"]
    assert len(second.observations) == 3


def test_queries_over_zeromq(live_collector: LiveCollector, zmq_context: zmq.Context, reporter: Reporter) -> None:
    assert query_collector(zmq_context, live_collector.query, {"op": "ping"})["ok"]
    with socket.socket() as sock:
        reporter.observe(sock, "connect", "f9", Role.CLIENT, remote=("192.0.2.1", 1))
    live_collector.wait_for_records(1)
    records = query_collector(zmq_context, live_collector.query, {"op": "records", "flow": "f9"})["records"]
    assert [r["remote"] for r in records] == [["192.0.2.1", 1]]
    with pytest.raises(RuntimeError, match="unknown op 'dance'"):
        query_collector(zmq_context, live_collector.query, {"op": "dance"})
    report = query_collector(zmq_context, live_collector.query, {"op": "report"})
    assert report["flows"][0]["verdict"] == "unmatched"
    assert live_collector.collector.bad_queries == 1


def test_garbage_over_zeromq_is_counted(live_collector: LiveCollector, zmq_context: zmq.Context) -> None:
    push = zmq_context.socket(zmq.PUSH)
    push.connect(live_collector.ingest)
    push.send(b"not a record")
    push.send(GOOD[0])
    wait_until(lambda: live_collector.collector.rejected == 1 and live_collector.collector.observations, "ingest")
    push.close()


def test_table_has_a_line_per_flow_with_its_verdict(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    for raw in GOOD:
        collector.ingest(raw)
    table = format_table(collector.report())
    [line] = [row for row in table.splitlines() if "198.51.100.2:5000" in row]
    assert line.rstrip().endswith("snat, port kept")
    assert "192.168.50.20:5000 -> 198.51.100.10:7007" in line


def test_live_page_escapes_names_and_serves_json(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    hostile = pack_observation(
        Observation("<script>x</script>", "h", "f2", Role.CLIENT, Proto.UNIX, "unix", "getpeername", remote="<b>")
    )
    for raw in [*GOOD, hostile]:
        collector.ingest(raw)
    server = serve_page(collector, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = urllib.request.urlopen(f"{base}/", timeout=5).read().decode()
        served = json.loads(urllib.request.urlopen(f"{base}/report.json", timeout=5).read())
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{base}/nothing", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page
    assert '<td class="snat">snat, port kept</td>' in page
    assert served["flows"] == json.loads(json.dumps(collector.report()["flows"]))
