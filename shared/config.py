"""Configuration from environment variables, each with a documented default.

| variable            | default                    | meaning                                            |
|---------------------|----------------------------|----------------------------------------------------|
| SOCKLAB_SERVICE     | the subcommand's name      | service name written into every report             |
| SOCKLAB_COLLECTOR   | tcp://collector:5555       | collector's ZeroMQ PULL endpoint (reports)         |
| SOCKLAB_QUERY       | tcp://collector:5556       | collector's ZeroMQ REP endpoint (queries)          |
| SOCKLAB_REGISTRY    | registry:5300              | registry's TCP host:port, comma-separated for several |
| SOCKLAB_ECHO_PORT   | 7007                       | echo's TCP and UDP port                            |
| SOCKLAB_UNIX_PATH   | /run/socklab/echo.sock     | echo's Unix stream socket                          |
| SOCKLAB_REGISTRY_PORT | 5300                     | registry's TCP port                                |
| SOCKLAB_STUN_PORT   | 3478                       | registry's STUN port (UDP)                         |
| SOCKLAB_STUN_ADDRESSES | (empty)                 | primary,alternate IPv4 for RFC 5780; empty: one dual-stack socket |
| SOCKLAB_STUN_ALT_PORT | 3479                     | RFC 5780's alternate STUN port                     |
| SOCKLAB_STORE       | /var/lib/socklab/records.bin | collector's append-only store                    |
| SOCKLAB_INGEST_PORT | 5555                       | collector's PULL port                              |
| SOCKLAB_QUERY_PORT  | 5556                       | collector's REP port                               |
| SOCKLAB_HTTP_PORT   | 8080                       | collector's live page (/ and /report.json)         |
| SOCKLAB_BIND_PORT   | 47000                      | the client's explicit source port (tcp-bound)      |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Everything a service reads from its environment."""

    service: str
    collector: str
    query: str
    registry: str
    echo_port: int
    unix_path: str
    registry_port: int
    stun_port: int
    stun_addresses: tuple[str, ...]
    stun_alt_port: int
    store: str
    ingest_port: int
    query_port: int
    http_port: int
    bind_port: int


def load_config(service: str, env: Mapping[str, str] | None = None) -> Config:
    """Read the configuration so that compose and tests can supply every address."""
    env = os.environ if env is None else env
    return Config(
        service=env.get("SOCKLAB_SERVICE", service),
        collector=env.get("SOCKLAB_COLLECTOR", "tcp://collector:5555"),
        query=env.get("SOCKLAB_QUERY", "tcp://collector:5556"),
        registry=env.get("SOCKLAB_REGISTRY", "registry:5300"),
        echo_port=int(env.get("SOCKLAB_ECHO_PORT", "7007")),
        unix_path=env.get("SOCKLAB_UNIX_PATH", "/run/socklab/echo.sock"),
        registry_port=int(env.get("SOCKLAB_REGISTRY_PORT", "5300")),
        stun_port=int(env.get("SOCKLAB_STUN_PORT", "3478")),
        stun_addresses=tuple(a.strip() for a in env.get("SOCKLAB_STUN_ADDRESSES", "").split(",") if a.strip()),
        stun_alt_port=int(env.get("SOCKLAB_STUN_ALT_PORT", "3479")),
        store=env.get("SOCKLAB_STORE", "/var/lib/socklab/records.bin"),
        ingest_port=int(env.get("SOCKLAB_INGEST_PORT", "5555")),
        query_port=int(env.get("SOCKLAB_QUERY_PORT", "5556")),
        http_port=int(env.get("SOCKLAB_HTTP_PORT", "8080")),
        bind_port=int(env.get("SOCKLAB_BIND_PORT", "47000")),
    )
