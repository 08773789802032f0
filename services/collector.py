"""collector: ingests every service's records over ZeroMQ, keeps them, joins flows, answers queries.

Sockets (the stable side binds):
  PULL on SOCKLAB_INGEST_PORT: msgpack records (shared.record); a bad one is counted, logged, kept out.
  REP  on SOCKLAB_QUERY_PORT:  msgpack queries {"op": "ping" | "report" | "records" | "flow"}.
Records of other kinds (the router's conntrack events, the Docker host's bindings) are stored the same
way and are the evidence each flow's path is traced from (services.paths).
Every accepted record is appended to an append-only store before it is indexed, so a restart
replays the store and loses nothing stored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import zmq

from services.flows import join_flows
from services.paths import Evidence
from services.report import render_page
from shared.collector_protocol import QueryOp, pack_reply, unpack_query
from shared.config import load_config
from shared.fields import optional, typed
from shared.names import json_name
from shared.readiness import mark_ready
from shared.record import ConntrackEvent, DockerBinding, Observation, Record, unpack_record
from shared.report_model import Flow, NatCheck, NatCheckResult, Report

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
        """Index one checked record by its kind, and the NAT check it carries."""
        if isinstance(record, ConntrackEvent):
            self.conntrack.append(record)
        elif isinstance(record, DockerBinding):
            self.bindings.append(record)
        else:
            self.observations.append(record)
        if natcheck is not None:
            self.natchecks.append(natcheck)

    def flows(self) -> list[Flow]:
        """Every flow joined, judged and traced through the evidence held."""
        return join_flows(self.observations, Evidence(self.conntrack, self.bindings))

    def report(self) -> Report:
        """Everything a reader needs: joined flows, per-method counts, rejects, drops and NAT checks."""
        drops: dict[str, int] = {}
        rejects: Counter[str] = Counter()
        for obs in self.observations:
            drops[obs.service] = max(drops.get(obs.service, 0), obs.drops)
            if "rejected" in obs.extra:
                rejects[obs.service] += 1
        return Report(
            flows=tuple(self.flows()),
            methods=dict(Counter(str(obs.method) for obs in self.observations)),
            records=len(self.observations),
            rejected=self.rejected,
            service_rejects=dict(rejects),
            drops=drops,
            natchecks=tuple(self.natchecks),
        )

    def answer(self, raw: bytes) -> dict[str, Any]:
        """Answer one query; a bad query gets an error reply, never silence."""
        try:
            op, query = unpack_query(raw)
            if op == QueryOp.PING:
                return {"ok": True, "records": len(self.observations)}
            if op == QueryOp.REPORT:
                return {"ok": True, **self.report().to_wire()}
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


class ReportPage(BaseHTTPRequestHandler):
    """The live page for people (/) and the same report as JSON (/report.json)."""

    collector: Collector

    def do_GET(self) -> None:
        """Answer / with the page and /report.json with the report."""
        report = self.collector.report()
        if self.path == "/report.json":
            body, kind = json.dumps(report.to_wire(), default=json_name).encode(), "application/json"
        elif self.path == "/":
            body, kind = render_page(report).encode(), "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep browser polling out of the collector's log unless debugging."""
        log.debug(format, *args)


def serve_page(collector: Collector, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the live page from a thread of its own; the ingest loop never waits on a browser."""
    handler = type("Page", (ReportPage,), {"collector": collector})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


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
