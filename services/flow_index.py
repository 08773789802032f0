"""Flows indexed as records arrive, so readers pay for what changed, never for a join of everything.

The ingest loop only files a record under its flow and marks the flow for a new join (O(1)). Evidence
(the router's conntrack events, the Docker host's bindings) marks the flows whose names it mentions;
a binding, which is rare, marks every flow. A reader (the page's HTTP threads, a query) joins just the
marked flows against the evidence held, and a flow whose join came out different gets a new cursor:
readers then take every flow in first-seen order, or only those changed after a cursor.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from services.flows import join_flows
from services.paths import Evidence
from shared.collector_protocol import FlowQuery, searchable_text
from shared.names import Endpoint, Name, endpoint
from shared.record import ConntrackEvent, DockerBinding, Observation
from shared.report_model import Flow


def flow_endpoints(flow: Flow) -> set[Endpoint]:
    """The IP endpoints both ends named, IPv4-mapped hosts unmapped, as conntrack writes them."""
    names: list[Name | None] = []
    for end in (flow.client, flow.server):
        if end is not None:
            names += [end.sockname, end.peername]
    return {endpoint(name) for name in names if isinstance(name, tuple)}


def event_endpoints(event: ConntrackEvent) -> set[Endpoint]:
    """The endpoints of both directions of a conntrack event."""
    found: set[Endpoint] = set()
    for direction in (event.original, event.reply):
        found |= {(direction.src, direction.sport), (direction.dst, direction.dport)}
    return found


class FlowIndex:
    """Each flow's records, its joined Flow, and the cursor of its last change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, list[Observation]] = {}
        self._joined: dict[str, Flow] = {}
        self._texts: dict[str, str] = {}  # searchable_text of flows searched since they last changed
        self._stamps: OrderedDict[str, int] = OrderedDict()
        self._dirty: dict[str, None] = {}  # a set that keeps the order flows were marked in
        self._by_endpoint: dict[Endpoint, set[str]] = {}
        self._events: list[ConntrackEvent] = []
        self._bindings: list[DockerBinding] = []
        self._evidence: Evidence | None = None
        self.cursor = 0

    def add(self, observations: list[Observation]) -> None:
        """File records under their flows (held records share one copy of the flow id) and mark those flows for a new
        join; one lock for them all."""
        held, dirty = self._records, self._dirty
        with self._lock:
            for obs in observations:
                flow = obs.flow
                if flow is None:
                    continue
                records = held.get(flow)
                if records is None:
                    records = held[flow] = []
                else:
                    obs.flow = records[0].flow  # one copy of the flow id for all its records
                records.append(obs)
                dirty[flow] = None

    def add_evidence(self, record: ConntrackEvent | DockerBinding) -> None:
        """Keep evidence and mark the flows it may change: those naming its endpoints, or all for a binding."""
        with self._lock:
            self._evidence = None
            if isinstance(record, DockerBinding):
                self._bindings.append(record)
                self._dirty.update(dict.fromkeys(self._records))
                return
            self._events.append(record)
            for point in event_endpoints(record):
                self._dirty.update(dict.fromkeys(self._by_endpoint.get(point, ())))

    def _join(self, flow_id: str) -> Flow:
        """Join one flow against the evidence held; one that came out different gets a new cursor."""
        if self._evidence is None:
            self._evidence = Evidence(self._events, self._bindings)
        (flow,) = join_flows(self._records[flow_id], self._evidence)
        if self._joined.get(flow_id) == flow:
            return flow
        self._joined[flow_id] = flow
        self._texts.pop(flow_id, None)
        for point in flow_endpoints(flow):
            self._by_endpoint.setdefault(point, set()).add(flow_id)
        self.cursor += 1
        self._stamps[flow_id] = self.cursor
        self._stamps.move_to_end(flow_id)
        return flow

    def _join_dirty(self) -> None:
        for flow_id in self._dirty:
            self._join(flow_id)
        self._dirty.clear()

    def _current(self, flow_id: str) -> Flow:
        """One flow as its records and the evidence say now, joined only if it was marked."""
        if flow_id in self._dirty:
            del self._dirty[flow_id]
            return self._join(flow_id)
        return self._joined[flow_id]

    def flows(self) -> list[Flow]:
        """Every flow, in the order its first record arrived (the report's order)."""
        with self._lock:
            self._join_dirty()
            return [self._joined[flow_id] for flow_id in self._records]

    def select(self, query: FlowQuery) -> list[Flow]:
        """The flows a query selects, in the report's order; with `last`, looked for (and joined) from the newest
        back only until enough match, so a page of a million flows costs a page, even just after a replay."""
        with self._lock:
            found: list[Flow] = []
            if query.last == 0:
                return found
            needle = query.search.casefold()
            for flow_id in reversed(self._records):
                text = None
                if needle:
                    text = self._texts.get(flow_id)
                    if text is None or flow_id in self._dirty:
                        text = self._texts[flow_id] = searchable_text(self._current(flow_id))
                    if needle not in text:
                        continue  # most flows end here, unjoined and unlooked at
                flow = self._current(flow_id)  # a page joins only the flows it looks at
                if query.matches(flow, text):
                    found.append(flow)
                    if len(found) == query.last:
                        break
            return found[::-1]

    def changed_since(self, cursor: int) -> tuple[int, list[Flow]]:
        """The flows changed after `cursor`, oldest change first, and the cursor to ask from next."""
        with self._lock:
            self._join_dirty()
            changed = []
            for flow_id, stamp in reversed(self._stamps.items()):
                if stamp <= cursor:
                    break
                changed.append(self._joined[flow_id])
            return self.cursor, changed[::-1]
