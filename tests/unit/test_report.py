"""The report for people: a table line per flow with its verdict, and the collector query behind it."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from dataclasses import replace
from typing import IO, Any

import pytest
import zmq

from services.flows import join_flows
from services.paths import Evidence
from services.report import NARROW_WIDTHS, Follower, describe_verdict, format_row, format_table, main, narrow_cells
from shared.collector_protocol import query_collector
from shared.record import Family, Method, Observation, Proto, Role, pack_observation
from shared.report_model import Flow, FlowEnd, FlowVerdict, Report
from tests.conftest import LiveCollector
from tests.unit.test_paths import event, tcp_flow

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
    assert "192.168.50.20:40000  " in rows[0] and "  [::ffff:198.51.100.2]:1024  " in rows[0]
    assert rows[1].startswith("unix") and rows[1].endswith("direct") and "(unnamed)" in rows[1]
    assert rows[2].startswith("tcp") and rows[2].endswith("unmatched") and "client -> ?" in rows[2]
    assert lines[-1] == "records 9, rejected 2; by method: connect 1, getsockname 4"


def test_wide_table_has_the_flow_id_and_both_full_views() -> None:
    header, _, first, *_ = format_table(report(), wide=True).splitlines()
    assert header.startswith("flow") and "client sees: me -> peer" in header
    assert first.startswith("a ") and first.rstrip().endswith("snat, port changed  -"), "no path: no hops"
    assert "192.168.50.20:40000 -> 198.51.100.10:7007" in first
    assert "[::ffff:198.51.100.2]:1024 -> [::ffff:198.51.100.10]:7007" in first


def stack_like_flow(flow_id: str) -> Flow:
    """A flow with the stack's longest cells: scenario, services, 4-tuple names, verdict."""
    client = FlowEnd("client-lan", "h", Family.IPV4, ("192.168.50.20", 36720), ("198.51.100.3", 5300))
    server = FlowEnd(
        "registry", "h", Family.IPV4, ("::ffff:198.51.100.3", 5300, 0, 0), ("::ffff:198.51.100.2", 36720, 0, 0)
    )
    return Flow(flow_id, Proto.TCP, Family.IPV4, "registry-register", client, server, FlowVerdict.PROXIED, False)


def test_the_table_and_a_followed_row_fit_120_columns() -> None:
    lines = format_table(Report((stack_like_flow("0123456789abcdef"),))).splitlines()
    assert max(len(line) for line in lines) <= 120, lines
    assert len(format_row(narrow_cells(stack_like_flow("x")), NARROW_WIDTHS, cut=2)) <= 120


def test_long_service_names_are_cut_in_the_table_and_whole_in_wide() -> None:
    flow = stack_like_flow("f")
    assert flow.client is not None and flow.server is not None
    long = replace(flow, client=replace(flow.client, service="aioice-client-behind-nat"))
    long_v6 = replace(long, server=replace(flow.server, peername=("2001:db8:100::2", 40000, 0, 0)))
    lines = format_table(Report((long, long_v6))).splitlines()
    assert max(len(line) for line in lines[:4]) <= 120, lines
    assert "aioice-client-behind-nat …  " in lines[2] and "[2001:db8:100::2]:40000" in lines[3]
    assert "aioice-client-behind-nat -> registry" in format_table(Report((long,)), wide=True)


def test_wide_table_says_the_node_each_end_ran_on() -> None:
    flow = stack_like_flow("f")
    assert flow.client is not None and flow.server is not None
    placed = replace(flow, client=replace(flow.client, node="node3"), server=replace(flow.server, node="node1"))
    header, _, row, *_ = format_table(Report((placed,)), wide=True).splitlines()
    assert "client@node -> server@node" in header and "client-lan@node3 -> registry@node1" in row
    assert "@" not in format_table(Report((placed,))).splitlines()[2], "the narrow table keeps its width"


def flows_of(printed: str) -> list[Flow]:
    return [Flow.from_wire(json.loads(line)) for line in printed.splitlines()]


