"""The collector's HTTP side: the live page's static files and the JSON it polls, never in ingest's way.

  /                 the page (services/page: index.html, app.js, style.css; no CDN, no build step)
  /live.json        ?since=CURSOR&state=STATE: flows changed after the cursor, each with the "line"
                    of nodes it is drawn through; the picture and NAT checks when they changed; counts
  /flows.json       ?since=&last=&verdict=&service=&proto=&family=&scenario=&search=: as the "flows" query
  /report.json      the whole report (the same filters), as `socklab report --json` prints it
Flows come from the collector's index (joined only where records arrived since the last read); the
picture is rebuilt at most once a second. Connections are served by a bounded number of threads,
each with a socket timeout and a deadline for the whole connection (a client sending a byte every few
seconds cannot hold a thread); past the bound a request gets 503 at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from services.picture import Picture, build_picture
from shared.collector_protocol import FlowQuery
from shared.names import dumps_json

if TYPE_CHECKING:
    from services.collector import Collector

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).parent / "page"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
NUMBERS = ("since", "last")
PICTURE_EVERY = 1.0


def parse_filters(query_string: str) -> FlowQuery:
    """A URL's query string as a FlowQuery: repeated keys are alternatives; a bad value raises ValueError."""
    fields: dict[str, Any] = {}
    for key, values in parse_qs(query_string, strict_parsing=False).items():
        if key in NUMBERS:
            try:
                fields[key] = int(values[-1])
            except ValueError:
                raise ValueError(f"query {key!r} must be a number, not {values[-1]!r}") from None
        elif key == "search":
            fields[key] = values[-1]
        elif key != "state":
            fields[key] = values
    return FlowQuery.from_wire(fields)


class LiveView:
    """What the page polls, from the collector's index and a picture cached between changes."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._lock = threading.Lock()
        self._picture = Picture()
        self._wire: dict[str, Any] = self._picture.to_wire()
        self._version = 0
        self._built_for: tuple[int, int] = (-1, -1)
        self._built_at = 0.0

    def picture(self) -> tuple[Picture, int, dict[str, Any]]:
        """The current picture and its version, rebuilt when flows or topology changed, at most once a second."""
        with self._lock:
            now = time.monotonic()
            changes = (self.collector.index.cursor, self.collector.topology_changes)
            if changes != self._built_for and now - self._built_at >= PICTURE_EVERY:
                picture = build_picture(self.collector.hosts(), self.collector.index.flows())
                wire = picture.to_wire()
                if wire != self._wire:
                    self._version += 1
                self._picture, self._wire, self._built_for, self._built_at = picture, wire, changes, now
            return self._picture, self._version, self._wire

    def live(self, since: int, state: str) -> dict[str, Any]:
        """Flows changed after `since` with their lines; picture and NAT checks only when `state` is old."""
        picture, version, wire = self.picture()
        cursor, flows = self.collector.index.changed_since(since)
        counts = self.collector.report(FlowQuery(last=0))
        now_state = f"{version}.{len(counts.natchecks)}"
        answer: dict[str, Any] = {
            "cursor": cursor,
            "state": now_state,
            "flows": [{**flow.to_wire(), "line": picture.line(flow)} for flow in flows],
            "records": counts.records,
            "rejected": counts.rejected,
            "service_rejects": counts.service_rejects,
            "drops": counts.drops,
            "refused": counts.refused,
        }
        if state != now_state:
            answer["picture"] = wire
            answer["natchecks"] = [check.to_wire() for check in counts.natchecks]
        return answer


class PageHandler(BaseHTTPRequestHandler):
    """One HTTP request: a static file or a JSON answer."""

    view: LiveView
    timeout = 5

    def do_GET(self) -> None:
        """Answer a page file, or JSON built from the collector's index."""
        url = urlsplit(self.path)
        if url.path in STATIC:
            name, kind = STATIC[url.path]
            self.send_body((PAGE_DIR / name).read_bytes(), kind)
            return
        if url.path not in ("/live.json", "/flows.json", "/report.json"):
            self.send_error(404)
            return
        try:
            query = parse_filters(url.query)
            state = parse_qs(url.query).get("state", [""])[-1]
        except ValueError as exc:
            self.view.collector.bad_queries += 1
            log.warning("bad page query %r: %s", url.query, exc)
            self.send_error(400, str(exc))
            return
        collector = self.view.collector
        if url.path == "/live.json":
            answer = self.view.live(query.since, state)
        elif url.path == "/flows.json":
            cursor, flows = collector.changed_flows(query)
            answer = {"cursor": cursor, "flows": [flow.to_wire() for flow in flows]}
        else:
            answer = collector.report(query).to_wire()
        self.send_body(dumps_json(answer).encode(), "application/json")

    def send_body(self, body: bytes, kind: str) -> None:
        """A 200 answer that is never cached: the page is live."""
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep browser polling out of the collector's log unless debugging."""
        log.debug(format, *args)


class PageServer(ThreadingHTTPServer):
    """A threading HTTP server with a bound on its threads: past it, a request gets 503 at once."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[PageHandler], workers: int = 8, deadline: float = 30.0
    ) -> None:
        super().__init__(address, handler)
        self.deadline = deadline
        self.deadlines_hit = 0
        self.slots = threading.BoundedSemaphore(workers)
        self.serving = 0
        self._count = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the request to a thread if one is free; else say 503 and close."""
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one request, then give its slot back."""
        with self._count:
            self.serving += 1
        deadline = threading.Timer(self.deadline, self.cut, (request,))
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            with self._count:
                self.serving -= 1
            self.slots.release()

    def cut(self, request: socket.socket) -> None:
        """End a connection that outlived the deadline: its thread's reads and writes fail at once."""
        self.deadlines_hit += 1
        log.info("page connection past its %.0f s deadline: closed", self.deadline)
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_RDWR)


def serve_page(collector: Collector, host: str, port: int) -> PageServer:
    """Serve the live page from threads of its own; the ingest loop never waits on a browser."""
    handler = type("Page", (PageHandler,), {"view": LiveView(collector)})
    server = PageServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
