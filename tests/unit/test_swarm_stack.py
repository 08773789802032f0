"""The swarm's stack file is docker-compose.yml's topology, derived from Compose's own reading of it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from shared.stack import COMPOSE_FILE, compose_command
from shared.swarm import placements
from shared.swarm_stack import (
    DROPPED_ENV,
    KEYS_VOLUME,
    NODE_KEYS,
    SWARM_ENV,
    SWARM_SERVICES,
    derive_stack,
    placement_label,
    swarm_command,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    command = [*compose_command(COMPOSE_FILE), "--file", str(COMPOSE_FILE), "config", "--format", "json"]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def stack(compose: dict[str, Any]) -> dict[str, Any]:
    return derive_stack(compose)


def test_the_stack_has_the_swarm_services_with_compose_s_image_health_and_volumes(
    compose: dict[str, Any], stack: dict[str, Any]
) -> None:
    assert list(stack["services"]) == list(SWARM_SERVICES)
    for name, service in stack["services"].items():
        source = compose["services"][name]
        assert service["image"] == source["image"] == "socklab:latest"
        assert service["healthcheck"]["test"] == source["healthcheck"]["test"]
        assert service["healthcheck"]["interval"] == "2s"
        assert [v["target"] for v in service["volumes"]] == [v["target"] for v in source["volumes"]]
        assert set(service["networks"]) == set(source["networks"])
        assert (service["read_only"], service["cap_drop"]) == (source["read_only"], source["cap_drop"])
        assert "depends_on" not in service and "build" not in service and "user" not in service


def test_every_service_reads_the_swarm_s_one_set_of_keys_from_its_node(stack: dict[str, Any]) -> None:
    assert KEYS_VOLUME not in stack["volumes"], "a named volume is per node: members elsewhere would find no keys"
    for name, service in stack["services"].items():
        [keys] = [v for v in service["volumes"] if v["target"] == "/run/socklab-keys"]
        assert keys == {"type": "bind", "source": NODE_KEYS, "target": "/run/socklab-keys", "read_only": True}, name


def test_commands_are_compose_s_socklab_commands_without_root_wrappers_or_waits(
    compose: dict[str, Any], stack: dict[str, Any]
) -> None:
    commands = {name: service["command"] for name, service in stack["services"].items()}
    assert commands["registry"] == ["socklab", "registry"]
    assert compose["services"]["registry"]["command"][2].endswith("socklab registry")
    assert commands["client-wan"] == ["socklab", "client", "--serve", "--register"]
    assert commands["echo"] == compose["services"]["echo"]["command"]


def test_no_fixed_address_of_compose_survives(compose: dict[str, Any], stack: dict[str, Any]) -> None:
    fixed = {
        attrs[key]
        for service in compose["services"].values()
        for attrs in service.get("networks", {}).values()
        if attrs
        for key in ("ipv4_address", "ipv6_address")
        if key in attrs
    }
    assert "198.51.100.3" in fixed, "compose fixes the registry's address"
    text = json.dumps(stack)
    assert [address for address in fixed if f'"{address}' in text or f"{address}:" in text] == []


def test_environment_is_compose_s_with_names_for_addresses_and_the_node_s_name(
    compose: dict[str, Any], stack: dict[str, Any]
) -> None:
    for name, service in stack["services"].items():
        source = compose["services"][name]["environment"]
        env = service["environment"]
        assert env["SOCKLAB_NODE"] == "{{.Node.Hostname}}"
        assert env["SOCKLAB_REGISTRY"] == SWARM_ENV["SOCKLAB_REGISTRY"]
        kept = set(source) - set(SWARM_ENV) - set(DROPPED_ENV)
        assert {k: env[k] for k in kept} == {k: source[k] for k in kept}


def test_services_are_dnsrr_placed_by_label_and_publish_on_their_node(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        deploy = service["deploy"]
        assert deploy["endpoint_mode"] == "dnsrr", "a VIP needs IPVS"
        assert deploy["placement"]["constraints"] == [f"node.labels.{placement_label(name)} == true"]
        assert all(port["mode"] == "host" and port["published"] == port["target"] for port in service.get("ports", []))
    echo_ports = {(p["target"], p["protocol"]) for p in stack["services"]["echo"]["ports"]}
    assert {(7007, "tcp"), (7007, "udp"), (7008, "tcp"), (7008, "udp"), (7080, "tcp")} == echo_ports


def test_every_service_is_known_by_name_dot_network_on_each_network(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        for network, attrs in service["networks"].items():
            assert f"{name}.{network}" in attrs["aliases"]
    assert "collector" in stack["services"]["collector"]["networks"]["ctl"]["aliases"], "compose's alias kept"


def test_networks_are_attachable_overlays_with_compose_s_ipv4_subnets(
    compose: dict[str, Any], stack: dict[str, Any]
) -> None:
    assert set(stack["networks"]) == {"wan", "ctl"}
    for name, network in stack["networks"].items():
        assert (network["driver"], network["attachable"]) == ("overlay", True)
        source = [c["subnet"] for c in compose["networks"][name]["ipam"]["config"] if "." in c["subnet"]]
        assert [c["subnet"] for c in network["ipam"]["config"]] == source
    assert stack["volumes"]["ready"]["driver_opts"]["type"] == "tmpfs"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["socklab", "echo"], ["socklab", "echo"]),
        (["socklab", "client", "--after", "echo", "--serve", "--after", "router"], ["socklab", "client", "--serve"]),
        (
            ["sh", "-c", "ip r && exec setpriv --reuid=socklab --init-groups socklab registry -v"],
            ["socklab", "registry", "-v"],
        ),
    ],
)
def test_swarm_command(command: list[str], expected: list[str]) -> None:
    assert swarm_command(command) == expected


@pytest.mark.parametrize("count", [3, 4, 5])
def test_client_echo_and_registry_never_share_a_node(count: int) -> None:
    placed = placements([f"node{i}" for i in range(1, count + 1)])
    assert len({placed["client-wan"], placed["echo"], placed["registry"]}) == 3
    assert set(placed) == set(SWARM_SERVICES)
