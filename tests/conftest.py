"""The one conftest: services in-process on loopback for unit tests, the compose stack for integration tests."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from services.collector import Collector, Store, serve
from services.echo import EchoServer
from services.flows import Flow, FlowVerdict, join_flows
from services.registry import RegistryServer
from shared.reporter import Reporter
from tests.integration.stack import Stack


def free_port() -> int:
    """A loopback TCP port nobody holds right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll until check() is truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return result


def run_in_thread(serve_loop: Callable[[threading.Event], None]) -> Callable[[], None]:
    """Start a service's serve(stop) loop; return what stops it and waits for it."""
    stop = threading.Event()
    thread = threading.Thread(target=serve_loop, args=(stop,), daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(5)

    return halt


@dataclass
class LiveCollector:
    """A collector serving on loopback, and ways to read what it holds."""

    collector: Collector
    ingest: str
    query: str

    def wait_for_records(self, count: int) -> None:
        wait_until(lambda: len(self.collector.observations) >= count, f"{count} records")

    def wait_for_natcheck(self) -> list[dict[str, Any]]:
        return wait_until(lambda: self.collector.report()["natchecks"], "a natcheck result")  # type: ignore[no-any-return]

    def wait_for_flow(self, flow_id: str, both_ends: bool = True) -> Flow:
        """Poll until a flow is joined: both ends reported and the client's closing record is in."""

        def find() -> Flow | None:
            for flow in join_flows(list(self.collector.observations)):
                complete = flow.verdict != FlowVerdict.UNMATCHED and flow.client and "scenario" in flow.client.extra
                if flow.flow == flow_id and (not both_ends or complete):
                    return flow
            return None

        return wait_until(find, f"flow {flow_id}")  # type: ignore[no-any-return]


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def live_collector(tmp_path: Path, zmq_context: zmq.Context) -> Iterator[LiveCollector]:
    """A collector on loopback with its store in tmp_path."""
    store = Store(str(tmp_path / "records.bin"))
    collector = Collector(store)
    ingest, query = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    halt = run_in_thread(lambda stop: serve(collector, zmq_context, ingest, query, stop))
    yield LiveCollector(collector, ingest, query)
    halt()
    store.close()


@pytest.fixture
def reporter(zmq_context: zmq.Context, live_collector: LiveCollector) -> Iterator[Reporter]:
    reporter = Reporter(zmq_context, live_collector.ingest, "unit")
    yield reporter
    reporter.close()


@pytest.fixture
def echo_server(reporter: Reporter, tmp_path: Path) -> Iterator[EchoServer]:
    """echo on a loopback port, with its Unix socket in tmp_path."""
    server = EchoServer(reporter, 0, str(tmp_path / "echo.sock"))
    server.listen()
    halt = run_in_thread(server.serve)
    yield server
    halt()
    server.close()


@pytest.fixture
def registry_server(reporter: Reporter) -> Iterator[RegistryServer]:
    """The registry on loopback, STUN with 127.0.0.1 as primary and 127.0.0.2 as alternate address."""
    server = RegistryServer(reporter, 0, 0, stun_addresses=("127.0.0.1", "127.0.0.2"), stun_alt_port=0)
    halt = run_in_thread(server.serve)
    yield server
    halt()
    server.close()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The whole compose stack, up once per session and always taken down."""
    running = Stack()
    try:
        yield running.start()
    finally:
        running.stop()
