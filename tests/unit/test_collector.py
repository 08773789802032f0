"""The collector: bad records counted and kept out, the store replayed after a restart, queries answered."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

import services.store
from services.collector import Collector, Pipeline, Store, serve_page
from services.report import format_table
from shared.collector_protocol import MAX_QUERY, query_collector
from shared.curve import secure_client
from shared.delivery import (
    MessageKind,
    pack_batch,
    pack_item,
    pack_message,
    unpack_ack,
    unpack_message,
    unpack_messages,
)
from shared.names import dumps_json
from shared.record import MAX_RECORD, Family, Method, Observation, Proto, Role, pack_observation
from shared.report_model import Flow, FlowVerdict, LostRange, Report
from shared.reporter import Reporter
from tests.conftest import LiveCollector, ZmqSocket
from tests.helpers import NATCHECK_RESULT as RESULT
from tests.helpers import wait_for

pytestmark = pytest.mark.unit


def observation(flow: str | None, role: Role, method: str, **fields: Any) -> bytes:
    return pack_observation(Observation("svc", "h", flow, role, Proto.UDP, Family.IPV4, Method(method), **fields))


GOOD = [
    observation("f1", Role.CLIENT, "getsockname", local=("192.168.50.20", 5000), extra={"scenario": "udp4"}),
    observation("f1", Role.CLIENT, "getpeername", remote=("198.51.100.10", 7007)),
    observation("f1", Role.SERVER, "recvmsg", local=("198.51.100.10", 7007), remote=("198.51.100.2", 5000)),
]
BAD = [b"\xc1", msgpack.packb({"v": 1}), msgpack.packb([1]), b""]


def test_bad_records_are_counted_and_neither_kept_nor_stored(tmp_path: Path) -> None:
    path = str(tmp_path / "r.bin")
    collector = Collector(Store(path))
    results = [collector.ingest(raw) for raw in [BAD[0], GOOD[0], BAD[1], GOOD[1], BAD[2], BAD[3], GOOD[2]]]
    assert results == [False, True, False, True, False, False, True]
    assert (len(collector.observations), collector.rejected) == (3, 4)
    assert list(collector.store.records()) == GOOD, "the store holds exactly the accepted records"
    collector.store.close()


def test_report_has_flows_methods_records_rejects_and_drops(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    refused = observation("f2", Role.SERVER, "recvmsg", drops=7, extra={"rejected": "junk"})
    for raw in [*GOOD, BAD[0], refused]:
        collector.ingest(raw)
    report = collector.report()
    assert (report.records, report.rejected) == (4, 1)
    assert report.methods == {"getsockname": 1, "getpeername": 1, "recvmsg": 2}
    assert (report.drops, report.service_rejects, report.natchecks) == ({"svc": 7}, {"svc": 1}, ())
    first, second = report.flows
    assert (first.flow, first.scenario, first.verdict, first.port_preserved) == ("f1", "udp4", FlowVerdict.SNAT, True)
    assert first.client is not None and first.client.sockname == ("192.168.50.20", 5000)
    assert (second.flow, second.verdict, second.complete) == ("f2", FlowVerdict.UNMATCHED, False)
    collector.store.close()


def test_store_replays_after_a_restart_with_nothing_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "r.bin")
    first = Collector(Store(path))
    for raw in GOOD:
        first.ingest(raw)
    first.store.close()
    second = Collector(Store(path))
    assert second.observations == first.observations
    assert second.report() == first.report()
    second.store.close()


def test_a_torn_tail_is_skipped_and_records_after_it_survive_the_next_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "r.bin")
    first = Collector(Store(path))
    first.ingest(GOOD[0])
    first.store.close()
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x01\x00partial")  # a crash in the middle of a 256-byte record
    second = Collector(Store(path))
    assert len(second.observations) == 1
    second.ingest(GOOD[1])
    second.store.close()
    third = Collector(Store(path))
    assert [o.method for o in third.observations] == ["getsockname", "getpeername"]
    third.store.close()


def test_queries_over_zeromq(
    live_collector: LiveCollector,
    zmq_context: zmq.Context,
    reporter: Reporter,
) -> None:
    assert query_collector(zmq_context, live_collector.query, {"op": "ping"}) == {"ok": True, "records": 0}
    with socket.socket() as sock:
        reporter.observe(sock, "connect", "f9", Role.CLIENT, remote=("192.0.2.1", 1))
        reporter.observe(sock, "connect", "f8", Role.CLIENT, remote=("192.0.2.2", 2))
    live_collector.wait_for_records(count=2)
    reply = query_collector(zmq_context, live_collector.query, {"op": "records", "flow": "f9"})
    [record] = [Observation.from_wire(r) for r in reply["records"]]
    assert (record.flow, record.remote, record.service, record.method) == ("f9", ("192.0.2.1", 1), "client", "connect")
    assert record == live_collector.records("f9")[0], "the query answers the stored record exactly"
    assert len(query_collector(zmq_context, live_collector.query, {"op": "records"})["records"]) == 2
    report = Report.from_wire(query_collector(zmq_context, live_collector.query, {"op": "report"}))
    assert [(f.flow, f.verdict) for f in report.flows] == [("f9", FlowVerdict.UNMATCHED), ("f8", FlowVerdict.UNMATCHED)]
    assert (report.records, report.rejected, report.methods) == (2, 0, {"connect": 2})
    assert report == live_collector.collector.report()


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (msgpack.packb({"op": "dance"}), "unknown op 'dance'"),
        (msgpack.packb({}), "unknown op None"),
        (msgpack.packb(["ping"]), "query is a list, not a map"),
        (b"\xc1", "query is not msgpack"),
    ],
)
def test_a_bad_query_gets_an_error_and_the_next_is_answered(
    live_collector: LiveCollector, zmq_context: zmq.Context, zmq_socket: ZmqSocket, query: bytes, error: str
) -> None:
    req = zmq_socket(zmq.REQ)
    secure_client(req)
    req.connect(live_collector.query)
    req.send(query)
    reply = msgpack.unpackb(req.recv(), raw=False)
    assert reply["ok"] is False and reply["error"].startswith(error)
    assert live_collector.collector.bad_queries == 1
    assert query_collector(zmq_context, live_collector.query, {"op": "ping"})["ok"]


def test_flows_query_answers_only_what_changed_after_its_cursor(
    live_collector: LiveCollector, zmq_context: zmq.Context
) -> None:
    def ask(**query: Any) -> tuple[int, list[Flow]]:
        reply = query_collector(zmq_context, live_collector.query, {"op": "flows", **query})
        return reply["cursor"], [Flow.from_wire(flow) for flow in reply["flows"]]

    collector = live_collector.collector
    collector.ingest(GOOD[0])
    cursor, [first] = ask()
    assert (cursor, first.flow, first.verdict) == (1, "f1", FlowVerdict.UNMATCHED)
    assert ask(since=cursor) == (1, []), "nothing new, nothing sent"
    collector.ingest(observation("f2", Role.CLIENT, "connect", remote=("192.0.2.1", 1)))
    collector.ingest(GOOD[1])
    collector.ingest(GOOD[2])
    cursor, changed = ask(since=cursor)
    assert cursor == 3 and [(f.flow, f.verdict) for f in changed] == [("f2", "unmatched"), ("f1", "snat")]
    assert ask(since=1, verdict="snat")[1] == [collector.report().flow("f1")]
    assert ask(since=0, last=1)[1] == [collector.report().flow("f1")], "the newest change"
    assert ask(since=0, last=0) == (3, [])


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"op": "flows", "since": "1"}, "query 'since' has type str"),
        ({"op": "flows", "since": -1}, "query 'last' and 'since' must not be negative"),
        ({"op": "flows", "last": True}, "query 'last' has type bool"),
        ({"op": "report", "verdict": [1]}, "query 'verdict' must be a word or a list of words"),
        ({"op": "report", "search": b"x"}, "query 'search' has type bytes"),
    ],
)
def test_a_bad_filter_is_a_counted_error(
    live_collector: LiveCollector, zmq_context: zmq.Context, query: dict[str, Any], error: str
) -> None:
    with pytest.raises(RuntimeError, match=f"collector said: {error}"):
        query_collector(zmq_context, live_collector.query, query)
    assert live_collector.collector.bad_queries == 1


def test_garbage_over_zeromq_is_counted_and_acknowledged(live_collector: LiveCollector, zmq_socket: ZmqSocket) -> None:
    dealer = zmq_socket(zmq.DEALER)
    secure_client(dealer)
    dealer.connect(live_collector.ingest)
    rid = bytes(range(16))
    dealer.send(b"\x01 too short")
    dealer.send_multipart([pack_message(MessageKind.RECORD, rid, 1, GOOD[0]), b"a second frame"])
    dealer.send(pack_message(MessageKind.ACK, rid, 2, GOOD[0]))
    dealer.send(pack_message(MessageKind.RECORD, rid, 0, GOOD[0]))
    for seq, body in enumerate([BAD[0], GOOD[0], BAD[1], GOOD[1]], start=1):
        dealer.send(pack_message(MessageKind.RECORD, rid, seq, body))
    dealer.send(pack_message(MessageKind.GAP, rid, 5, b"\x00"))
    dealer.send(pack_message(MessageKind.RECORD, rid, 6, GOOD[2]))  # one socket keeps order: then all are in
    live_collector.wait_for_records(count=3)
    assert live_collector.collector.rejected == 7
    acked: set[int] = set()
    while len(acked) < 6:
        reporter, ranges = unpack_ack(dealer.recv())
        assert reporter == rid
        acked.update(seq for first, last in ranges for seq in range(first, last + 1))
    assert acked == {1, 2, 3, 4, 5, 6}, "garbage is acknowledged too: resending cannot mend it"


RID = bytes(range(16))


@pytest.fixture
def pipeline(tmp_path: Path, zmq_socket: ZmqSocket) -> Iterator[tuple[Pipeline, zmq.Socket]]:
    """The ingest pipeline over a plain ROUTER, driven by the test, and a DEALER that sends to it."""
    router, dealer = zmq_socket(zmq.ROUTER), zmq_socket(zmq.DEALER)
    router.bind(f"ipc://{tmp_path}/ingest")
    dealer.connect(f"ipc://{tmp_path}/ingest")
    collector = Collector(Store(str(tmp_path / "r.bin")))
    made = Pipeline(collector, router)
    try:
        yield made, dealer
    finally:
        made.close()
        collector.store.close()


def send_and_take(pipeline: Pipeline, dealer: zmq.Socket, seqs: list[int]) -> None:
    """Send numbered records, wait until the ROUTER has the first, and let the pipeline take what is there."""
    for seq in seqs:
        dealer.send(pack_message(MessageKind.RECORD, RID, seq, GOOD[seq % len(GOOD)]))
    assert pipeline.router.poll(5000), "the records reach the ROUTER"
    pipeline.take()


def acked(dealer: zmq.Socket, timeout_ms: int) -> set[int]:
    """The numbers acknowledged by the acks that arrive within the timeout."""
    found: set[int] = set()
    while dealer.poll(timeout_ms):
        reporter, ranges = unpack_ack(dealer.recv())
        assert reporter == RID
        found.update(seq for first, last in ranges for seq in range(first, last + 1))
        timeout_ms = 0
    return found


def test_a_batch_is_acknowledged_and_indexed_only_after_its_fsync_returned(
    pipeline: tuple[Pipeline, zmq.Socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, dealer = pipeline
    syncing, release, synced = threading.Event(), threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        syncing.set()
        assert release.wait(5), "the test releases the fsync"
        real_fsync(fd)
        synced.set()

    monkeypatch.setattr(services.store.os, "fsync", slow_fsync)
    send_and_take(ingest, dealer, [1])
    assert syncing.wait(5) and ingest.busy, "the batch is being stored on the writer thread"
    finishing = threading.Thread(target=ingest.finish)
    finishing.start()
    assert acked(dealer, 300) == set(), "no ack while the fsync has not returned"
    assert not ingest.collector.observations and not ingest.collector.ledger.accounts, "nor indexed, nor noted"
    release.set()
    finishing.join(5)
    assert synced.is_set() and acked(dealer, 5000) == {1}
    assert len(ingest.collector.observations) == 1


def test_a_failed_write_acknowledges_nothing_of_its_batch_or_the_batch_read_meanwhile(
    pipeline: tuple[Pipeline, zmq.Socket], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ingest, dealer = pipeline
    store = ingest.collector.store
    real_write, failed = store._write, list[bytes]()

    def full_once(data: bytes) -> None:
        if not failed:
            failed.append(data)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(data)

    monkeypatch.setattr(store, "_write", full_once)
    send_and_take(ingest, dealer, [1, 2, 3])  # stored on the writer thread: the write fails
    send_and_take(ingest, dealer, [1, 4])  # read meanwhile (1 as a duplicate of the batch being stored): dropped
    ingest.finish()
    assert acked(dealer, 300) == set(), "nothing acknowledged, though the disk took the next write"
    assert store.write_failures == 1 and "read while the store failed are dropped" in caplog.text
    assert not ingest.collector.observations and ingest.collector.rejected == 0
    held: set[int] = set()

    def resend() -> bool:
        send_and_take(ingest, dealer, sorted({1, 2, 3, 4} - held))
        ingest.finish()
        held.update(acked(dealer, 1000))
        return held == {1, 2, 3, 4}

    wait_for(resend, "the reporter's resends stored, indexed and acknowledged")
    assert sorted(e.seq for e in store.replay()) == [1, 2, 3, 4], "each stored once"
    assert len(ingest.collector.observations) == 4


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\x01", "message of 1 bytes is shorter than its 25-byte header"),
        (pack_message(MessageKind.ACK, bytes(16), 1, b""), "message kind 3 is not a record or a gap"),
        (pack_message(MessageKind.RECORD, bytes(16), 0, b""), "message sequence number 0 is reserved"),
    ],
)
def test_a_bad_message_is_refused_saying_why(frame: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{error}$"):
        unpack_message(frame)


RID = bytes(range(16))
ITEMS = [
    pack_item(MessageKind.RECORD, 1, b"one"),
    pack_item(MessageKind.GAP, 2, b"gap"),
    pack_item(MessageKind.RECORD, 3, b""),
]


def test_a_batch_reads_as_its_numbered_messages_and_a_lone_item_as_a_plain_message() -> None:
    read = unpack_messages(pack_batch(RID, ITEMS))
    assert [(m.kind, m.reporter, m.seq, m.body) for m in read] == [
        (MessageKind.RECORD, RID, 1, b"one"),
        (MessageKind.GAP, RID, 2, b"gap"),
        (MessageKind.RECORD, RID, 3, b""),
    ]
    lone = pack_batch(RID, ITEMS[:1])
    assert lone == pack_message(MessageKind.RECORD, RID, 1, b"one"), "one item is sent as the message it is"
    assert unpack_messages(lone) == [unpack_message(lone)]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (pack_batch(RID, ITEMS[::-1])[:-1], "batch item 3 of 3 says 3 bytes, past the frame's end"),
        (pack_batch(RID, ITEMS[::-1])[:-5], "batch ends inside item 3 of 3"),
        (pack_batch(RID, ITEMS) + b"x", "batch has 1 bytes after its 3 items"),
        (pack_message(MessageKind.BATCH, RID, 0, b""), "batch says 0 items but has 0 bytes"),
        (pack_message(MessageKind.BATCH, RID, 2, ITEMS[2]), "batch says 2 items but has 13 bytes"),
        (pack_batch(RID, [ITEMS[0], pack_item(MessageKind.ACK, 2, b"")]), "message kind 3 is not a record or a gap"),
        (pack_batch(RID, [ITEMS[0], pack_item(MessageKind.RECORD, 0, b"")]), "message sequence number 0 is reserved"),
    ],
)
def test_a_bad_batch_is_refused_whole_saying_why(frame: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{error}$"):
        unpack_messages(frame)


def test_a_batch_is_stored_and_acknowledged_item_by_item(live_collector: LiveCollector, zmq_socket: ZmqSocket) -> None:
    dealer = zmq_socket(zmq.DEALER)
    secure_client(dealer)
    dealer.connect(live_collector.ingest)
    bodies = [GOOD[0], BAD[0], GOOD[1]]
    dealer.send(pack_batch(RID, [pack_item(MessageKind.RECORD, seq, body) for seq, body in enumerate(bodies, 1)]))
    dealer.send(pack_batch(RID, [pack_item(MessageKind.RECORD, seq, GOOD[2]) for seq in (3, 4)]))
    live_collector.wait_for_records(count=3)
    acked: set[int] = set()
    while len(acked) < 4:
        reporter, ranges = unpack_ack(dealer.recv())
        assert reporter == RID
        acked.update(seq for first, last in ranges for seq in range(first, last + 1))
    assert acked == {1, 2, 3, 4}, "each item acknowledged by its own number, the refused one too"
    stored = [o.method for o in live_collector.records()]
    assert stored == ["getsockname", "getpeername", "recvmsg"], "seq 3 came twice: stored once"
    assert live_collector.collector.rejected == 1
    assert live_collector.collector.report().duplicates == 1


def natcheck_record(summary: Any) -> bytes:
    return observation(None, Role.CLIENT, "getsockname", time=7.0, extra={"natcheck": summary})


def test_a_natcheck_summary_is_read_once_at_ingest_and_reported_typed(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    assert collector.ingest(natcheck_record(RESULT.to_wire()))
    [check] = collector.report().natchecks
    assert (check.service, check.host, check.time, check.result) == ("svc", "h", 7.0, RESULT)
    collector.store.close()


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"natcheck": 1}, "record extra natcheck: natcheck is a int, not a map"),
        ({"natcheck": {"mapping": "endpoint-independent"}}, "record extra natcheck: natcheck has no 'filtering'"),
        ({"natcheck": {**RESULT.to_wire(), "mapping": 1}}, "record extra natcheck: natcheck 'mapping' has type int"),
        ({"natcheck": {**RESULT.to_wire(), "mapping": "cone"}}, "record extra natcheck: natcheck mapping 'cone'"),
        ({"natcheck": {**RESULT.to_wire(), "hairpin": "no"}}, "record extra natcheck: natcheck 'hairpin' has type"),
        (
            {"natcheck": {**RESULT.to_wire(), "mapped_address": [b"198.51.100.2", 1]}},
            "record extra natcheck: natcheck mapped_address must be [host, port]",
        ),
        (
            {
                "natcheck": {
                    **RESULT.to_wire(),
                    "tests": [{"name": b"\xff", "local": ["a", 1], "destination": ["b", 2]}],
                }
            },
            "record extra natcheck: natcheck test 'name' has type bytes",
        ),
        ({"scenario": 4}, "record extra 'scenario' has type int"),
        ({"seen": msgpack.Timestamp(1, 0)}, "record 'extra' holds a Timestamp"),
        ({"seen": msgpack.ExtType(5, b"x")}, "record 'extra' holds a ExtType"),
        ({"evidence": {"rtt": float("nan")}}, "record 'extra' nan is not finite"),
        ({"deep": [[[[[[[[[[1]]]]]]]]]]}, "record 'extra' is nested deeper than 8"),
        (
            {"natcheck": {**RESULT.to_wire(), "mapping_lifetime_survived": float("inf")}},
            "record 'extra' inf is not finite",
        ),
    ],
    ids=[
        "not-a-map",
        "missing-keys",
        "mapping-int",
        "mapping-word",
        "hairpin-str",
        "bytes-host",
        "bytes-test",
        "scenario",
        "timestamp",
        "ext-type",
        "nan-evidence",
        "deep",
        "infinite-lifetime",
    ],
)
def test_a_record_whose_extras_would_break_the_report_is_rejected_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: dict[str, Any], error: str
) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    assert not collector.ingest(observation("n1", Role.CLIENT, "getsockname", extra=extra))
    assert collector.ingest(GOOD[0]), "and the next record is taken"
    assert (collector.rejected, len(collector.observations)) == (1, 1)
    assert error in caplog.text
    report = collector.report()
    assert report.natchecks == () and Report.from_wire(json.loads(dumps_json(report.to_wire()))) == report
    assert format_table(report)
    collector.store.close()


def test_a_stored_record_with_a_malformed_natcheck_is_skipped_on_replay(tmp_path: Path) -> None:
    path = str(tmp_path / "r.bin")
    store = Store(path)
    for raw in [GOOD[0], natcheck_record({**RESULT.to_wire(), "mapping": 1}), natcheck_record(RESULT.to_wire())]:
        store.append(raw)  # as an older collector, which checked less, would have stored them
    store.close()
    collector = Collector(Store(path))
    assert len(collector.observations) == 2
    assert [c.result for c in collector.report().natchecks] == [RESULT]
    collector.store.close()


def test_abstract_unix_names_reach_json_as_at_names(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    abstract = pack_observation(
        Observation("svc", "h", "u1", Role.CLIENT, Proto.UNIX, Family.UNIX, Method.GETPEERNAME, remote=b"\0socklab")
    )
    collector.ingest(abstract)
    server = serve_page(collector, "127.0.0.1", 0)
    try:
        served = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/report.json").read())
    finally:
        server.shutdown()
        server.server_close()
        collector.store.close()
    assert served["flows"][0]["client"]["peername"] == "@socklab"


def test_a_message_past_maxmsgsize_never_reaches_ingest_and_the_collector_serves_on(
    live_collector: LiveCollector, zmq_socket: ZmqSocket, zmq_context: zmq.Context
) -> None:
    big = observation("big", Role.CLIENT, "getsockname", extra={"pad": "x" * MAX_RECORD})
    assert len(big) > MAX_RECORD
    rid = bytes(range(16))
    sender = zmq_socket(zmq.DEALER)
    secure_client(sender)
    sender.connect(live_collector.ingest)
    sender.send(pack_message(MessageKind.RECORD, rid, 1, big))
    other = zmq_socket(zmq.DEALER)
    secure_client(other)
    other.connect(live_collector.ingest)
    other.send(pack_message(MessageKind.RECORD, rid[::-1], 1, GOOD[0]))
    live_collector.wait_for_records(count=1)
    assert [o.flow for o in live_collector.records()] == ["f1"], "the oversized record was refused unread"
    assert query_collector(zmq_context, live_collector.query, {"op": "ping", "pad": "x" * 100})["ok"]
    with pytest.raises(TimeoutError):  # the REP socket drops a query past its bound; no reply comes
        query_collector(zmq_context, live_collector.query, {"op": "ping", "pad": "x" * MAX_QUERY}, timeout=0.5)
    assert query_collector(zmq_context, live_collector.query, {"op": "ping"})["ok"], "and still answers"


@pytest.mark.parametrize(
    ("extra", "counter", "logged"),
    [
        ({"pad": "x" * MAX_RECORD}, "oversized", f"exceeds {MAX_RECORD}: dropped"),
        ({"when": {1, 2}}, "unpackable", "cannot be packed: dropped"),  # msgpack writes no set
        ({"big": 2**64}, "unpackable", "cannot be packed: dropped"),
    ],
    ids=["oversized", "a set", "an int past 64 bits"],
)
def test_a_record_the_collector_cannot_take_is_dropped_counted_and_shown_as_a_gap_of_its_number(
    zmq_context: zmq.Context,
    live_collector: LiveCollector,
    caplog: pytest.LogCaptureFixture,
    extra: dict[str, Any],
    counter: str,
    logged: str,
) -> None:
    reporter = Reporter(zmq_context, live_collector.ingest, "svc")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert reporter.observe(sock, "bind", None, Role.SERVER, extra=extra), "queued: the courier packs"
        assert reporter.observe(sock, "bind", None, Role.SERVER, local=("0.0.0.0", 9))
    assert reporter.flush(5), "the courier outlives the record and delivers the next"
    assert (getattr(reporter, counter), reporter.dropped, reporter.sent) == (1, 1, 2)
    assert logged in caplog.text
    [kept] = live_collector.records()
    assert kept.local == ("0.0.0.0", 9), "the record that cannot go never reached the collector"
    report = live_collector.collector.report()
    assert report.lost == {"svc": 1} and report.missing == {}, "its number is accounted for, as lost"
    assert report.gaps == (LostRange("svc", reporter.id.hex()[:8], 1, 1),)
    reporter.close()


def test_the_table_shows_escape_sequences_in_names_as_text(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    hostile = "\x1b]0;pwned\x07\x1b[2J"
    collector.ingest(observation("e1", Role.CLIENT, "getsockname", local=(hostile, 1), extra={"scenario": hostile}))
    for wide in (False, True):
        table = format_table(collector.report(), wide)
        assert "\x1b" not in table and "\x07" not in table
        assert "\\x1b]0;pwned\\x07" in table
    collector.store.close()
