"""`socklab report` in the collector's container: filters applied by the collector, and --follow as a client runs."""

from __future__ import annotations

import json

import pytest

from shared.report_model import Flow, FlowVerdict
from shared.stack import Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

FOLLOW_OUT = "/tmp/socklab-follow.jsonl"
FOLLOW_PID = "/tmp/socklab-follow.pid"


def followed(stack: Stack) -> list[Flow]:
    text = stack.exec("collector", "sh", "-c", f"cat {FOLLOW_OUT} 2>/dev/null || true")
    return [Flow.from_wire(json.loads(line)) for line in text.splitlines()]


def test_follow_verdict_snat_prints_each_new_snat_flow_once(stack: Stack) -> None:
    command = f"echo $$ > {FOLLOW_PID}; exec timeout 60 socklab report --follow --verdict snat --last 1 -o jsonl"
    stack.container("collector").exec_run(["sh", "-c", f"{command} > {FOLLOW_OUT}"], user="socklab", detach=True)
    try:
        [old] = wait_for(lambda: followed(stack), "the follower's first answer (--last 1)")
        before = {f.flow for f in stack.report().flows}
        outcomes = stack.run_client("client-lan", "--scenario", "tcp", "--scenario", "udp")
        outcomes += stack.run_client("client-wan", "--scenario", "tcp")
        ran = [stack.wait_for_flow(o["flow"]) for o in outcomes]
        assert [f.verdict for f in ran].count(FlowVerdict.SNAT) == 4, "client-lan's four flows cross the NAT"
        new = {f.flow for f in stack.report().flows if f.flow not in before and f.verdict == FlowVerdict.SNAT}

        def printed_all() -> list[Flow] | None:
            flows = followed(stack)
            return flows if new <= {f.flow for f in flows} else None

        flows = wait_for(printed_all, "every new snat flow printed", timeout=10)
    finally:
        stack.exec("collector", "sh", "-c", f"kill $(cat {FOLLOW_PID})")
    assert old.verdict == FlowVerdict.SNAT and old.flow in before
    assert all(f.verdict == FlowVerdict.SNAT for f in flows), "the filter let only snat through"
    assert sorted(f.flow for f in flows[1:]) == sorted(new), "each new snat flow once (lookups too), nothing else"
    assert {f.flow for f in ran if f.verdict == FlowVerdict.SNAT} <= new
    report = stack.report()
    assert all(f == report.flow(f.flow) for f in flows[1:]), "printed as the report holds it"


def test_table_fits_120_columns_and_wide_has_the_rest(stack: Stack) -> None:
    table = stack.exec("collector", "socklab", "report").splitlines()
    flow_lines = table[: table.index("")]
    assert max(len(line) for line in flow_lines) <= 120, "\n".join(flow_lines)
    wide = stack.exec("collector", "socklab", "report", "-o", "wide").splitlines()
    some = stack.report().flows[0]
    assert any(line.startswith(some.flow) for line in wide), "-o wide starts each line with the flow id"
    assert json.loads(stack.exec("collector", "socklab", "report", "--json")) == json.loads(
        stack.exec("collector", "socklab", "report", "-o", "json")
    )


def test_every_end_names_the_docker_engine_it_ran_on(stack: Stack) -> None:
    engine = stack.docker.info()["Name"]
    outcomes = stack.run_client("client-wan", "--scenario", "tcp")
    assert outcomes, "client-wan ran its tcp scenarios"
    for outcome in outcomes:
        flow = stack.wait_for_flow(outcome["flow"])
        assert flow.client is not None and flow.server is not None
        assert (flow.client.node, flow.server.node) == (engine, engine), "one host: docker info's Name at both ends"
        wide = stack.exec("collector", "socklab", "report", "-o", "wide").splitlines()
        [row] = [line for line in wide if line.startswith(flow.flow)]
        assert f"client-wan@{engine} -> echo@{engine}" in row
