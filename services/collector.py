"""collector: ingests every service's records over ZeroMQ, keeps them, joins flows, answers queries.

Sockets (the stable side binds), both CurveZMQ servers that only the stack's keys may reach (shared.curve):
  ROUTER on SOCKLAB_INGEST_PORT: numbered records and gap notices, alone or batched, from reporters' DEALERs
                 (shared.delivery); a bad one is counted, logged, kept out. Each batch read is stored with one
                 write and one fsync, then acknowledged to its senders; a duplicate (reporter, seq) is acknowledged,
                 not stored.
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
from pathlib import Path
from typing import Any

import zmq

from services.flow_index import FlowIndex
from services.ledger import Ledger
from services.page_server import serve_page
from services.store import Entry, Store
from shared.collector_protocol import MAX_QUERY, FlowQuery, QueryOp, pack_reply, unpack_query
from shared.config import load_config
from shared.curve import make_keys, refusals, secure_server
from shared.delivery import (
    MAX_ACK_RANGES,
    MAX_MESSAGE,
    NO_REPORTER,
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

BATCH = 1000  # records and gaps read (a reporter's batch whole), stored with one fsync and acknowledged at a time
FREEZE_EVERY = 100_000  # records held between two freezes (Collector.freeze)


def read_record(raw: bytes) -> tuple[Record, NatCheck | None]:
    """Decode a record and check the extras the report reads, so no stored record can break a report."""
    record = unpack_record(raw)
    if not isinstance(record, Observation):
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
            for entry in self.store.replay():
                if self.ledger.has(entry.reporter, entry.seq):
                    self.ledger.duplicates += 1  # a write that failed after reaching the disk, then resent
                    continue
                try:
                    self.account(entry, *self.check(entry))
                except ValueError as exc:
                    log.warning("stored record skipped: %s", exc)
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

    def check(self, message: Message | Entry) -> tuple[Record | Gap, NatCheck | None]:
        """Decode and check a message's body: a record (and the NAT check it carries) or a gap notice."""
        if message.kind == MessageKind.GAP:
            return unpack_gap(message.body), None
        return read_record(message.body)

    def ingest_batch(self, messages: list[Message]) -> dict[bytes, list[int]] | None:
        """Check, store (one write, one fsync) and index a batch: per reporter, the numbers now held; None if the
        store failed, so nothing is acknowledged and the reporters keep and resend."""
        held: dict[bytes, list[int]] = defaultdict(list)
        batch: list[tuple[Message, Record | Gap, NatCheck | None]] = []
        pending: set[tuple[bytes, int]] = set()
        for message in messages:
            key = (message.reporter, message.seq)
            if key in pending or self.ledger.has(*key):
                self.ledger.duplicates += 1
                held[message.reporter].append(message.seq)
                continue
            try:
                batch.append((message, *self.check(message)))
            except ValueError as exc:
                self.refuse("record" if message.kind == MessageKind.RECORD else "gap", exc)
                held[message.reporter].append(message.seq)  # acknowledged all the same: a resend cannot mend it
                continue
            if message.reporter != NO_REPORTER:
                pending.add(key)
        entries = [Entry(m.kind, m.reporter, m.seq, m.body) for m, _, _ in batch]
        if entries and not self.store.append_batch(entries):
            return None
        for message, item, natcheck in batch:
            self.account(message, item, natcheck)
            held[message.reporter].append(message.seq)
        return held

    def account(self, message: Message | Entry, item: Record | Gap, natcheck: NatCheck | None) -> None:
        """Note a stored message in the ledger (only this thread writes it), and index it if it is a record."""
        if isinstance(item, Gap):
            self.ledger.add_gap(message.reporter, message.seq, item)
            log.warning(
                "%s dropped %d records (numbers %d..%d): window full", item.service, item.count, item.first, item.last
            )
            return
        self.ledger.add(message.reporter, message.seq, item.service)
        self.keep(item, natcheck)

    def freeze(self) -> None:
        """Collect cyclic garbage once, then freeze what survived (held records, never garbage), so the cyclic
        collector stops walking a million of them again and again while the collector ingests."""
        gc.collect()
        gc.freeze()
        self.unfrozen = 0

    def keep(self, record: Record, natcheck: NatCheck | None) -> None:
        """Index one checked record by its kind, its counts and the NAT check it carries; a host's new topology
        replaces its old."""
        self.unfrozen += 1
        if self.unfrozen >= FREEZE_EVERY:
            self.freeze()
        with self.lock:
            if isinstance(record, Topology):
                self.topologies.pop(record.host, None)
                self.topologies[record.host] = record
                self.topology_changes += 1
                return
            if isinstance(record, ConntrackEvent):
                self.conntrack.append(record)
            elif isinstance(record, DockerBinding):
                self.bindings.append(record)
            else:
                self.observations.append(record)
                self.methods[str(record.method)] += 1
                self.drops[record.service] = max(self.drops.get(record.service, 0), record.drops)
                if "rejected" in record.extra:  # with those its reporter refused past its rate and did not report
                    self.service_rejects[record.service] += 1 + record.extra.get("unreported", 0)
            if natcheck is not None:
                self.natchecks.append(natcheck)
        if isinstance(record, Observation):
            self.index.add(record)
        else:
            self.index.add_evidence(record)

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
    router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)  # a bigger message drops its sender's connection, unread
    rep.setsockopt(zmq.MAXMSGSIZE, MAX_QUERY)
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


def take_batch(collector: Collector, router: zmq.Socket) -> None:
    """Read what is waiting (up to BATCH records and gaps, a reporter's batch whole), store it with one fsync, and
    acknowledge to each sender what is held."""
    senders: dict[bytes, bytes] = {}  # reporter id -> the connection it last came from
    messages: list[Message] = []
    while len(messages) < BATCH:
        try:
            parts = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        try:
            if len(parts) != 2:
                raise ValueError(f"message has {len(parts) - 1} frames, not 1")
            found = unpack_messages(parts[1])
        except ValueError as exc:
            collector.refuse("message", exc)
            continue
        senders[found[0].reporter] = parts[0]
        messages += found
    held = collector.ingest_batch(messages)
    for reporter, seqs in (held or {}).items():
        ranges = to_ranges(seqs)
        for start in range(0, len(ranges), MAX_ACK_RANGES):
            router.send_multipart([senders[reporter], pack_ack(reporter, ranges[start : start + MAX_ACK_RANGES])])


def serve(collector: Collector, router: zmq.Socket, rep: zmq.Socket, stop: threading.Event) -> None:
    """Serve records and queries from one poller until `stop` is set, then close both sockets."""
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    try:
        while not stop.is_set():
            ready = dict(poller.poll(200))
            if router in ready:
                take_batch(collector, router)
            if rep in ready:
                rep.send(pack_reply(collector.answer(rep.recv())))
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
    collector = Collector(store)
    gc.freeze()  # what the replay kept lives as long as the collector: the cyclic GC need not scan it again
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
