"""Ingest: records stored per second by the real collector vs a bare PUSH -> PULL + msgpack.unpackb ceiling,
vs the same collector without CurveZMQ (what curve costs), and vs the ceiling over CurveZMQ too (what is left).

Both receivers run in a child process and get the same frames from this process, sent blocking so
nothing is dropped on the way: the ceiling from a PUSH socket, the collector as a reporter speaks to
it from a DEALER (shared.delivery). The frames are what a reporter's courier sends at full load: its
numbered records packed into BATCH messages as large as the collector takes (a courier sends all it
finds queued at a wake-up), each item then read by the ceiling with one struct and one unpackb; the
"one record a message" pair sends each record as its own RECORD message, as reporters did before
batches. The collector is the real one (bind, serve: each batch checked while the one before is
stored with one write and one fsync, then indexed and acknowledged); the run ends when its ping query
counts every record stored. What it did not store by then is counted as lost. The collector and its
DEALER speak CurveZMQ as in a stack (bench/__main__ makes the keys); the plain variant runs the same
code with the one-line hooks (secure_server, secure_client) left out.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
import uuid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import msgpack
import zmq

from bench.common import Sample, cpu_seconds, flow_records, free_port, interleave, run_collector, save, summarize
from shared.collector_protocol import QueryOp, pack_query, query_collector
from shared.curve import secure_client, secure_server
from shared.delivery import HEADER, ITEM, MessageKind, batches, pack_batch, pack_item, pack_message

DEADLINE = 60.0
COLLECTOR, RAW = "collector (check, store, index)", "raw PUSH->PULL + unpackb"
PLAIN = "same collector, no CurveZMQ"
RAW_CURVE = "raw PUSH->PULL + unpackb, CurveZMQ"
ONE, RAW_ONE = "collector, one record a message", "raw PUSH->PULL + unpackb, one record a message"


def run_raw(port: int, count: int, done: Queue[Any], stop: Event, curve: bool = False) -> None:
    """The ceiling: receive and unpack every record, nothing else (with `curve`, over CurveZMQ as the collector)."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    if curve:
        secure_server(pull)
    pull.bind(f"tcp://127.0.0.1:{port}")
    done.put("ready")
    got = 0
    while got < count:
        got += unpack_bodies(pull.recv())
    done.put(got)
    stop.wait(DEADLINE)
    pull.close(linger=0)
    context.term()


def unpack_bodies(frame: bytes) -> int:
    """The ceiling's whole work on a frame: unpackb each record in it (a BATCH's items found by their lengths);
    how many there were."""
    kind, _reporter, count = HEADER.unpack_from(frame)
    if kind != MessageKind.BATCH:
        msgpack.unpackb(frame[HEADER.size :])
        return 1
    at = HEADER.size
    for _ in range(count):
        length = ITEM.unpack_from(frame, at)[2]
        at += ITEM.size
        msgpack.unpackb(frame[at : at + length])
        at += length
    return count


def connect(context: zmq.Context, endpoint: str, kind: int, curve: bool = False) -> zmq.Socket:
    """The sending socket, with room for a whole round's messages."""
    sender = context.socket(kind)
    if curve:
        secure_client(sender)
    sender.setsockopt(zmq.SNDHWM, 1_000_000)
    sender.connect(endpoint)
    return sender


def send_all(sender: zmq.Socket, messages: list[bytes]) -> None:
    """Send every message, waiting when the queue is full, so none is dropped on the sending side; the socket
    stays open until the receiver has them all (closing a TCP connection with unread acks resets it, losing
    what it had not yet delivered)."""
    for raw in messages:
        sender.send(raw, copy=False)


def measure_raw(records: list[bytes], frames: list[bytes], curve: bool = False) -> Sample:
    port, stop = free_port(), mp.Event()
    done: Queue[Any] = mp.Queue()
    child = mp.Process(target=run_raw, args=(port, len(records), done, stop, curve))
    child.start()
    done.get(timeout=10)
    context = zmq.Context()
    cpu0, start = cpu_seconds(child.pid or 0), time.perf_counter()
    push = connect(context, f"tcp://127.0.0.1:{port}", zmq.PUSH, curve)
    sender = threading.Thread(target=send_all, args=(push, frames))
    sender.start()
    got = done.get(timeout=DEADLINE)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(child.pid or 0) - cpu0
    stop.set()
    sender.join()
    push.close(linger=0)
    child.join(10)
    context.term()
    return Sample(got / elapsed, cpu / got * 1e6, len(records) - got)


