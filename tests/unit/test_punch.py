"""Rendezvous and punching in-process on loopback: both ends paired at once, bad rendezvous input refused."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.punch import ParkedStreams, PunchOutcome, punch_once, serve
from services.registry import RegistryServer
from shared.config import Config, load_config
from shared.registry_protocol import connect, register
from shared.reporter import Reporter
from tests.conftest import LiveCollector, MakeReporter
from tests.helpers import wait_for

pytestmark = pytest.mark.unit


def config_for(service: str, registry: RegistryServer) -> Config:
    """A punch end's settings, pointing at the in-process registry."""
    env = {"SOCKLAB_REGISTRY": f"127.0.0.1:{registry.port}", "SOCKLAB_STUN_PORT": str(registry.stun_port)}
    return load_config(service, {"SOCKLAB_SERVICE": service, **env})


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_two_explicit_ends_meet_and_connect_under_one_flow(
    registry_server: RegistryServer, make_reporter: MakeReporter, live_collector: LiveCollector, proto: str
) -> None:
    ends = ("alice", "bob")
    reporters = {name: make_reporter(name) for name in ends}
    for name in ends:
        register(("127.0.0.1", registry_server.port), name, {}, reporters[name])
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(punch_once, config_for(name, registry_server), reporters[name], peer, proto, 3.0, 1.5)
            for name, peer in zip(ends, reversed(ends), strict=True)
        }
        outcomes: dict[str, PunchOutcome] = {name: future.result() for name, future in futures.items()}
    alice, bob = outcomes["alice"], outcomes["bob"]
    assert alice.connected and bob.connected, (alice.reason, bob.reason)
    assert alice.rendezvous.id == bob.rendezvous.id
    assert {alice.rendezvous.role, bob.rendezvous.role} == {"client", "server"}
    assert alice.seen_as == bob.seen_from and bob.seen_as == alice.seen_from
    flow = live_collector.wait_for_flow(alice.rendezvous.id)
    assert flow.client is not None and flow.server is not None and flow.scenario == f"punch-{proto}"


def test_a_serving_end_answers_whoever_asks_for_it(
    registry_server: RegistryServer, make_reporter: MakeReporter, zmq_context: object
) -> None:
    stop = threading.Event()
    cfg = config_for("bob", registry_server)
    thread = threading.Thread(target=serve, args=(cfg, zmq_context, "udp", stop, ParkedStreams([])), daemon=True)
    thread.start()
    wait_for(lambda: any(p.me.name == "bob" for p in registry_server.parked), "bob's serving request parked")
    try:
        outcome = punch_once(config_for("alice", registry_server), make_reporter("alice"), "bob", "udp", 3.0, 1.5)
    finally:
        stop.set()
    assert outcome.connected and outcome.rendezvous.peer.name == "bob", outcome.reason


def test_unknown_peer_never_answering_peer_and_a_forged_name_get_clear_errors(
    registry_server: RegistryServer, reporter: Reporter
) -> None:
    address = ("127.0.0.1", registry_server.port)
    with pytest.raises(LookupError, match="unknown peer 'nobody'"):
        punch_once(config_for("alice", registry_server), reporter, "nobody", "tcp", 1.0, 0.5)
    register(address, "quiet", {}, reporter)
    with pytest.raises(LookupError, match=r"'quiet' never asked for a rendezvous with 'alice' within 0\.3 s"):
        punch_once(config_for("alice", registry_server), reporter, "quiet", "tcp", 0.3, 0.5)
    registry_server.registrations[next(iter(registry_server.registrations))].observed = ("192.0.2.7", 1)
    with socket.create_connection(address) as stream, pytest.raises(LookupError, match="not yours to claim"):
        connect(stream, address, "quiet", "alice", ("127.0.0.1", 1), reporter)
