"""collector: ingests every service's records over ZeroMQ, keeps them, joins flows, answers queries.

Sockets (the stable side binds):
  PULL on SOCKLAB_INGEST_PORT: msgpack records (shared.record); a bad one is counted, logged, kept out.
  REP  on SOCKLAB_QUERY_PORT:  msgpack queries {"op": "ping" | "report" | "flows" | "records" | "flow"}.
Records of other kinds (the router's conntrack events, the Docker host's bindings) are stored the same
way and are the evidence each flow's path is traced from (services.paths).
Every accepted record is appended to an append-only store before it is indexed, so a restart
replays the store and loses nothing stored. Flows and counts are indexed as records arrive
(services.flow_index), so a query or a page costs what it shows. Topology records (where each service
runs) are kept per host, newest only, for the page's picture (services.picture).
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

from services.flow_index import FlowIndex
from services.page_server import serve_page
from shared.collector_protocol import FlowQuery, QueryOp, pack_reply, unpack_query
from shared.config import load_config
from shared.fields import optional, typed
from shared.readiness import mark_ready
from shared.record import ConntrackEvent, DockerBinding, Observation, Record, Topology, unpack_record
from shared.report_model import Flow, NatCheck, NatCheckResult, Report, check_evidence

log = logging.getLogger(__name__)

STORE_HEADER = struct.Struct("!I")


class Store:
    """An append-only file of length-prefixed records."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the store's life

    def append(self, record: bytes) -> None:
        """Write one record through to the file."""
        self._file.write(STORE_HEADER.pack(len(record)) + record)
        self._file.flush()

    def replay(self) -> Iterator[bytes]:
        """Yield every whole record stored; a torn tail from a crash is reported and cut off."""
        with open(self.path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + STORE_HEADER.size <= len(data):
            (length,) = STORE_HEADER.unpack_from(data, pos)
            end = pos + STORE_HEADER.size + length
            if end > len(data):
                break
            yield data[pos + STORE_HEADER.size : end]
            pos = end
        if pos != len(data):
            log.warning("store %s has a torn tail of %d bytes, cut off", self.path, len(data) - pos)
            os.truncate(self.path, pos)  # else records appended after it would be swallowed by its length

    def close(self) -> None:
        """Close the store's file."""
        self._file.close()


def read_record(raw: bytes) -> tuple[Record, NatCheck | None]:
    """Decode a record and check the extras the report reads, so no stored record can break a report."""
    record = unpack_record(raw)
    if not isinstance(record, Observation):
        return record, None
    optional(record.extra, "scenario", str, "record extra")
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
        for raw in store.replay():
            try:
                self.keep(*read_record(raw))
            except ValueError as exc:
                log.warning("stored record skipped: %s", exc)
        log.info(
            "replayed %d records, %d conntrack events, %d bindings from %s",
            len(self.observations),
            len(self.conntrack),
            len(self.bindings),
            store.path,
        )

    def ingest(self, raw: bytes) -> bool:
        """Check, store and index one record; False when it was rejected."""
        try:
            record, natcheck = read_record(raw)
        except ValueError as exc:
            self.rejected += 1
            log.warning("rejected record #%d: %s", self.rejected, exc)
            return False
        self.store.append(raw)
        self.keep(record, natcheck)
        return True

    def keep(self, record: Record, natcheck: NatCheck | None) -> None:
        """Index one checked record by its kind, its counts and the NAT check it carries; a host's new topology
        replaces its old."""
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
                if "rejected" in record.extra:
                    self.service_rejects[record.service] += 1
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
        flows = self.index.flows()
        with self.lock:
            return Report(
                flows=tuple(query.select(flows) if query else flows),
                methods=dict(self.methods),
                records=len(self.observations),
                rejected=self.rejected,
                service_rejects=dict(self.service_rejects),
                drops=dict(self.drops),
                natchecks=tuple(self.natchecks),
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
    """Bind PULL for records and REP for queries; an endpoint ending in :* takes a port no one holds."""
    pull = context.socket(zmq.PULL)
    rep = context.socket(zmq.REP)
    try:
        pull.bind(ingest)
        rep.bind(query)
    except zmq.ZMQError:
        pull.close(linger=0)
        rep.close(linger=0)
        raise
    return pull, rep


def serve(collector: Collector, pull: zmq.Socket, rep: zmq.Socket, stop: threading.Event) -> None:
    """Serve records and queries from one poller until `stop` is set, then close both sockets."""
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(rep, zmq.POLLIN)
    try:
        while not stop.is_set():
            ready = dict(poller.poll(200))
            if pull in ready:
                for _ in range(1000):
                    try:
                        collector.ingest(pull.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if rep in ready:
                rep.send(pack_reply(collector.answer(rep.recv())))
    finally:
        pull.close(linger=0)
        rep.close(linger=0)


def main(argv: list[str] | None = None) -> None:
    """Run the collector."""
    cfg = load_config("collector")
    parser = argparse.ArgumentParser(prog="socklab collector", description=main.__doc__)
    parser.add_argument("--store", default=cfg.store)
    args = parser.parse_args(argv)
    store = Store(args.store)
    collector = Collector(store)
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
