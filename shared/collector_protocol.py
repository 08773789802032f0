"""The collector's query protocol and its client: the one module the collector, `socklab report`,
health checks and tests import to ask the collector anything.

Records go in over ZeroMQ DEALER -> ROUTER, numbered and acknowledged (shared.delivery, shared.reporter).
Queries are msgpack maps on REQ -> REP, one reply per query, always a map with "ok"; like records, only
the stack's keys may ask (CurveZMQ, shared.curve), since a report holds every name the stack saw:
  {"op": "ping"}                    -> {"ok": true, "records": n}
  {"op": "report", ...filters}      -> {"ok": true, ...the report (shared.report_model)...}
  {"op": "flows", "since": cursor, ...filters}
                                    -> {"ok": true, "cursor": n, "flows": [flow maps]}
  {"op": "records", "flow": id|nil} -> {"ok": true, "records": [record maps]}
  {"op": "flow", "flow": id}        -> {"ok": true, "flow": one flow of the report}; an id's unique
                                       prefix will do; none or several: {"ok": false, "error"}
A query it cannot answer gets {"ok": false, "error"}.

Filters (FlowQuery, all optional): "verdict", "service", "proto", "family", "scenario" (each a word
or a list of words: a flow matches one of them; "service" matches either end), "search" (text found,
case folded, in the flow id, scenario, services, hosts, names or verdict), "last" (only the newest n
of the matching flows). Every flow carries a cursor, the collector's count of indexed changes when it
last changed; "flows" answers the matching flows that changed after "since", oldest first, and the
cursor to ask from next, so a follower transfers only what is new.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import msgpack
import zmq

from shared.curve import limit_message_size, secure_client
from shared.fields import optional
from shared.framing import unpack_map
from shared.names import format_name
from shared.report_model import Flow

DEFAULT_INGEST_PORT = 5555
DEFAULT_QUERY_PORT = 5556
MAX_QUERY = 64 * 1024  # bytes: the collector's query socket refuses bigger messages (ZMQ_MAXMSGSIZE)
MAX_REPLY = 256 * 1024 * 1024  # a whole report of 10^6 flows fits; a client refuses more


class QueryOp(StrEnum):
    """What a query asks the collector for."""

    PING = "ping"
    REPORT = "report"
    FLOWS = "flows"
    RECORDS = "records"
    FLOW = "flow"


def pack_query(op: QueryOp, **fields: Any) -> bytes:
    """Encode one query."""
    return msgpack.packb({"op": str(op), **fields}, use_bin_type=True)


def unpack_query(data: bytes) -> tuple[QueryOp, dict[str, Any]]:
    """Check one query: a msgpack map whose op is known."""
    query = unpack_map(data, "query")
    op = query.get("op")
    if not isinstance(op, str) or op not in QueryOp.__members__.values():
        raise ValueError(f"unknown op {op!r}")
    return QueryOp(op), query


def words(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    """A filter's accepted words: missing or nil for any, one word, or a list of words."""
    value = obj.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(word, str) for word in value):
        return tuple(value)
    raise ValueError(f"query {key!r} must be a word or a list of words, not {value!r}")


@dataclass(frozen=True)
class FlowQuery:
    """Which flows a reader wants: the filters, how many of the newest, and from which cursor on."""

    verdict: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    proto: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    scenario: tuple[str, ...] = ()
    search: str = ""
    last: int | None = None
    since: int = 0

    def matches(self, flow: Flow, text: str | None = None) -> bool:
        """Whether a flow passes every filter: one accepted word per filter, and the search text (`text`: the
        flow's searchable_text, when the caller keeps it)."""
        ends = [end for end in (flow.client, flow.server) if end is not None]
        return (
            (not self.verdict or str(flow.verdict) in self.verdict)
            and (not self.service or any(end.service in self.service for end in ends))
            and (not self.proto or str(flow.proto) in self.proto)
            and (not self.family or str(flow.family) in self.family)
            and (not self.scenario or (flow.scenario or "") in self.scenario)
            and (not self.search or self.search.casefold() in (searchable_text(flow) if text is None else text))
        )

    def select(self, flows: list[Flow]) -> list[Flow]:
        """The matching flows, cut to the newest `last` when asked."""
        found = [flow for flow in flows if self.matches(flow)]
        return found[len(found) - self.last :] if self.last is not None and self.last < len(found) else found

    def to_wire(self) -> dict[str, Any]:
        """The query's fields a collector needs, leaving out what is not set."""
        wire: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and value != () and value != "":
                wire[item.name] = list(value) if isinstance(value, tuple) else value
        return wire

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> FlowQuery:
        """Check a query's filters; a bad one raises ValueError saying which."""
        last, since = optional(obj, "last", int, "query"), optional(obj, "since", int, "query")
        if (last is not None and last < 0) or (since is not None and since < 0):
            raise ValueError("query 'last' and 'since' must not be negative")
        return cls(
            verdict=words(obj, "verdict"),
            service=words(obj, "service"),
            proto=words(obj, "proto"),
            family=words(obj, "family"),
            scenario=words(obj, "scenario"),
            search=optional(obj, "search", str, "query") or "",
            last=last,
            since=since or 0,
        )


def searchable_text(flow: Flow) -> str:
    """Everything a search box may find in a flow, case folded."""
    parts = [flow.flow, flow.scenario or "", str(flow.verdict)]
    for end in (flow.client, flow.server):
        if end is not None:
            parts += [end.service, end.host, format_name(end.sockname), format_name(end.peername)]
    return " ".join(parts).casefold()


def pack_reply(reply: dict[str, Any]) -> bytes:
    """Encode one reply."""
    return msgpack.packb(reply, use_bin_type=True)


def query_collector(
    context: zmq.Context, endpoint: str, query: dict[str, Any], timeout: float = 3.0, keys: str | None = None
) -> dict[str, Any]:
    """One REQ/REP round trip with the keys of `keys` (default SOCKLAB_KEYS); TimeoutError when no answer in time."""
    req = context.socket(zmq.REQ)
    secure_client(req, keys)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    limit_message_size(req, MAX_REPLY)
    req.connect(endpoint)
    try:
        req.send(msgpack.packb(query, use_bin_type=True))
        try:
            reply = unpack_map(req.recv(), "collector reply")
        except zmq.Again:
            raise TimeoutError(f"collector at {endpoint} did not answer in {timeout} s") from None
    finally:
        req.close()
    if not reply.get("ok"):
        raise RuntimeError(f"collector said: {reply.get('error')}")
    return reply
