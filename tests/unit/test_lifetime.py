"""natcheck --lifetime on loopback: RESPONSE-PORT at the registry, the search's rounds, the added JSON keys."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from services import lifetime, natcheck
from services.registry import RegistryServer
from services.stun_server import binding_response
from shared import stun
from shared.report_model import LifetimeProbe, MappingLifetime, NatCheckResult
from shared.reporter import Reporter

pytestmark = pytest.mark.unit

Probes = Callable[[], natcheck.StunProbe]


@pytest.fixture
def open_probe(registry_server: RegistryServer, make_reporter: Callable[[str], Reporter]) -> Probes:
    """Fresh natcheck sockets against the in-process registry, as --lifetime opens them."""
    reporter = make_reporter("natcheck")
    return lambda: natcheck.StunProbe(reporter, ("127.0.0.1", registry_server.stun_port), timeout=0.2, attempts=2)


@pytest.fixture
def deaf_stun_server() -> Iterator[tuple[str, int]]:
    """A STUN server that answers every Binding request to its source, ignoring RESPONSE-PORT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                data, source = sock.recvfrom(2048)
            except TimeoutError:
                continue
            request = stun.unpack_message(data)
            sock.sendto(stun.pack_message(binding_response(request, source)), source)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield sock.getsockname()
    stop.set()
    thread.join(2)
    sock.close()


def test_the_registry_answers_at_response_port_to_the_requests_host(registry_server: RegistryServer) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as asker,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
    ):
        for sock in (asker, target):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(2)
        request = stun.binding_request()
        request.attributes[stun.Attr.RESPONSE_PORT] = target.getsockname()[1]
        asker.sendto(stun.pack_message(request), ("127.0.0.1", registry_server.stun_port))
        answer = stun.unpack_message(target.recv(2048))
        assert answer.transaction_id == request.transaction_id
        assert answer.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == asker.getsockname(), "the asker's own name"
        asker.settimeout(0.2)
        with pytest.raises(TimeoutError):
            asker.recv(2048)


def test_on_loopback_no_mapping_ever_expires(open_probe: Probes, registry_server: RegistryServer) -> None:
    measured = lifetime.measure_lifetime(open_probe, ("127.0.0.1", registry_server.stun_port), 0.4, 0.1)
    assert measured.expired is None and measured.survived >= 0.4
    assert [round(p.idle, 1) for p in measured.probes] == [0.1, 0.2, 0.4]
    assert all(p.alive and p.mapped == p.local for p in measured.probes)
    assert len({p.local for p in measured.probes}) == 3, "every probe is a fresh socket"


def test_a_server_ignoring_response_port_is_an_error_not_an_expiry(
    deaf_stun_server: tuple[str, int], reporter: Reporter
) -> None:
    def open_probe() -> natcheck.StunProbe:
        return natcheck.StunProbe(reporter, deaf_stun_server, timeout=0.2, attempts=2)

    with pytest.raises(OSError, match="ignores RESPONSE-PORT"):
        lifetime.measure_lifetime(open_probe, deaf_stun_server, 0.2, 0.1)


def test_rounds_double_then_split_the_bracket() -> None:
    assert lifetime.doubling(1, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert lifetime.doubling(1, 8) == [1, 2, 4, 8]
    assert lifetime.doubling(0.5, 5) == [0.5, 1, 2, 4, 5]
    assert lifetime.splitting(4.001, 8.003, 1) == [5.001, 6.001, 7.001]
    assert lifetime.splitting(4, 5, 1) == []
    probes = [LifetimeProbe(i, ("10.0.0.1", i), ("10.0.0.2", i), i < 5) for i in (1, 2, 4, 8)]
    assert lifetime.bracket(probes) == (4, 8)
    assert lifetime.bracket(probes[:3]) == (4, None)


def test_resolution_must_fit_the_bound(open_probe: Probes) -> None:
    with pytest.raises(ValueError, match="need 0 < resolution"):
        lifetime.measure_lifetime(open_probe, ("127.0.0.1", 1), 1, 2)


def test_lifetime_keys_are_added_and_read_back() -> None:
    base = NatCheckResult.from_wire(
        {
            "mapping": "endpoint-independent",
            "filtering": "address-and-port-dependent",
            "port_preserved": True,
            "hairpin": False,
            "mapped_address": ["198.51.100.2", 4000],
            "local_address": ["192.168.50.20", 4000],
            "server": ["198.51.100.3", 3478],
            "other_address": None,
        }
    )
    assert base.lifetime is None and "mapping_lifetime" not in base.to_wire(), "without --lifetime, no new keys"
    probe = LifetimeProbe(5.002, ("192.168.50.20", 4001), ("198.51.100.2", 4001), False)
    measured = MappingLifetime(survived=4.001, expired=5.002, probes=(probe,))
    wire = NatCheckResult(**{**base.__dict__, "lifetime": measured}).to_wire()
    assert wire["mapping_lifetime"] == 5.002 and wire["mapping_lifetime_survived"] == 4.001
    assert wire["mapping_lifetime_probes"] == [
        {"idle": 5.002, "local": ["192.168.50.20", 4001], "mapped": ["198.51.100.2", 4001], "alive": False}
    ]
    assert NatCheckResult.from_wire(wire).lifetime == measured
    with pytest.raises(ValueError, match="lifetime probe 'alive' has type str"):
        NatCheckResult.from_wire(
            {**wire, "mapping_lifetime_probes": [{**wire["mapping_lifetime_probes"][0], "alive": "no"}]}
        )


def test_natcheck_refuses_a_resolution_above_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        natcheck.main(["--lifetime", "--lifetime-max", "2", "--resolution", "3"])
    assert stopped.value.code == 2
    assert "--resolution must be above 0 and at most --lifetime-max" in capsys.readouterr().err
