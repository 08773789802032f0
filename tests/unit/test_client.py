"""The client's scenarios end to end in-process: echo, registry and collector on loopback, flows joined."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services import client
from services.client import KINDS, SCENARIOS, Outcome, Scenario, Target, find_echo, plan_targets, run_scenarios
from services.echo import EchoServer
from services.registry import RegistryServer
from shared.names import endpoint, name_from_wire
from shared.record import Family, Proto
from shared.registry_protocol import Registration, register
from shared.reporter import Reporter
from tests.conftest import LiveCollector

pytestmark = pytest.mark.unit

LOOPBACK = {Family.IPV4: "127.0.0.1", Family.IPV6: "::1"}


def check_direct(live_collector: LiveCollector, outcome: Outcome) -> None:
    """The joined flow is direct, and each end's names are what the sockets said."""
    flow = live_collector.wait_for_flow(outcome.flow)
    assert flow.client is not None and flow.server is not None
    assert flow.verdict == "direct", flow
    assert (flow.client.sockname, flow.client.peername) == (outcome.local, outcome.remote)
    assert endpoint(flow.server.peername) == endpoint(outcome.local)  # type: ignore[arg-type]
    assert endpoint(flow.server.sockname) == endpoint(outcome.remote)  # type: ignore[arg-type]
    assert outcome.reflexive == flow.server.peername, "echo told the client the name it saw"
    assert flow.scenario == outcome.scenario


def echo_at(host: str, ports: dict[str, Any]) -> Registration:
    """Echo as the registry would answer for it, seen at host."""
    return Registration("echo", None, (host, 7), ports)


def test_scenario_names_and_kinds_are_todays() -> None:
    assert [s.name for s in SCENARIOS] == [
        *("tcp4", "tcp6", "tcp-bound4", "tcp-bound6", "udp4", "udp6", "udp-sendto4", "udp-sendto6", "unix")
    ]
    assert KINDS == ("tcp", "tcp-bound", "udp", "udp-sendto", "unix")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_scenario_is_direct_on_loopback_with_its_rows_proto_and_family(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector, scenario: Scenario, closed_port: int
) -> None:
    assert echo_server.unix is not None
    path = echo_server.unix.getsockname()
    address = path if scenario.family == Family.UNIX else (LOOPBACK[scenario.family], echo_server.port)
    outcome = scenario.run(reporter, Target(scenario, address, closed_port))
    assert outcome.scenario == scenario.name
    check_direct(live_collector, outcome)
    flow = live_collector.wait_for_flow(outcome.flow)
    assert (flow.proto, flow.family) == (scenario.proto, scenario.family)
    if scenario.family == Family.UNIX:
        assert (outcome.local, outcome.remote, outcome.reflexive) == ("", path, "")
        return
    assert isinstance(outcome.local, tuple) and outcome.local[0] == LOOPBACK[scenario.family]
    assert outcome.remote[:2] == address
    assert (outcome.local[1] == closed_port) == (scenario.kind == "tcp-bound")
    if scenario.kind == "tcp-bound":
        assert flow.port_preserved is True


def test_targets_follow_the_families_echo_registered_and_the_chosen_kinds(tmp_path: Path) -> None:
    echo = {Family.IPV6: echo_at("::1", {"tcp": 1, "udp": 2})}
    targets = plan_targets(echo, str(tmp_path / "absent.sock"), ["udp-sendto", "tcp", "unix"], bind_port=9)
    assert [(t.scenario.name, t.address, t.bind_port) for t in targets] == [
        ("tcp6", ("::1", 1), 9),
        ("udp-sendto6", ("::1", 2), 9),
    ]


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
    assert {family: (r.host, r.ports) for family, r in echo.items()} == {
        Family.IPV4: ("127.0.0.1", ports),
        Family.IPV6: ("::1", ports),
    }
    targets = plan_targets(echo, unix_path, KINDS, bind_port=0)
    assert [t.scenario for t in targets] == list(SCENARIOS)
    results = run_scenarios(reporter, targets)
    assert all(isinstance(r, Outcome) for r in results), results
    for outcome in results:
        assert isinstance(outcome, Outcome)
        check_direct(live_collector, outcome)


def test_a_failing_scenario_is_returned_and_the_rest_still_run(
    echo_server: EchoServer, reporter: Reporter, live_collector: LiveCollector, closed_port: int
) -> None:
    echo = {Family.IPV4: echo_at("127.0.0.1", {Proto.TCP: closed_port, Proto.UDP: echo_server.port})}
    results = run_scenarios(reporter, plan_targets(echo, None, ["tcp", "udp"], bind_port=0))
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


def test_a_tagged_run_names_its_flows_tag_dash_scenario_and_echo_may_be_a_name(
    echo_server: EchoServer,
    live_collector: LiveCollector,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SOCKLAB_COLLECTOR", live_collector.ingest)
    client.main(["--echo", f"localhost:{echo_server.port}", "--json", "--tag", "swarm-dnsrr", "--scenario", "tcp"])
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert line["scenario"] in ("swarm-dnsrr-tcp4", "swarm-dnsrr-tcp6")
    flow = live_collector.wait_for_flow(line["flow"])
    assert (flow.scenario, flow.verdict) == (line["scenario"], "direct")
    assert flow.client is not None and isinstance(flow.client.peername, tuple)
    assert flow.client.peername[0] in ("127.0.0.1", "::1"), "localhost resolved by the client, as a swarm's DNS"
