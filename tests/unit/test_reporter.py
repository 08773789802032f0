"""The reporter: numbered records reach a real ROUTER, stay until acknowledged, are resent to a restarted
collector and stored once; a full window drops, never blocks, and the gap reaches the report."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zmq

import services.store
from services.collector import Collector, Store, bind, serve
from services.report import format_table
from shared.collector_protocol import query_collector
from shared.curve import secure_client, secure_server
from shared.delivery import (
    MAX_MESSAGE,
    RECEIVE_QUEUE,
    Message,
    MessageKind,
    batches,
    pack_ack,
    pack_batch,
    pack_item,
    unpack_ack,
    unpack_messages,
)
from shared.record import (
    MAX_RECORD,
    Family,
    Method,
    Observation,
    Proto,
    Role,
    pack_observation,
    unpack_observation,
)
from shared.report_model import LostRange
from shared.reporter import Reporter
from tests.conftest import LiveCollector, ZmqSocket
from tests.helpers import wait_for

pytestmark = pytest.mark.unit


@contextmanager
def collector_on(context: zmq.Context, ingest: str, path: Path) -> Iterator[tuple[Collector, str]]:
    """A collector serving `ingest` from the store at `path` until the block ends (a restart is a second block)."""
    collector = Collector(Store(str(path)))
    router, rep = bind(context, ingest, "tcp://127.0.0.1:*")
    query = rep.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(collector, router, rep, stop), daemon=True)
    thread.start()
    try:
        yield collector, query
    finally:
        stop.set()
        thread.join(5)
        collector.store.close()


def reporter_to_router(zmq_context: zmq.Context, zmq_socket: ZmqSocket, **options: Any) -> tuple[zmq.Socket, Reporter]:
    """A bare ROUTER on loopback with the stack's CurveZMQ keys (the test plays the collector) and a Reporter to it."""
    router = zmq_socket(zmq.ROUTER)
    secure_server(router)
    router.bind("tcp://127.0.0.1:*")
    return router, Reporter(zmq_context, router.getsockopt_string(zmq.LAST_ENDPOINT), "unit", **options)


def connection(sock: socket.socket, reporter: Reporter, flow: str) -> bool:
    return reporter.observe(sock, "connect", flow, Role.CLIENT, remote=("192.0.2.1", 7))


def receive(router: zmq.Socket, count: int) -> tuple[bytes, list[Message], int]:
    """Read a reporter's frames until `count` numbered messages came: its connection, the messages, how many frames."""
    messages: list[Message] = []
    frames = 0
    while len(messages) < count:
        peer, frame = router.recv_multipart()
        messages += unpack_messages(frame)
        frames += 1
    return peer, messages, frames


def test_records_arrive_numbered_with_the_sockets_own_proto_and_family(
    zmq_context: zmq.Context,
    zmq_socket: ZmqSocket,
) -> None:
    router, reporter = reporter_to_router(zmq_context, zmq_socket, node="node1")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        assert reporter.observe(sock, "bind", None, Role.SERVER, local=("::", 9, 0, 0))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        assert reporter.observe(sock, "connect", "f", Role.CLIENT, remote="/run/e.sock", extra={"k": 1})
    peer, (first, second), _ = receive(router, 2)
    assert (first.kind, first.reporter, first.seq, second.seq) == (MessageKind.RECORD, reporter.id, 1, 2)
    record, other = unpack_observation(first.body), unpack_observation(second.body)
    assert (record.service, record.host, record.node, other.node) == ("unit", socket.gethostname(), "node1", "node1")
    assert (record.proto, record.family, record.method, record.flow, record.local) == (
        Proto.UDP,
        "ipv6",
        "bind",
        None,
        ("::", 9, 0, 0),
    )
    assert (other.proto, other.family, other.role, other.remote, other.extra) == (
        Proto.UNIX,
        "unix",
        Role.CLIENT,
        "/run/e.sock",
        {"k": 1},
    )
    assert (reporter.sent, reporter.dropped, reporter.unacked) == (2, 0, 2), "kept until acknowledged"
    router.send_multipart([peer, pack_ack(reporter.id, [(1, 2)])])
    assert reporter.flush(5), "the ack empties the window"
    assert reporter.acked == 2
    reporter.close()


