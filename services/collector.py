"""collector: ingests every service's records over ZeroMQ, keeps them, joins flows, answers queries.

Sockets (the stable side binds), both CurveZMQ servers that only the stack's keys may reach (shared.curve):
  ROUTER on SOCKLAB_INGEST_PORT: numbered records and gap notices, alone or batched, from reporters' DEALERs
                 (shared.delivery); a bad one is counted, logged, kept out. Each batch read (all that waits, up
                 to BATCH records and gaps) is stored with one write and one fsync on a writer thread while the next
                 batch is read and checked, and acknowledged to its senders only once its fsync returned (Pipeline);
                 a duplicate (reporter, seq) is acknowledged, not stored.
  REP  on SOCKLAB_QUERY_PORT:  msgpack queries {"op": "ping" | "report" | "flows" | "records" | "flow"}.
Records of other kinds (the router's conntrack events, the Docker host's bindings) are stored the same
way and are the evidence each flow's path is traced from (services.paths).
Every accepted record is appended to an append-only store (services.store) before it is indexed or
acknowledged, so a restart replays the store and loses nothing acknowledged; a store that cannot write
stops acknowledging (the reporters keep and resend) and the collector keeps serving. Flows and counts
are indexed as records arrive (services.flow_index), so a query or a page costs what it shows. Topology
records (where each service runs) are kept per host, newest only, for the page's picture (services.picture).
"""

from __future__ import annotations

import argparse
import gc
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import zmq

from services.flow_index import FlowIndex
from services.ledger import Ledger
from services.page_server import serve_page
from services.store import Store
from shared.collector_protocol import MAX_QUERY, FlowQuery, QueryOp, pack_reply, unpack_query
from shared.config import load_config
from shared.curve import limit_message_size, make_keys, refusals, secure_server
from shared.delivery import (
    MAX_ACK_RANGES,
    MAX_MESSAGE,
    NO_REPORTER,
    RECEIVE_QUEUE,
    Gap,
    Message,
    MessageKind,
    pack_ack,
    to_ranges,
    unpack_gap,
    unpack_messages,
)
from shared.fields import optional, typed
from shared.readiness import mark_ready
from shared.record import ConntrackEvent, DockerBinding, Observation, Record, Topology, unpack_record
from shared.report_model import Flow, LostRange, NatCheck, NatCheckResult, Report, check_evidence

log = logging.getLogger(__name__)

BATCH = 4000  # records and gaps read at most (all that waits, a reporter's batch whole), stored with one fsync
FREEZE_EVERY = 10_000  # records held between two freezes (Collector.freeze)
REPLAY_CHUNK = 100  # stored entries checked and indexed at a time on replay


def read_record(raw: bytes) -> tuple[Record, NatCheck | None]:
    """Decode a record and check the extras the report reads, so no stored record can break a report."""
    record = unpack_record(raw)
    if not isinstance(record, Observation) or not record.extra:  # most records have no extras to check
        return record, None
    optional(record.extra, "scenario", str, "record extra")
    if (optional(record.extra, "unreported", int, "record extra") or 0) < 0:
        raise ValueError("record extra 'unreported' must not be negative")
    if "evidence" in record.extra:
        check_evidence(record.extra["evidence"], "record extra evidence")
    if "natcheck" not in record.extra:
        return record, None
    try:
        result = NatCheckResult.from_wire(record.extra["natcheck"])
    except ValueError as exc:
        raise ValueError(f"record extra natcheck: {exc}") from None
    return record, NatCheck(record.service, record.host, record.time, result)


@dataclass
class Batch:
    """Messages read and checked, not yet indexed: what to store, and what to acknowledge once it is stored."""

    entries: list[Message] = field(default_factory=list)  # to store, in the order read
    records: list[Record] = field(default_factory=list)  # the records among them, decoded
    natchecks: list[NatCheck | None] = field(default_factory=list)  # the NAT check each of those carries
    gaps: list[tuple[Message, Gap]] = field(default_factory=list)  # the gap notices among them, decoded
    stored: dict[bytes, list[int]] = field(default_factory=dict)  # per reporter, the numbers of its records stored
    services: dict[bytes, str] = field(default_factory=dict)  # per reporter, the service its first record names
    held: defaultdict[bytes, list[int]] = field(default_factory=lambda: defaultdict(list))  # per reporter, to ack
    pending: dict[bytes, set[int]] = field(default_factory=dict)  # per reporter, the numbers of its entries
    refused: list[tuple[str, ValueError]] = field(default_factory=list)  # counted and logged once stored
    read: int = 0  # messages read into it, whatever became of them
    duplicates: int = 0
    senders: dict[bytes, bytes] = field(default_factory=dict)  # reporter id -> the connection it last came from


