"""Configuration from the environment: every default, every variable read and parsed, bad values named."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from shared.config import SETTINGS, Config, load_config, markdown_table
from shared.nat import Behaviour, NatMode

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_compose_stacks() -> None:
    cfg = load_config("echo", {})
    assert cfg.service == "echo"
    assert (cfg.collector, cfg.query) == ("tcp://collector:5555", "tcp://collector:5556")
    assert cfg.registries == (("registry", 5300),)
    assert (cfg.echo_port, cfg.registry_port, cfg.stun_port, cfg.stun_alt_port) == (7007, 5300, 3478, 3479)
    assert (cfg.ingest_port, cfg.query_port, cfg.http_port, cfg.bind_port) == (5555, 5556, 8080, 47000)
    assert (cfg.unix_path, cfg.store, cfg.stun_addresses) == (
        "/run/socklab/echo.sock",
        "/var/lib/socklab/records.bin",
        (),
    )
    assert (cfg.nat_mode, cfg.nat_filter, cfg.nat_hairpin) == (
        NatMode.CONE,
        Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        False,
    )
    assert cfg.lan_subnet == ipaddress.IPv4Network("192.168.50.0/24")
    assert cfg.lan6_subnet == ipaddress.IPv6Network("fd00:50::/64")
    assert (cfg.dmz, cfg.log_level) == (None, "INFO")
    assert (cfg.router_udp_timeout, cfg.router_udp_stream_timeout) == (30, 120)


def test_every_variable_is_read_and_parsed() -> None:
    env = {
        "SOCKLAB_SERVICE": "client-lan",
        "SOCKLAB_NODE": "node2",
        "SOCKLAB_COLLECTOR": "tcp://127.0.0.1:1",
        "SOCKLAB_QUERY": "tcp://127.0.0.1:2",
        "SOCKLAB_REGISTRY": "198.51.100.3:5300, [2001:db8:100::3]:5301",
        "SOCKLAB_ECHO_PORT": "3",
        "SOCKLAB_WHOAMI_PORT": "11",
        "SOCKLAB_HTTP_WHOAMI_PORT": "12",
        "SOCKLAB_UNIX_PATH": "/tmp/e.sock",
        "SOCKLAB_REGISTRY_PORT": "4",
        "SOCKLAB_STUN_PORT": "5",
        "SOCKLAB_STUN_ADDRESSES": " 198.51.100.3, 198.51.100.4 ,",
        "SOCKLAB_STUN_ALT_PORT": "6",
        "SOCKLAB_KEYS": "/tmp/keys",
        "SOCKLAB_STORE": "/tmp/r.bin",
        "SOCKLAB_INGEST_PORT": "7",
        "SOCKLAB_QUERY_PORT": "8",
        "SOCKLAB_HTTP_PORT": "9",
        "SOCKLAB_BIND_PORT": "10",
        "NAT_MODE": "symmetric",
        "NAT_FILTER": "endpoint-independent",
        "NAT_HAIRPIN": "on",
        "NAT_MODE2": "symmetric",
        "NAT_FILTER2": "endpoint-independent",
        "NAT_HAIRPIN2": "on",
        "NAT_MODE_CGN": "symmetric",
        "NAT_FILTER_CGN": "endpoint-independent",
        "NAT_HAIRPIN_CGN": "off",
        "SOCKLAB_LAN_SUBNET": "10.1.0.0/16",
        "SOCKLAB_LAN6_SUBNET": "",
        "SOCKLAB_DMZ": "10.1.0.20",
        "SOCKLAB_ROUTER_UDP_TIMEOUT": "5",
        "SOCKLAB_ROUTER_UDP_STREAM_TIMEOUT": "11",
        "SOCKLAB_LOG": "debug",
    }
    assert sorted(env) == sorted(s.variable for s in SETTINGS), "this test sets every declared variable"
    cfg = load_config("client", env)
    assert (cfg.service, cfg.collector, cfg.query) == ("client-lan", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert cfg.node == "node2"
    assert cfg.registries == (("198.51.100.3", 5300), ("2001:db8:100::3", 5301))
    assert (cfg.unix_path, cfg.keys, cfg.store, cfg.stun_addresses) == (
        "/tmp/e.sock",
        "/tmp/keys",
        "/tmp/r.bin",
        ("198.51.100.3", "198.51.100.4"),
    )
    assert (cfg.echo_port, cfg.registry_port, cfg.stun_port, cfg.stun_alt_port) == (3, 4, 5, 6)
    assert (cfg.ingest_port, cfg.query_port, cfg.http_port, cfg.bind_port) == (7, 8, 9, 10)
    assert (cfg.whoami_port, cfg.http_whoami_port) == (11, 12)
    assert (cfg.nat_mode, cfg.nat_filter, cfg.nat_hairpin) == (NatMode.SYMMETRIC, Behaviour.ENDPOINT_INDEPENDENT, True)
    assert (cfg.nat_mode2, cfg.nat_filter2, cfg.nat_hairpin2) == (
        NatMode.SYMMETRIC,
        Behaviour.ENDPOINT_INDEPENDENT,
        True,
    )
    assert (cfg.nat_mode_cgn, cfg.nat_filter_cgn, cfg.nat_hairpin_cgn) == (
        NatMode.SYMMETRIC,
        Behaviour.ENDPOINT_INDEPENDENT,
        False,
    )
    assert (cfg.lan_subnet, cfg.lan6_subnet) == (ipaddress.IPv4Network("10.1.0.0/16"), None)
    assert (cfg.dmz, cfg.log_level) == (ipaddress.IPv4Address("10.1.0.20"), "DEBUG")
    assert (cfg.router_udp_timeout, cfg.router_udp_stream_timeout) == (5, 11)


def test_every_config_field_is_declared_once() -> None:
    declared = [s.field for s in SETTINGS]
    assert sorted(declared) == sorted(f.name for f in fields(Config))
    variables = [s.variable for s in SETTINGS]
    assert len(set(variables)) == len(variables)


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("SOCKLAB_ECHO_PORT", "seven", "'seven' is not a port number"),
        ("SOCKLAB_BIND_PORT", "70000", "out of range"),
        ("SOCKLAB_REGISTRY", "registry", "missing port"),
        ("SOCKLAB_REGISTRY", " , ", "at least one host:port"),
        ("SOCKLAB_STUN_ADDRESSES", "198.51.100.3,2001:db8::1", "IPv4"),
        ("NAT_MODE", "cgnat", "'cgnat' is not one of cone, symmetric"),
        ("NAT_FILTER", "address-dependent", "is not one of address-and-port-dependent, endpoint-independent"),
        ("NAT_FILTER", "open", "is not one of"),
        ("NAT_HAIRPIN", "yes", "'yes' is not one of on, off"),
        ("SOCKLAB_LAN_SUBNET", "192.168.50.1/24", "host bits set"),
        ("SOCKLAB_LAN6_SUBNET", "192.168.50.0/24", "IPv6"),
        ("SOCKLAB_DMZ", "client-lan", "IPv4"),
        ("SOCKLAB_LOG", "LOUD", "not a log level"),
        ("SOCKLAB_ROUTER_UDP_TIMEOUT", "0", "0 s is not a timeout: at least 1"),
        ("SOCKLAB_ROUTER_UDP_STREAM_TIMEOUT", "2.5", "'2.5' is not a whole number of seconds"),
        ("SOCKLAB_COLLECTOR", "", "must not be empty"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable(variable: str, value: str, error: str) -> None:
    with pytest.raises(ValueError, match=rf"^{variable}={re.escape(repr(value))}: .*{re.escape(error)}"):
        load_config("echo", {variable: value})


def test_readme_holds_exactly_the_generated_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == markdown_table(), "regenerate README.md's table with `socklab config --markdown`"
    assert all(f"| {s.variable} |" in table for s in SETTINGS)


def test_the_config_command_prints_the_table_and_what_the_environment_sets() -> None:
    run = [sys.executable, "-m", "services", "config"]
    env = {**os.environ, "NAT_MODE": "symmetric", "SOCKLAB_REGISTRY": "[::1]:1,127.0.0.1:2"}
    markdown = subprocess.run([*run, "--markdown"], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    assert markdown.stdout == markdown_table()
    values = subprocess.run(run, env=env, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert re.search(r"^NAT_MODE +symmetric$", values, re.M)
    assert re.search(r"^SOCKLAB_REGISTRY +\(\('::1', 1\), \('127.0.0.1', 2\)\)$", values, re.M)


def test_a_bad_value_stops_any_command_with_its_name() -> None:
    env = {**os.environ, "SOCKLAB_ECHO_PORT": "seven"}
    done = subprocess.run(
        [sys.executable, "-m", "services", "report"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode != 0
    assert done.stderr.strip().startswith("socklab: SOCKLAB_ECHO_PORT='seven'")