def wakeups(thread: threading.Thread) -> int:
    """How often a thread has slept and been woken so far (the kernel's count of its voluntary switches)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def test_an_idle_courier_with_nothing_awaiting_an_ack_does_not_wake(
    zmq_context: zmq.Context, zmq_socket: ZmqSocket
) -> None:
    router, reporter = reporter_to_router(zmq_context, zmq_socket)
    with socket.socket() as sock:
        assert connection(sock, reporter, "idle")
    peer, _ = router.recv_multipart()
    router.send_multipart([peer, pack_ack(reporter.id, [(1, 1)])])
    assert reporter.flush(5)
    courier = reporter._courier

    def quiet_for_half_a_second() -> bool:
        before = wakeups(courier)
        time.sleep(0.5)  # the window the wakeups are counted over; a ticking courier wakes 5 times in it
        return wakeups(courier) - before <= 1

    wait_for(quiet_for_half_a_second, "the courier to stop waking once every record is acknowledged", timeout=3)
    with socket.socket() as sock:
        assert connection(sock, reporter, "after")
    _, [after], _ = receive(router, 1)
    assert after.seq == 2, "a record still wakes it at once"
    router.send_multipart([peer, pack_ack(reporter.id, [(2, 2)])])
    assert reporter.flush(5)
    reporter.close()


def test_records_queued_between_two_wakeups_leave_as_one_message(
    zmq_context: zmq.Context, zmq_socket: ZmqSocket
) -> None:
    router, reporter = reporter_to_router(zmq_context, zmq_socket)
    with socket.socket() as sock:
        assert all(connection(sock, reporter, f"f{i}") for i in range(3000))
    peer, messages, frames = receive(router, 3000)
    assert [m.seq for m in messages] == list(range(1, 3001)), "every record once, in order"
    assert [unpack_observation(m.body).flow for m in messages[:2]] == ["f0", "f1"]
    assert frames <= 3000 / 20, f"batched at each wakeup, not a message a record: {frames} frames for 3000"
    router.send_multipart([peer, pack_ack(reporter.id, [(1, 3000)])])
    assert reporter.flush(5)
    reporter.close()


def test_acks_come_after_group_commits_and_every_record_is_on_disk(
    zmq_context: zmq.Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(fd)

    monkeypatch.setattr(services.store.os, "fsync", counted_fsync)
    endpoint = f"ipc://{tmp_path}/collector"
    with collector_on(zmq_context, endpoint, tmp_path / "r.bin") as (collector, _):
        reporter = Reporter(zmq_context, endpoint, "unit")
        with socket.socket() as sock:
            assert all(connection(sock, reporter, f"f{i}") for i in range(3000))
        assert reporter.flush(10), "every record acknowledged"
        assert reporter.acked == 3000 and len(collector.observations) == 3000
        assert 1 <= len(synced) < 3000 / 5, f"one fsync per batch, not per record: {len(synced)} for 3000"
        reporter.close()
    stored = list(Store(str(tmp_path / "r.bin")).replay())
    assert [(e.reporter, e.seq) for e in stored] == [(reporter.id, seq) for seq in range(1, 3001)]


def test_a_disk_that_refuses_stops_acks_and_the_records_are_stored_once_it_takes_them(
    zmq_context: zmq.Context, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = f"ipc://{tmp_path}/collector"
    with collector_on(zmq_context, endpoint, tmp_path / "r.bin") as (collector, query):
        fd = collector.store.fd
        saved = os.dup(fd)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)  # the store's descriptor now writes to a device that is always full: ENOSPC
        reporter = Reporter(zmq_context, endpoint, "unit", resend_after=0.3)
        with socket.socket() as sock:
            assert all(connection(sock, reporter, f"f{i}") for i in range(50))
        wait_for(lambda: collector.store.write_failures >= 2 or None, "the store to refuse twice")
        assert reporter.acked == 0 and reporter.unacked == 50, "nothing acknowledged while the disk refuses"
        assert not collector.observations, "nor indexed: it is not stored"
        assert query_collector(zmq_context, query, {"op": "ping"})["ok"], "the collector keeps serving"
        assert "No space left on device" in caplog.text
        os.dup2(saved, fd)  # space again
        os.close(full)
        os.close(saved)
        assert reporter.flush(10), "the resent records are stored and acknowledged"
        reporter.close()
        # in any order: a resend burst split by the last failed write comes back in two parts (also before the
        # pipeline: 1 run in 5 failed on the order alone with two CPU hogs beside it)
        assert sorted(str(o.flow) for o in collector.observations) == sorted(f"f{i}" for i in range(50))
    assert len(list(Store(str(tmp_path / "r.bin")).records())) == 50, "each stored once"


def test_records_a_killed_collector_never_stored_are_resent_and_those_it_stored_are_not_stored_twice(
    zmq_context: zmq.Context, tmp_path: Path
) -> None:
    endpoint, path = f"ipc://{tmp_path}/collector", tmp_path / "r.bin"
    reporter = Reporter(zmq_context, endpoint, "unit", resend_after=0.3)
    dying = zmq_context.socket(zmq.ROUTER)
    secure_server(dying)
    dying.bind(endpoint)
    with socket.socket() as sock:
        assert all(connection(sock, reporter, f"f{i}") for i in range(40))
    _, messages, _ = receive(dying, 40)
    first = Collector(Store(str(path)))
    assert first.ingest_batch(messages[:25]), "25 reach the disk"
    first.store.close()
    dying.close(linger=0)  # killed before any ack left, and 15 it had read are gone with it
    with collector_on(zmq_context, endpoint, path) as (collector, _):
        assert reporter.flush(10), "all 40 acknowledged by the restarted collector"
        assert [o.flow for o in collector.observations] == [f"f{i}" for i in range(40)]
        assert collector.report().duplicates >= 25, "the 25 already stored came again and were dropped"
    reporter.close()
    assert sorted(e.seq for e in Store(str(path)).replay()) == list(range(1, 41)), "each stored once"


def test_a_full_window_drops_without_waiting_and_the_gap_reaches_the_report(
    zmq_context: zmq.Context, tmp_path: Path
) -> None:
    endpoint = f"ipc://{tmp_path}/collector"  # nobody binds it until the test does: no port to race for
    reporter = Reporter(zmq_context, endpoint, "unit", window=5)
    with socket.socket() as sock:
        results = [connection(sock, reporter, f"f{i}") for i in range(20)]
    assert results == [True] * 5 + [False] * 15, "records drop only once the window is full"
    assert (reporter.sent, reporter.dropped) == (5, 15)
    with collector_on(zmq_context, endpoint, tmp_path / "r.bin") as (collector, _):
        assert reporter.flush(10)
        with socket.socket() as sock:
            assert connection(sock, reporter, "after")
        assert reporter.flush(10)
        report = collector.report()
    reporter.close()
    assert report.lost == {"unit": 15}
    assert report.gaps == (LostRange("unit", reporter.id.hex()[:8], 6, 20),)
    assert report.missing == {}, "the gap accounts for every number it skipped"
    assert [o.flow for o in collector.observations] == [f"f{i}" for i in range(5)] + ["after"]
    assert collector.observations[-1].drops == 15, "the next record that fits says how many were lost"
    assert f"LOST, reporter window full: unit 15\n  unit ({reporter.id.hex()[:8]}) records 6..20" in format_table(
        report
    )


def test_a_number_skipped_without_a_gap_notice_is_shown_missing(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    rid = bytes(range(16))
    body = pack_observation(Observation("svc", "h", "f", Role.CLIENT, Proto.TCP, Family.IPV4, Method.CONNECT))
    held = collector.ingest_batch([Message(MessageKind.RECORD, rid, seq, body) for seq in (1, 2, 5)])
    assert held == {rid: [1, 2, 5]}
    assert collector.report().missing == {"svc": 2}
    collector.store.close()


def test_reject_reports_who_sent_garbage(reporter: Reporter, live_collector: LiveCollector) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sender = ("::ffff:192.0.2.9", 4000, 0, 0)
        reporter.reject(sock, "recvmsg", sender, ValueError("datagram has no flow id"))
    [record] = live_collector.wait_for_records(lambda o: "rejected" in o.extra, what="rejection record")
    assert (record.method, record.role, record.flow) == ("recvmsg", Role.SERVER, None)
    assert record.remote == ("::ffff:192.0.2.9", 4000, 0, 0)
    assert record.extra == {"rejected": "datagram has no flow id"}


def padded(flow: str, size: int) -> Observation:
    """A client record whose packed form is exactly `size` bytes."""
    record = Observation("unit", "h", flow, Role.CLIENT, Proto.TCP, Family.IPV4, Method.CONNECT, extra={"pad": ""})
    pad = size - len(pack_observation(record))
    while len(pack_observation(replace(record, extra={"pad": "x" * pad}))) > size:
        pad -= 1  # the string's own length header grows with it
    record = replace(record, extra={"pad": "x" * pad})
    assert len(pack_observation(record)) == size
    return record


def test_the_largest_record_and_batch_get_through_curvezmq(
    live_collector: LiveCollector, zmq_context: zmq.Context, zmq_socket: ZmqSocket
) -> None:
    reporter = Reporter(zmq_context, live_collector.ingest, "unit")
    assert reporter.report(padded("largest", MAX_RECORD))
    assert reporter.flush(5), "stored: the size limit leaves room for CurveZMQ's own bytes"
    assert live_collector.records("largest")
    reporter.close()
    dealer = zmq_socket(zmq.DEALER)
    secure_client(dealer)
    dealer.connect(live_collector.ingest)
    items = [pack_item(MessageKind.RECORD, seq, pack_observation(padded(f"full-{seq}", 900))) for seq in range(1, 200)]
    start, end = next(batches(items))
    frame = pack_batch(os.urandom(16), items[start:end])
    assert MAX_MESSAGE - len(frame) < 1000, f"a full batch: {len(frame)} of {MAX_MESSAGE} bytes"
    dealer.send(frame)
    assert dealer.poll(5000), "acknowledged"
    assert unpack_ack(dealer.recv())[1] == [(1, end)]


def test_a_collector_that_stops_reading_holds_a_reporter_to_a_few_queued_batches(
    zmq_context: zmq.Context, zmq_socket: ZmqSocket
) -> None:
    router = zmq_socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)  # as the collector's, which then stalls (a long fsync, SIGSTOP)
    secure_server(router)
    router.bind("tcp://127.0.0.1:*")
    reporter = Reporter(zmq_context, router.getsockopt_string(zmq.LAST_ENDPOINT), "unit", resend_after=0.2)
    with socket.socket() as sock:
        assert all(connection(sock, reporter, f"f{i}") for i in range(5000))
    wait_for(lambda: reporter.resent, "resends of what the collector never acknowledged")

    def settled() -> bool:
        before = reporter.resent
        time.sleep(0.3)  # six resend rounds: each would queue the whole window again if ZeroMQ took it
        return reporter.resent == before

    wait_for(settled, "resends to stop once ZeroMQ's few queued batches are full", timeout=5)
    reporter.close(grace=0)