def find_flow(flows: Iterable[Flow], wanted: str) -> Flow:
    """The flow with this id, or the only one it is a prefix of; ValueError saying why not."""
    flows = list(flows)
    exact = [flow for flow in flows if flow.flow == wanted]
    found = exact or ([flow for flow in flows if flow.flow.startswith(wanted)] if wanted else [])
    if not found:
        raise ValueError(f"no flow {wanted!r}")
    if len(found) > 1:
        raise ValueError(f"flow {wanted!r} is ambiguous: {', '.join(flow.flow for flow in found[:5])}")
    return found[0]


class Collector:
    """Records in memory and on disk, and the report built from them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.observations: list[Observation] = []
        self.conntrack: list[ConntrackEvent] = []
        self.bindings: list[DockerBinding] = []
        self.natchecks: list[NatCheck] = []
        self.index = FlowIndex()
        self.topologies: dict[str, Topology] = {}
        self.topology_changes = 0
        self.lock = threading.Lock()  # the page's threads read what the ingest loop writes
        self.methods: Counter[str] = Counter()
        self.drops: dict[str, int] = {}
        self.service_rejects: Counter[str] = Counter()
        self.rejected = 0
        self.bad_queries = 0
        self.ledger = Ledger()
        self.unfrozen = 0
        self.replay()

    def replay(self) -> None:
        """Index everything stored (the cyclic GC paused meanwhile: it would rescan all that is kept, many times)."""
        gc.disable()
        try:
            entries = self.store.replay()
            while (batch := self.prepare(islice(entries, REPLAY_CHUNK), retain=False)).read:
                for _, reason in batch.refused:
                    log.warning("stored record skipped: %s", reason)
                batch.refused.clear()  # stored long ago: not this run's rejects
                self.commit(batch)
            self.freeze()
        finally:
            gc.enable()
        log.info(
            "replayed %d records, %d conntrack events, %d bindings, %d reporters from %s",
            len(self.observations),
            len(self.conntrack),
            len(self.bindings),
            len(self.ledger.accounts),
            self.store.path,
        )

    def ingest(self, raw: bytes) -> bool:
        """Check, store and index one unnumbered record; False when it was rejected or could not be stored."""
        rejected = self.rejected
        held = self.ingest_batch([Message(MessageKind.RECORD, NO_REPORTER, 0, raw)])
        return held is not None and self.rejected == rejected

    def refuse(self, what: str, reason: Exception) -> None:
        """Count and log a message that is kept out."""
        self.rejected += 1
        log.warning("rejected %s #%d: %s", what, self.rejected, reason)

    def check(self, message: Message) -> tuple[Record | Gap, NatCheck | None]:
        """Decode and check a message's body: a record (and the NAT check it carries) or a gap notice."""
        if message.kind == MessageKind.GAP:
            return unpack_gap(message.body), None
        return read_record(message.body)

    def prepare(self, messages: Iterable[Message], before: Batch | None = None, retain: bool = True) -> Batch:
        """Check a batch and drop what is already held (stored, in this batch, or in `before`, still being stored):
        the part that needs no disk, done while the batch before is written (`retain` False: a replay's, which
        keeps no message to write, so none outlives its check)."""
        batch = Batch()
        held, pending, stored, ledger = batch.held, batch.pending, batch.stored, self.ledger
        entries, records, natchecks = batch.entries, batch.records, batch.natchecks
        earlier = before.pending if before is not None else {}
        flow_ids: dict[str, str] = {}
        read = 0
        for message in messages:  # nothing made per message outlives it but what is kept: held records stay dense
            read += 1
            reporter, seq = message.reporter, message.seq
            mine = pending.get(reporter)
            if (mine is not None and seq in mine) or seq in earlier.get(reporter, ()) or ledger.has(reporter, seq):
                batch.duplicates += 1
                held[reporter].append(seq)
                continue
            try:
                item, natcheck = self.check(message)
            except ValueError as exc:
                what = "record" if message.kind == MessageKind.RECORD else "gap"
                batch.refused.append((what, exc.with_traceback(None)))  # its frame holds the batch: no cycle
                held[reporter].append(seq)  # acknowledged all the same: a resend cannot mend it
                continue
            if reporter != NO_REPORTER:
                if mine is None:
                    mine = pending[reporter] = set()
                mine.add(seq)
            if retain:
                entries.append(message)
            if isinstance(item, Gap):
                batch.gaps.append((message, item))
                continue
            if isinstance(item, Observation) and item.flow is not None:
                # one copy of a flow's id at once, the others freed before the next record is decoded, so the ids
                # kept lie dense (the index shares them across batches): a search over 10⁶ flows reads them all
                item.flow = flow_ids.setdefault(item.flow, item.flow)
            records.append(item)
            natchecks.append(natcheck)
            numbers = stored.get(reporter)
            if numbers is None:
                numbers = stored[reporter] = []
                batch.services[reporter] = item.service
            numbers.append(seq)
        batch.read = read
        return batch

    def commit(self, batch: Batch) -> dict[bytes, list[int]]:
        """Count, note and index a batch once it is on disk; per reporter, the numbers it may acknowledge now."""
        for what, reason in batch.refused:
            self.refuse(what, reason)
        self.ledger.duplicates += batch.duplicates
        for message, gap in batch.gaps:
            self.ledger.add_gap(message.reporter, message.seq, gap)
            batch.held[message.reporter].append(message.seq)
            first, last = gap.first, gap.last
            log.warning("%s dropped %d records (numbers %d..%d): window full", gap.service, gap.count, first, last)
        for reporter, seqs in batch.stored.items():
            self.ledger.add(reporter, seqs, batch.services[reporter])
            batch.held[reporter] += seqs
        self.keep(batch.records, batch.natchecks)
        return batch.held

    def ingest_batch(self, messages: list[Message]) -> dict[bytes, list[int]] | None:
        """Check, store (one write, one fsync) and index a batch: per reporter, the numbers now held; None if the
        store failed, so nothing is acknowledged and the reporters keep and resend."""
        batch = self.prepare(messages)
        if batch.entries and not self.store.append_batch(batch.entries):
            return None
        return self.commit(batch)

    def freeze(self) -> None:
        """Collect cyclic garbage once, then freeze what survived (held records, never garbage), so the cyclic
        collector stops walking a million of them again and again while the collector ingests."""
        gc.collect()
        gc.freeze()
        self.unfrozen = 0

    def keep(self, records: list[Record], natchecks: list[NatCheck | None]) -> None:
        """Index checked records by kind, counts and the NAT checks they carry (one lock a batch, not a record); a
        host's new topology replaces its old."""
        observations: list[Observation] = []
        evidence: list[ConntrackEvent | DockerBinding] = []
        methods, drops, observed = self.methods, self.drops, observations.append
        with self.lock:
            for record, natcheck in zip(records, natchecks, strict=True):
                if isinstance(record, Observation):
                    observed(record)
                    methods[str(record.method)] += 1
                    if record.drops > drops.get(record.service, -1):
                        drops[record.service] = record.drops
                    if record.extra and "rejected" in record.extra:  # with those refused past its rate, unreported
                        self.service_rejects[record.service] += 1 + record.extra.get("unreported", 0)
                elif isinstance(record, Topology):
                    self.topologies.pop(record.host, None)
                    self.topologies[record.host] = record
                    self.topology_changes += 1
                    continue
                else:
                    if isinstance(record, ConntrackEvent):
                        self.conntrack.append(record)
                    else:
                        self.bindings.append(record)
                    evidence.append(record)
                if natcheck is not None:
                    self.natchecks.append(natcheck)
            self.observations += observations
        self.index.add(observations)
        for record in evidence:
            self.index.add_evidence(record)
        self.unfrozen += len(records)
        if self.unfrozen >= FREEZE_EVERY and gc.isenabled():  # a replay, which pauses the GC, freezes once at its end
            self.freeze()

    def flows(self) -> list[Flow]:
        """Every flow joined, judged and traced through the evidence held (from the index: only changes are joined)."""
        return self.index.flows()

    def report(self, query: FlowQuery | None = None) -> Report:
        """Everything a reader needs: joined flows (those the query selects), counts, rejects, drops, NAT checks."""
        flows = self.index.select(query) if query else self.index.flows()
        with self.lock:
            return Report(
                flows=tuple(flows),
                methods=dict(self.methods),
                records=len(self.observations),
                rejected=self.rejected,
                service_rejects=dict(self.service_rejects),
                drops=dict(self.drops),
                natchecks=tuple(self.natchecks),
                lost=dict(self.ledger.lost),
                gaps=tuple(
                    LostRange(gap.service, reporter.hex()[:8], gap.first, gap.last)
                    for reporter, gap in list(self.ledger.gaps)
                ),
                missing=self.ledger.missing(),
                duplicates=self.ledger.duplicates,
                refused=refusals(),
            )

    def hosts(self) -> list[Topology]:
        """The newest topology each host reported, for the page's picture."""
        with self.lock:
            return list(self.topologies.values())

    def changed_flows(self, query: FlowQuery) -> tuple[int, list[Flow]]:
        """The flows the query selects among those changed after its cursor, and the cursor to ask from next."""
        cursor, changed = self.index.changed_since(query.since)
        return cursor, query.select(changed)

    def answer(self, raw: bytes) -> dict[str, Any]:
        """Answer one query; a bad query gets an error reply, never silence."""
        try:
            op, query = unpack_query(raw)
            if op == QueryOp.PING:
                return {"ok": True, "records": len(self.observations)}
            if op == QueryOp.REPORT:
                return {"ok": True, **self.report(FlowQuery.from_wire(query)).to_wire()}
            if op == QueryOp.FLOWS:
                cursor, flows = self.changed_flows(FlowQuery.from_wire(query))
                return {"ok": True, "cursor": cursor, "flows": [flow.to_wire() for flow in flows]}
            if op == QueryOp.FLOW:
                wanted = typed(query, "flow", str, "flow query")
                return {"ok": True, "flow": find_flow(self.flows(), wanted).to_wire()}
            flow = query.get("flow")
            records = [o for o in self.observations if flow is None or o.flow == flow]
            return {"ok": True, "records": [o.to_wire() for o in records]}
        except ValueError as exc:
            self.bad_queries += 1
            log.warning("bad query: %s", exc)
            return {"ok": False, "error": str(exc)}


