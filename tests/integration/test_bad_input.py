"""Garbage from another container to every port: each service counts it, keeps serving, and loses nothing."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from shared.report_model import FlowVerdict, Report
from shared.stack import Stack
from tests.helpers import wait_for
from tests.integration.stack import run_script

pytestmark = pytest.mark.integration


def test_garbage_is_counted_and_nothing_is_lost(stack: Stack) -> None:
    before = stack.report()
    since = int(time.time()) - 1
    echo, registry = stack.ip("echo", "wan"), stack.ip("registry", "wan")
    output = run_script(stack, "client-wan", "garbage.py", echo, registry)
    stats = json.loads(output.strip().splitlines()[-1])
    before_stats, after_stats = stats["before"], stats["after"]
    grew = {k: after_stats.get(k, 0) - before_stats.get(k, 0) for k in ("rejected", "bad_requests", "stun_rejected")}
    assert grew == {"rejected": 1, "bad_requests": 3, "stun_rejected": 3}, stats

    def echo_rejects(report: Report) -> int:
        return report.service_rejects.get("echo", 0)

    after = wait_for(
        lambda: (
            (r := stack.report()).rejected >= before.rejected + 2 and echo_rejects(r) >= echo_rejects(before) + 3 and r
        ),
        "the collector to count two bad records and hold echo's three rejections",
    )
    assert after.rejected - before.rejected == 2
    assert echo_rejects(after) - echo_rejects(before) == 3, after.service_rejects
    echo_log = stack.container("echo").logs(since=since).decode()
    assert echo_log.count("rejected") >= 3, "echo's own log tells the same rejections"

    outcomes = stack.run_client("client-wan", "--scenario", "tcp", "--scenario", "udp", "--scenario", "unix")
    for outcome in outcomes:
        assert stack.wait_for_flow(outcome["flow"]).verdict == FlowVerdict.DIRECT, "every service still serves"
    kept = {f.flow for f in stack.report().flows}
    assert {f.flow for f in before.flows} <= kept, "no stored flow was lost"


def test_collector_restart_loses_nothing_stored(stack: Stack) -> None:
    before = stack.report()
    stack.container("collector").restart(timeout=5)
    after = wait_for(stack.try_report, "the collector to answer after its restart", 30)
    assert after.records >= before.records
    assert {f.flow for f in before.flows} <= {f.flow for f in after.flows}
    assert after.natchecks[: len(before.natchecks)] == before.natchecks, "NAT checks are replayed too"


def test_live_page_shows_the_same_flows(stack: Stack) -> None:
    [outcome] = stack.run_client("client-wan", "--scenario", "udp", "--echo", f"{stack.ip('echo', 'wan')}:7007")
    flow = stack.wait_for_flow(outcome["flow"])
    base = f"http://127.0.0.1:{stack.published_port('collector', '8080/tcp')}"
    served = Report.from_wire(json.loads(urllib.request.urlopen(f"{base}/report.json", timeout=5).read()))
    assert served.flow(flow.flow) == flow
    page = urllib.request.urlopen(f"{base}/", timeout=5).read().decode()
    assert '<script src="app.js">' in page, "the page is static; the browser test (test_page) reads what it draws"
