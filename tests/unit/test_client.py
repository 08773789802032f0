"""The client's whole round in-process: find echo through the registry, run every scenario, all flows joined."""

from __future__ import annotations

import pytest

from services.client import Outcome, find_echo, plan_targets, run_scenarios, scenario_runners
from services.echo import EchoServer
from services.registry import RegistryServer, register
from shared.reporter import Reporter
from tests.conftest import LiveCollector

pytestmark = pytest.mark.unit


def test_every_scenario_runs_and_is_judged_direct_on_loopback(
    echo_server: EchoServer, registry_server: RegistryServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    assert echo_server.unix is not None
    unix_path = echo_server.unix.getsockname()
    registry = ("127.0.0.1", registry_server.port)
    register(registry, "echo", {"tcp": echo_server.port, "udp": echo_server.port, "unix": unix_path}, reporter)
    echo = find_echo([registry], reporter)
    assert echo == {"4": ("127.0.0.1", {"tcp": echo_server.port, "udp": echo_server.port, "unix": unix_path})}
    targets = plan_targets(echo, unix_path, list(scenario_runners(0)))
    assert [t.scenario for t in targets] == ["tcp4", "tcp-bound4", "udp4", "udp-sendto4", "unix"]
    results = run_scenarios(reporter, targets, bind_port=0)
    assert all(isinstance(r, Outcome) for r in results), results
    for outcome in results:
        assert isinstance(outcome, Outcome)
        flow = live_collector.wait_for_flow(outcome.flow)
        assert flow.verdict == "direct", flow
        assert flow.client is not None and flow.client.extra["scenario"] == outcome.scenario


def test_a_failing_scenario_is_reported_and_the_rest_still_run(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    echo = {"4": ("127.0.0.1", {"tcp": 1, "udp": echo_server.port})}
    results = run_scenarios(reporter, plan_targets(echo, None, ["tcp", "udp"]), bind_port=0)
    assert isinstance(results[0], ConnectionRefusedError)
    assert isinstance(results[1], Outcome)