def bind(context: zmq.Context, ingest: str, query: str) -> tuple[zmq.Socket, zmq.Socket]:
    """Bind ROUTER for reporters and REP for queries; an endpoint ending in :* takes a port no one holds."""
    router = context.socket(zmq.ROUTER)
    rep = context.socket(zmq.REP)
    limit_message_size(router, MAX_MESSAGE)  # a bigger message drops its sender's connection, unread
    router.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
    limit_message_size(rep, MAX_QUERY)
    try:
        secure_server(router)
        secure_server(rep)
        router.bind(ingest)
        rep.bind(query)
    except zmq.ZMQError:
        router.close(linger=0)
        rep.close(linger=0)
        raise
    return router, rep


def read_batch(collector: Collector, router: zmq.Socket, before: Batch | None = None) -> Batch:
    """Read what is waiting (up to BATCH records and gaps, a reporter's batch whole) and check it against what is
    held and `before` (still being stored)."""
    senders: dict[bytes, bytes] = {}
    messages: list[Message] = []
    recv, more = router.recv, router.get  # frame by frame: recv_multipart costs twice as much a message
    while len(messages) < BATCH:
        try:
            sender = recv(zmq.NOBLOCK)
        except zmq.Again:
            break
        frame = recv()  # a message arrives whole: after the ROUTER's identity frame, at least one more is there
        frames = 1
        while more(zmq.RCVMORE):
            recv()
            frames += 1
        try:
            if frames != 1:
                raise ValueError(f"message has {frames} frames, not 1")
            found = unpack_messages(frame)
        except ValueError as exc:
            collector.refuse("message", exc)
            continue
        senders[found[0].reporter] = sender
        messages += found
    batch = collector.prepare(messages, before)
    batch.senders = senders
    return batch