def numbered(records: list[bytes], batched: bool = True) -> list[bytes]:
    """The records as one reporter's frames: BATCH messages as full as the collector takes, or one RECORD each."""
    reporter = uuid.uuid4().bytes
    if not batched:
        return [pack_message(MessageKind.RECORD, reporter, seq, raw) for seq, raw in enumerate(records, 1)]
    items = [pack_item(MessageKind.RECORD, seq, raw) for seq, raw in enumerate(records, 1)]
    return [pack_batch(reporter, items[start:end]) for start, end in batches(items)]


def count_stored(context: zmq.Context, endpoint: str, curve: bool, timeout: float) -> int:
    """The collector's count of stored records (its ping), asked with CurveZMQ or, of the plain one, without."""
    if curve:
        return int(query_collector(context, endpoint, {"op": "ping"}, timeout=timeout)["records"])
    req = connect(context, endpoint, zmq.REQ)
    req.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    try:
        req.send(pack_query(QueryOp.PING))
        return int(msgpack.unpackb(req.recv())["records"])
    finally:
        req.close(linger=0)


def measure_collector(records: list[bytes], messages: list[bytes], curve: bool = True) -> Sample:
    port, query, stop = free_port(), free_port(), mp.Event()
    ingest, ask = f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{query}"
    child = mp.Process(target=run_collector, args=(ingest, ask, stop, curve))
    child.start()
    context = zmq.Context()
    count_stored(context, ask, curve, 10)
    cpu0, start = cpu_seconds(child.pid or 0), time.perf_counter()
    dealer = connect(context, ingest, zmq.DEALER, curve)
    sender = threading.Thread(target=send_all, args=(dealer, messages))
    sender.start()
    stored = 0
    while stored < len(records) and time.perf_counter() - start < DEADLINE:
        time.sleep(0.01)
        stored = count_stored(context, ask, curve, DEADLINE)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(child.pid or 0) - cpu0
    stop.set()
    sender.join()
    dealer.close(linger=0)
    child.join(10)
    context.term()
    return Sample(stored / elapsed, cpu / max(stored, 1) * 1e6, len(records) - stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    records = flow_records(args.records)
    frames, singles = numbered(records), numbered(records, batched=False)
    variants = {
        COLLECTOR: lambda: measure_collector(records, frames),
        RAW: lambda: measure_raw(records, frames),
        PLAIN: lambda: measure_collector(records, frames, curve=False),
        RAW_CURVE: lambda: measure_raw(records, frames, curve=True),
        ONE: lambda: measure_collector(records, singles),
        RAW_ONE: lambda: measure_raw(records, singles),
    }
    runs = interleave(variants, args.rounds)
    print(f"\n{len(frames):,} BATCH messages of {len(records) // len(frames):,} records on average")
    summary = summarize(
        f"ingest: {args.records:,} records a round, batched as reporters send",
        "records/s",
        {k: runs[k] for k in (COLLECTOR, RAW)},
        RAW,
    )
    one = summarize("ingest, one record a message", "records/s", {k: runs[k] for k in (ONE, RAW_ONE)}, RAW_ONE)
    curve = summarize("what CurveZMQ costs the collector", "records/s", {k: runs[k] for k in (COLLECTOR, PLAIN)}, PLAIN)
    secured = summarize(
        "the collector vs the ceiling, both over CurveZMQ",
        "records/s",
        {k: runs[k] for k in (COLLECTOR, RAW_CURVE)},
        RAW_CURVE,
    )
    save(
        {
            "ingest_ratio": summary[COLLECTOR]["ratio"],
            "ingest": {"records": args.records, "rounds": args.rounds, "batch": len(records) // len(frames), **summary},
            "ingest_one_a_message": one,
            "curve_ratio": curve[COLLECTOR]["ratio"],
            "curve_cpu_ratio": curve[COLLECTOR]["cpu_ratio"],
            "ingest_vs_curve_ceiling": secured,
        }
    )


if __name__ == "__main__":
    main()
