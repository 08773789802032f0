"""The one conftest: services in-process on loopback for unit tests; the compose stack for integration."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import zmq
from hypothesis import HealthCheck, settings

from services.collector import Collector, Store, bind, serve
from services.echo import EchoServer
from services.flows import join_flows
from services.registry import RegistryServer
from shared.curve import make_keys
from shared.record import Observation
from shared.report_model import Flow
from shared.reporter import Reporter
from tests.helpers import wait_for

if TYPE_CHECKING:
    from shared.stack import Stack

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# Property tests (tests/unit/test_properties.py): seconds in all by default; HYPOTHESIS_PROFILE=fuzz for long runs.
settings.register_profile("default", max_examples=40, deadline=None, database=None)
settings.register_profile(
    "fuzz", max_examples=200_000, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

MakeReporter = Callable[[str], Reporter]
ZmqSocket = Callable[[int], zmq.Socket]


class Loops:
    """Services' serve(stop) loops in threads, sharing one stop: the first halt stops them all at once."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.crashed: list[BaseException] = []

    def start(self, serve_loop: Callable[[threading.Event], None]) -> Callable[[], None]:
        """Run a loop; return what stops it, checks it stopped, and re-raises a crash of any loop."""

        def run() -> None:
            try:
                serve_loop(self.stop)
            except BaseException as exc:
                self.crashed.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def halt() -> None:
            self.stop.set()
            thread.join(5)
            assert not thread.is_alive(), "a serve loop did not stop within 5 s"
            if self.crashed:
                raise self.crashed.pop()

        return halt


@dataclass
class LiveCollector:
    """A collector serving on loopback, and ways to wait for what it holds."""

    collector: Collector
    ingest: str
    query: str

    def records(self, flow: str | None = None) -> list[Observation]:
        return [o for o in list(self.collector.observations) if flow is None or o.flow == flow]

    def wait_for_records(
        self, match: Callable[[Observation], bool] = lambda _: True, count: int = 1, what: str = "records"
    ) -> list[Observation]:
        """Poll until at least `count` stored records satisfy `match`; return all that do."""

        def found() -> list[Observation] | None:
            hits = [o for o in self.records() if match(o)]
            return hits if len(hits) >= count else None

        return wait_for(found, f"{count} {what}")

    def wait_for_flow(self, flow_id: str) -> Flow:
        """Poll until a flow is complete: both ends joined and the client's closing record is in."""

        def find() -> Flow | None:
            return next((flow for flow in join_flows(self.records(flow_id)) if flow.complete), None)

        return wait_for(find, f"flow {flow_id} joined")


@pytest.fixture(scope="session", autouse=True)
def curve_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stack's keys for the session, made as the collector makes them, and SOCKLAB_KEYS pointing at them."""
    keys = tmp_path_factory.mktemp("keys")
    make_keys(keys)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOCKLAB_KEYS", str(keys))
        yield keys


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture
def zmq_socket(zmq_context: zmq.Context) -> Iterator[ZmqSocket]:
    """ZeroMQ sockets of a kind, each with a 5 s receive timeout and closed at teardown."""
    made: list[zmq.Socket] = []

    def make(kind: int) -> zmq.Socket:
        made.append(zmq_context.socket(kind))
        made[-1].setsockopt(zmq.RCVTIMEO, 5000)
        return made[-1]

    try:
        yield make
    finally:
        for sock in made:
            sock.close(linger=0)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback TCP port held bound but never listening: connecting is refused, and no one else takes it.

    Held with SO_REUSEADDR, so a socket that sets it too (tcp-bound's client) may still bind the port.
    """
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@pytest.fixture
def loops() -> Loops:
    return Loops()


@pytest.fixture
def live_collector(tmp_path: Path, zmq_context: zmq.Context, loops: Loops) -> Iterator[LiveCollector]:
    """A collector on loopback in a thread, with its store in tmp_path."""
    store = Store(str(tmp_path / "records.bin"))
    collector = Collector(store)
    pull, rep = bind(zmq_context, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    ingest, query = (sock.getsockopt_string(zmq.LAST_ENDPOINT) for sock in (pull, rep))
    halt = loops.start(lambda stop: serve(collector, pull, rep, stop))  # the loop's thread owns them from here
    try:
        yield LiveCollector(collector, ingest, query)
    finally:
        try:
            halt()
        finally:
            store.close()


@pytest.fixture
def make_reporter(zmq_context: zmq.Context, live_collector: LiveCollector) -> Iterator[MakeReporter]:
    """Reporters pushing to the live collector, one per thread: a ZeroMQ socket must not be shared."""
    made: list[Reporter] = []

    def make(service: str) -> Reporter:
        made.append(Reporter(zmq_context, live_collector.ingest, service))
        return made[-1]

    try:
        yield make
    finally:
        for reporter in made:
            reporter.close(grace=0.1)  # the serve loops may have stopped the collector already


@pytest.fixture
def reporter(make_reporter: MakeReporter) -> Reporter:
    """The test thread's own Reporter (service "client"), for clients the test runs."""
    return make_reporter("client")


def serving(loops: Loops, server: Any) -> Iterator[Any]:
    """Run a service's loop for one test, then stop it and close its sockets, whatever the test did."""
    halt = loops.start(server.serve)
    try:
        yield server
    finally:
        try:
            halt()
        finally:
            server.close()


@pytest.fixture
def echo_server(make_reporter: MakeReporter, loops: Loops, tmp_path: Path) -> Iterator[EchoServer]:
    """echo on ephemeral dual-stack ports (echo, whoami, HTTP whoami), its Unix socket in tmp_path, its own Reporter."""
    server = EchoServer(make_reporter("echo"), 0, str(tmp_path / "echo.sock"), whoami_port=0, http_port=0)
    server.listen()
    yield from serving(loops, server)


@pytest.fixture
def registry_server(make_reporter: MakeReporter, loops: Loops) -> Iterator[RegistryServer]:
    """The registry on ephemeral dual-stack ports: TCP requests and one STUN socket, no RFC 5780 alternate."""
    yield from serving(loops, RegistryServer(make_reporter("registry"), 0, 0))


@pytest.fixture(scope="session")
def stack(socklab_stack: Stack) -> Stack:
    """The pytest plugin's session stack (shared.pytest_plugin): the integration suite and examples/ share it."""
    return socklab_stack