def acknowledge(router: zmq.Socket, senders: dict[bytes, bytes], held: dict[bytes, list[int]]) -> None:
    """Tell each sender which of its numbers are held."""
    for reporter, seqs in held.items():
        ranges = to_ranges(seqs)
        for start in range(0, len(ranges), MAX_ACK_RANGES):
            router.send_multipart([senders[reporter], pack_ack(reporter, ranges[start : start + MAX_ACK_RANGES])])


class Pipeline:
    """The ingest loop's batches, one stored on a writer thread (its write and fsync) while the next is read and
    checked; a batch is indexed and acknowledged only once its fsync returned, and after a failed write, neither it
    nor the batch checked meanwhile is: their senders keep them and resend."""

    def __init__(self, collector: Collector, router: zmq.Socket) -> None:
        self.collector = collector
        self.router = router
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._writing: tuple[Future[bool], Batch] | None = None

    @property
    def busy(self) -> bool:
        """Whether a batch is being stored."""
        return self._writing is not None

    def take(self) -> None:
        """Read and check the next batch while the last is stored; then store it, and index and acknowledge the last."""
        batch = read_batch(self.collector, self.router, self._writing[1] if self._writing else None)
        last, stored = self._wait()
        if not stored:
            log.warning("%d messages read while the store failed are dropped unacknowledged", len(batch.entries))
            return
        if batch.entries:
            future = self._writer.submit(self.collector.store.append_batch, batch.entries)
        else:
            future = Future()
            future.set_result(True)  # duplicates and refusals only: acknowledged in turn, after the batch before
        self._writing = (future, batch)
        if last is not None:
            acknowledge(self.router, last.senders, self.collector.commit(last))

    def _wait(self) -> tuple[Batch | None, bool]:
        """Wait for the batch being stored (None if there was none), and say whether its write and fsync succeeded."""
        if self._writing is None:
            return None, True
        future, batch = self._writing
        self._writing = None
        return batch, future.result()

    def finish(self) -> None:
        """Wait for the batch being stored, then index and acknowledge it if it reached the disk."""
        last, stored = self._wait()
        if last is not None and stored:
            acknowledge(self.router, last.senders, self.collector.commit(last))

    def close(self) -> None:
        """Finish the batch being stored and stop the writer thread."""
        try:
            self.finish()
        finally:
            self._writer.shutdown()


