"""natcheck against the registry's STUN responder on loopback (127.0.0.1 primary, 127.0.0.2 alternate)."""

from __future__ import annotations

import pytest

from services.natcheck import classify, format_summary, run_natcheck
from services.registry import RegistryServer
from shared.reporter import Reporter
from tests.conftest import LiveCollector, wait_until

pytestmark = pytest.mark.unit


def test_no_nat_on_loopback(registry_server: RegistryServer, reporter: Reporter, live_collector: LiveCollector) -> None:
    result = run_natcheck(reporter, ("127.0.0.1", registry_server.stun_port), timeout=0.3, attempts=2)
    assert result["mapping"] == "none"
    assert result["filtering"] == "endpoint-independent", "nothing filters on loopback"
    assert result["port_preserved"] is True and result["hairpin"] is True
    assert result["mapped_address"] == result["local_address"]
    assert result["tests"][0]["response_origin"] == ["127.0.0.1", registry_server.stun_port]
    assert {t["name"] for t in result["tests"]} >= {"mapping-1 primary", "filtering-2 change address and port"}

    def stun_flows_direct() -> bool:
        joined = [f for f in live_collector.collector.report()["flows"] if f["client"] and f["server"]]
        return bool(joined) and all(f["flow"].startswith("stun-") and f["verdict"] == "direct" for f in joined)

    wait_until(stun_flows_direct, "every STUN transaction joined and judged direct")
    assert "mapping:        none" in format_summary(result)


def test_natcheck_result_reaches_the_collector(
    registry_server: RegistryServer, reporter: Reporter, live_collector: LiveCollector
) -> None:
    result = run_natcheck(reporter, ("127.0.0.1", registry_server.stun_port), timeout=0.3, attempts=2)
    checks = live_collector.wait_for_natcheck()
    assert checks[-1]["mapped_address"] == result["mapped_address"]


@pytest.mark.parametrize(
    ("mapped", "behaviour"),
    [
        ((("1.1.1.1", 5), ("1.1.1.1", 5), None), "endpoint-independent"),
        ((("1.1.1.1", 5), ("1.1.1.1", 6), ("1.1.1.1", 6)), "address-dependent"),
        ((("1.1.1.1", 5), ("1.1.1.1", 6), ("1.1.1.1", 7)), "address-and-port-dependent"),
    ],
)
def test_classify_reads_rfc5780_mapping_tests(mapped: tuple, behaviour: str) -> None:  # type: ignore[type-arg]
    assert classify(*mapped) == behaviour
