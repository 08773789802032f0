"""The flow index: a flow is joined again only when its records or the evidence naming it change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.flow_index import FlowIndex
from services.flows import join_flows
from services.paths import Evidence
from shared.collector_protocol import FlowQuery
from shared.record import Role
from tests.unit.test_paths import binding, event, observed, tcp_flow

pytestmark = pytest.mark.unit


def test_evidence_after_the_join_gives_the_flow_its_path_and_a_new_cursor() -> None:
    index = FlowIndex()
    index.add(tcp_flow())
    cursor, [before] = index.changed_since(0)
    assert before.path == () and cursor == 1
    index.add_evidence(event(original=(("10.0.0.1", 1), ("10.0.0.2", 2)), reply=(("10.0.0.2", 2), ("10.0.0.1", 1))))
    assert index.changed_since(cursor) == (1, []), "evidence about other names changes nothing"
    index.add_evidence(event())
    cursor, [after] = index.changed_since(cursor)
    assert cursor == 2 and after == join_flows(tcp_flow(), Evidence([event()]))[0] and after.path
    index.add(tcp_flow()[:1])
    assert index.changed_since(cursor) == (2, []), "a record that changes nothing is not news"


def test_a_binding_rejoins_every_flow_and_flows_keep_first_seen_order() -> None:
    index = FlowIndex()
    index.add(tcp_flow())
    index.flows()
    index.add_evidence(binding())
    assert [f.flow for f in index.flows()] == ["f"]
    assert index.flows() == join_flows(tcp_flow(), Evidence([], [binding()]))


def test_a_query_selects_the_newest_matching_flows_in_report_order_and_searches_what_changed() -> None:
    index = FlowIndex()
    for n in range(10):
        index.add([replace(obs, flow=f"f{n}", service="echo" if n % 2 else "other") for obs in tcp_flow()])
    newest = index.select(FlowQuery(service=("echo",), last=3))
    assert [f.flow for f in newest] == ["f5", "f7", "f9"]
    assert [f.flow for f in index.select(FlowQuery(last=2))] == ["f8", "f9"]
    assert index.select(FlowQuery(last=0)) == []
    assert [f.flow for f in index.select(FlowQuery(search="F3"))] == ["f3"]
    assert [f.flow for f in index.flows()] == [f"f{n}" for n in range(10)]
    index.add([replace(observed(Role.SERVER, "getpeername", remote=("192.0.2.99", 4242)), flow="f3")])
    assert [f.flow for f in index.select(FlowQuery(search="192.0.2.99"))] == ["f3"], "a changed flow is searched anew"


def test_a_flows_records_share_one_copy_of_its_id() -> None:
    index = FlowIndex()
    records = [replace(obs, flow="".join(["f", "1"])) for obs in tcp_flow()]
    index.add(records)
    assert all(obs.flow is records[0].flow for obs in records)
