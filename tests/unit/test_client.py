"""The client's scenarios end to end in-process: echo, registry and collector on loopback, flows joined."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from services import client
from services.client import Outcome, Target, find_echo, plan_targets, run_scenarios, scenario_runners
from services.echo import EchoServer
from services.registry import RegistryServer
from shared.names import endpoint, name_from_wire
from shared.registry_protocol import register
from shared.reporter import Reporter
from tests.conftest import LiveCollector, free_port

pytestmark = pytest.mark.unit


def check_direct(live_collector: LiveCollector, outcome: Outcome) -> None:
    """The joined flow is direct, and each end's names are what the sockets said."""
    flow = live_collector.wait_for_flow(outcome.flow)
    assert flow.client is not None and flow.server is not None
    assert flow.verdict == "direct", flow
    assert (flow.client.sockname, flow.client.peername) == (outcome.local, outcome.remote)
    assert endpoint(flow.server.peername) == endpoint(outcome.local)  # type: ignore[arg-type]
    assert endpoint(flow.server.sockname) == endpoint(outcome.remote)  # type: ignore[arg-type]
    assert outcome.reflexive == flow.server.peername, "echo told the client the name it saw"
    assert flow.client.extra["scenario"] == outcome.scenario


Run = Callable[[Reporter, Target], Outcome]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize(
    "run",
    [client.run_stream, client.run_udp_connected, client.run_udp_sendto],
    ids=["tcp", "udp", "udp-sendto"],
)
def test_ip_scenarios_are_direct_on_loopback(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector, run: Run, host: str
) -> None:
    outcome = run(reporter, Target("scenario", (host, echo_server.port)))
    assert isinstance(outcome.local, tuple) and outcome.local[0] == host
    assert outcome.remote[:2] == (host, echo_server.port)
    check_direct(live_collector, outcome)


def test_bound_source_port_is_kept(
    echo_server: EchoServer,
    reporter: Reporter,
    live_collector: LiveCollector,
) -> None:
    port = free_port()
    outcome = client.run_stream(reporter, Target("tcp-bound4", ("127.0.0.1", echo_server.port)), port)
    assert outcome.local == ("127.0.0.1", port)
    check_direct(live_collector, outcome)
    assert live_collector.wait_for_flow(outcome.flow).port_preserved is True


def test_unix_scenario_names_are_paths(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    assert echo_server.unix is not None
    path = echo_server.unix.getsockname()
    outcome = client.run_stream(reporter, Target("unix", path))
    assert (outcome.local, outcome.remote, outcome.reflexive) == ("", path, "")
    check_direct(live_collector, outcome)


def test_the_whole_round_finds_echo_through_the_registry(
    echo_server: EchoServer,
    registry_server: RegistryServer,
    reporter: Reporter,
    live_collector: LiveCollector,
) -> None:
    assert echo_server.unix is not None
    unix_path = echo_server.unix.getsockname()
    ports = {"tcp": echo_server.port, "udp": echo_server.port, "unix": unix_path}
    registry = [("127.0.0.1", registry_server.port), ("::1", registry_server.port)]
    for address in registry:
        register(address, "echo", ports, reporter)
    echo = find_echo(registry, reporter)
    assert echo == {"4": ("127.0.0.1", ports), "6": ("::1", ports)}
    targets = plan_targets(echo, unix_path, list(scenario_runners(0)))
    assert [t.scenario for t in targets] == [
        *("tcp4", "tcp6", "tcp-bound4", "tcp-bound6", "udp4", "udp6", "udp-sendto4", "udp-sendto6", "unix")
    ]
    results = run_scenarios(reporter, targets, bind_port=0)
    assert all(isinstance(r, Outcome) for r in results), results
    for outcome in results:
        assert isinstance(outcome, Outcome)
        check_direct(live_collector, outcome)


def test_a_failing_scenario_is_returned_and_the_rest_still_run(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    echo = {"4": ("127.0.0.1", {"tcp": free_port(), "udp": echo_server.port})}
    results = run_scenarios(reporter, plan_targets(echo, None, ["tcp", "udp"]), bind_port=0)
    assert isinstance(results[0], ConnectionRefusedError)
    assert isinstance(results[1], Outcome)
    check_direct(live_collector, results[1])


def test_main_prints_a_json_line_per_flow(
    echo_server: EchoServer,
    live_collector: LiveCollector,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert echo_server.unix is not None
    monkeypatch.setenv("SOCKLAB_COLLECTOR", live_collector.ingest)
    monkeypatch.setenv("SOCKLAB_UNIX_PATH", echo_server.unix.getsockname())
    args = ["--echo", f"[::1]:{echo_server.port}", "--json", "--scenario", "udp", "--scenario", "unix"]
    client.main(args)
    lines: list[dict[str, Any]] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["scenario"] for line in lines] == ["udp6", "unix"]
    for line in lines:
        flow = live_collector.wait_for_flow(line["flow"])
        assert flow.verdict == "direct" and flow.client is not None
        assert flow.client.sockname == name_from_wire(line["local"])
