"""Configuration from the environment: every default, and every variable read."""

from __future__ import annotations

import pytest

from shared.config import load_config

pytestmark = pytest.mark.unit


def test_defaults_are_the_compose_stacks() -> None:
    cfg = load_config("echo", {})
    assert cfg.service == "echo"
    assert (cfg.collector, cfg.query) == ("tcp://collector:5555", "tcp://collector:5556")
    assert cfg.registry == "registry:5300"
    assert (cfg.echo_port, cfg.registry_port, cfg.stun_port, cfg.stun_alt_port) == (7007, 5300, 3478, 3479)
    assert (cfg.ingest_port, cfg.query_port, cfg.http_port, cfg.bind_port) == (5555, 5556, 8080, 47000)
    assert (cfg.unix_path, cfg.store, cfg.stun_addresses) == (
        "/run/socklab/echo.sock",
        "/var/lib/socklab/records.bin",
        (),
    )


def test_every_variable_is_read() -> None:
    env = {
        "SOCKLAB_SERVICE": "client-lan",
        "SOCKLAB_COLLECTOR": "tcp://127.0.0.1:1",
        "SOCKLAB_QUERY": "tcp://127.0.0.1:2",
        "SOCKLAB_REGISTRY": "198.51.100.3:5300,[2001:db8:100::3]:5300",
        "SOCKLAB_ECHO_PORT": "3",
        "SOCKLAB_UNIX_PATH": "/tmp/e.sock",
        "SOCKLAB_REGISTRY_PORT": "4",
        "SOCKLAB_STUN_PORT": "5",
        "SOCKLAB_STUN_ADDRESSES": " 198.51.100.3, 198.51.100.4 ,",
        "SOCKLAB_STUN_ALT_PORT": "6",
        "SOCKLAB_STORE": "/tmp/r.bin",
        "SOCKLAB_INGEST_PORT": "7",
        "SOCKLAB_QUERY_PORT": "8",
        "SOCKLAB_HTTP_PORT": "9",
        "SOCKLAB_BIND_PORT": "10",
    }
    cfg = load_config("client", env)
    assert (cfg.service, cfg.collector, cfg.query) == ("client-lan", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert cfg.registry == "198.51.100.3:5300,[2001:db8:100::3]:5300"
    assert (cfg.unix_path, cfg.store, cfg.stun_addresses) == (
        "/tmp/e.sock",
        "/tmp/r.bin",
        ("198.51.100.3", "198.51.100.4"),
    )
    assert (cfg.echo_port, cfg.registry_port, cfg.stun_port, cfg.stun_alt_port) == (3, 4, 5, 6)
    assert (cfg.ingest_port, cfg.query_port, cfg.http_port, cfg.bind_port) == (7, 8, 9, 10)


def test_a_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        load_config("echo", {"SOCKLAB_ECHO_PORT": "seven"})
