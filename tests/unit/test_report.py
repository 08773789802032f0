"""The report for people: a table line per flow with its verdict, and the collector query behind it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import zmq

from services.flows import join_flows
from services.report import describe_verdict, format_table, main
from shared.collector_protocol import query_collector
from shared.record import Family, Method, Observation, Proto, Role, pack_observation
from shared.report_model import Flow, FlowVerdict, Report
from tests.conftest import LiveCollector

pytestmark = pytest.mark.unit


def obs(flow: str, role: Role, method: str, scenario: str | None = None, **names: Any) -> Observation:
    unix = any(isinstance(n, str) for n in names.values())
    family, proto = (Family.UNIX, Proto.UNIX) if unix else (Family.IPV4, Proto.TCP)
    extra = {"scenario": scenario} if scenario else {}
    return Observation(role.value, "h", flow, role, proto, family, Method(method), extra=extra, **names)


ME, ECHO = ("192.168.50.20", 40000), ("198.51.100.10", 7007)
RECORDS = [
    obs("a", Role.CLIENT, "getsockname", "tcp4", local=ME),
    obs("a", Role.CLIENT, "getpeername", remote=ECHO),
    obs("a", Role.SERVER, "getsockname", local=("::ffff:198.51.100.10", 7007, 0, 0)),
    obs("a", Role.SERVER, "getpeername", remote=("::ffff:198.51.100.2", 1024, 0, 0)),
    obs("b", Role.CLIENT, "getsockname", "unix", local=""),
    obs("b", Role.CLIENT, "getpeername", remote="/run/e.sock"),
    obs("b", Role.SERVER, "getsockname", local="/run/e.sock"),
    obs("b", Role.SERVER, "accept", remote=""),
    obs("c", Role.CLIENT, "connect", remote=ECHO),
]


def report() -> Report:
    return Report(tuple(join_flows(RECORDS)), methods={"getsockname": 4, "connect": 1}, records=9, rejected=2)


def test_table_has_a_line_per_flow_ending_in_its_verdict() -> None:
    lines = format_table(report()).splitlines()
    header, rule, *rows = lines[:5]
    assert header.startswith("scenario") and header.endswith("verdict") and set(rule) == {"-"}
    assert rows[0].startswith("tcp4") and rows[0].endswith("snat, port changed")
    assert "192.168.50.20:40000 -> 198.51.100.10:7007" in rows[0]
    assert "[::ffff:198.51.100.2]:1024 -> [::ffff:198.51.100.10]:7007" in rows[0]
    assert rows[1].startswith("unix") and rows[1].endswith("direct")
    assert "(unnamed) -> /run/e.sock" in rows[1]
    assert rows[2].startswith("tcp") and rows[2].endswith("unmatched") and "client -> ?" in rows[2]
    assert lines[-1] == "records 9, rejected 2; by method: connect 1, getsockname 4"


@pytest.mark.parametrize(
    ("verdict", "preserved", "text"),
    [
        ("direct", True, "direct"),
        ("snat", True, "snat, port kept"),
        ("snat", False, "snat, port changed"),
        ("proxied", False, "proxied, port changed"),
        ("dnat", True, "dnat"),
        ("unmatched", None, "unmatched"),
    ],
)
def test_describe_verdict(verdict: str, preserved: bool | None, text: str) -> None:
    flow = Flow("f", Proto.TCP, Family.IPV4, None, None, None, FlowVerdict(verdict), preserved)
    assert describe_verdict(flow) == text


def test_query_collector_times_out_when_nobody_answers(zmq_context: zmq.Context, closed_port: int) -> None:
    with pytest.raises(TimeoutError, match=r"did not answer in 0\.2 s"):
        query_collector(zmq_context, f"tcp://127.0.0.1:{closed_port}", {"op": "ping"}, timeout=0.2)


def test_report_command_prints_the_collectors_report_as_json_and_as_a_table(
    live_collector: LiveCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    for obs in RECORDS:
        live_collector.collector.ingest(pack_observation(obs))
    main(["--json", "--query", live_collector.query])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(live_collector.collector.report().to_wire()))
    assert list(printed) == ["flows", "methods", "records", "rejected", "service_rejects", "drops", "natchecks"]
    assert Report.from_wire(printed) == live_collector.collector.report()
    main(["--query", live_collector.query])
    assert capsys.readouterr().out == format_table(live_collector.collector.report()) + "\n"