def test_filters_and_last_are_applied_by_the_collector(
    live_collector: LiveCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    for record in RECORDS:
        live_collector.collector.ingest(pack_observation(record))
    main(["-o", "jsonl", "--verdict", "snat", "--query", live_collector.query])
    assert [f.flow for f in flows_of(capsys.readouterr().out)] == ["a"]
    main(["-o", "jsonl", "--proto", "unix", "--proto", "tcp", "--last", "2", "--query", live_collector.query])
    assert [f.flow for f in flows_of(capsys.readouterr().out)] == ["b", "c"]
    main(["-o", "jsonl", "--search", "/RUN/E.SOCK", "--query", live_collector.query])
    assert [f.flow for f in flows_of(capsys.readouterr().out)] == ["b"]
    main(["--json", "--service", "nobody", "--query", live_collector.query])
    printed = Report.from_wire(json.loads(capsys.readouterr().out))
    assert (printed.flows, printed.records) == ((), 9), "a filter cuts the flows, never the counts"


def test_follow_prints_a_new_flow_once_when_it_is_joined(live_collector: LiveCollector) -> None:
    for record in RECORDS:
        live_collector.collector.ingest(pack_observation(record))
    command = [sys.executable, "-m", "services", "report", "--follow", "--verdict", "snat", "--last", "1"]
    command += ["-o", "jsonl", "--query", live_collector.query, "--interval", "0.05"]

    def next_flow(stream: IO[str]) -> Flow:
        assert select.select([stream], [], [], 10)[0], "nothing printed in 10 s"
        return Flow.from_wire(json.loads(stream.readline()))

    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as follower:
        try:
            assert follower.stdout is not None
            assert next_flow(follower.stdout).flow == "a", "--last 1: the newest old snat flow, then follow"
            new = [obs(flow, role, method, scenario, **names) for flow, role, method, scenario, names in NEW_SNAT]
            for record in new:
                live_collector.collector.ingest(pack_observation(record))
            assert next_flow(follower.stdout) == live_collector.collector.report().flow("d")
        finally:
            follower.terminate()
        rest = follower.stdout.read() if follower.stdout else ""
    assert rest == "", "printed once, and only the new snat flow"


NEW_SNAT: list[tuple[str, Role, str, str | None, dict[str, Any]]] = [
    ("d", Role.SERVER, "getpeername", None, {"remote": ("198.51.100.2", 41000)}),
    ("d", Role.SERVER, "getsockname", None, {"local": ECHO}),
    ("d", Role.CLIENT, "getpeername", None, {"remote": ECHO}),
    ("d", Role.CLIENT, "getsockname", "tcp4", {"local": ("192.168.50.20", 41000)}),
]


def test_follower_holds_an_incomplete_flow_until_it_settles(capsys: pytest.CaptureFixture[str]) -> None:
    follower = Follower("jsonl", settle=2.0)
    half = Flow("h", Proto.UDP, Family.IPV4, None, None, None, FlowVerdict.UNMATCHED, None)
    follower.take([half], now=10.0)
    follower.take([], now=11.0)
    assert capsys.readouterr().out == ""
    follower.take([], now=12.0)
    assert flows_of(capsys.readouterr().out) == [half]
    whole = stack_like_flow("h")
    follower.take([whole, whole], now=13.0)
    assert flows_of(capsys.readouterr().out) == [whole], "a new verdict prints again, the same one does not"


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
    assert list(printed) == list(live_collector.collector.report().to_wire())  # the order test_report_model fixes
    assert Report.from_wire(printed) == live_collector.collector.report()
    main(["--query", live_collector.query])
    assert capsys.readouterr().out == format_table(live_collector.collector.report()) + "\n"


def test_wide_table_names_the_rewriters_of_a_flows_path() -> None:
    [flow] = join_flows(tcp_flow(), Evidence([event()]))
    row = format_table(Report((flow,)), wide=True).splitlines()[2]
    assert row.startswith("f ") and row.endswith("snat, port kept  router snat")
