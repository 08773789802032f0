"""The collector's query protocol and its client: the one module the collector, `socklab report`,
health checks and tests import to ask the collector anything.

Records go in over ZeroMQ PUSH -> PULL (shared.record, shared.reporter). Queries are msgpack maps on
REQ -> REP, one reply per query, always a map with "ok":
  {"op": "ping"}                    -> {"ok": true, "records": n}
  {"op": "report"}                  -> {"ok": true, ...the report (shared.report_model)...}
  {"op": "records", "flow": id|nil} -> {"ok": true, "records": [record maps]}
  {"op": "flow", "flow": id}        -> {"ok": true, "flow": one flow of the report}; an id's unique
                                       prefix will do; none or several: {"ok": false, "error"}
A query it cannot answer gets {"ok": false, "error"}.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgpack
import zmq

from shared.framing import unpack_map

DEFAULT_INGEST_PORT = 5555
DEFAULT_QUERY_PORT = 5556


class QueryOp(StrEnum):
    """What a query asks the collector for."""

    PING = "ping"
    REPORT = "report"
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


def pack_reply(reply: dict[str, Any]) -> bytes:
    """Encode one reply."""
    return msgpack.packb(reply, use_bin_type=True)


def query_collector(context: zmq.Context, endpoint: str, query: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
    """One REQ/REP round trip; raises TimeoutError when the collector does not answer in time."""
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
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