def serve(collector: Collector, router: zmq.Socket, rep: zmq.Socket, stop: threading.Event) -> None:
    """Serve records and queries from one poller until `stop` is set, then close both sockets."""
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    pipeline = Pipeline(collector, router)
    try:
        while not stop.is_set():
            ready = dict(poller.poll(0 if pipeline.busy else 200))
            if router in ready:
                pipeline.take()
            elif pipeline.busy:
                pipeline.finish()  # nothing more waiting: no reason to hold the last batch's acks back
            if rep in ready:
                rep.send(pack_reply(collector.answer(rep.recv())))
    finally:
        try:
            pipeline.close()
        finally:
            router.close(linger=0)
            rep.close(linger=0)


def main(argv: list[str] | None = None) -> None:
    """Run the collector."""
    cfg = load_config("collector")
    parser = argparse.ArgumentParser(prog="socklab collector", description=main.__doc__)
    parser.add_argument("--store", default=cfg.store)
    args = parser.parse_args(argv)
    make_keys(Path(cfg.keys))
    store = Store(args.store)
    collector = Collector(store)  # its replay ends by freezing what it kept: the cyclic GC need not scan it again
    context = zmq.Context()
    serve_page(collector, "", cfg.http_port)
    log.info("collector ingesting on %d, answering on %d, page on %d", cfg.ingest_port, cfg.query_port, cfg.http_port)
    try:
        sockets = bind(context, f"tcp://*:{cfg.ingest_port}", f"tcp://*:{cfg.query_port}")
        mark_ready(cfg.service, "ingest and query sockets bound")
        serve(collector, *sockets, threading.Event())
    finally:
        store.close()
        context.term()
