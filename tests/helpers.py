"""Helpers every test shares, unit and integration alike; fixtures live in tests/conftest.py."""

from __future__ import annotations

from shared.names import Name
from shared.nat import Behaviour
from shared.polling import wait_for
from shared.report_model import Flow, FlowEnd, NatCheckResult, StunTransaction

__all__ = ["NATCHECK_RESULT", "STUN_TRANSACTIONS", "ends", "host_port", "wait_for"]

# natcheck's tests as a client behind the cone router saw them: answered, unanswered, refused.
STUN_TRANSACTIONS = (
    StunTransaction(
        "mapping-1 primary",
        ("192.168.50.20", 41579),
        ("198.51.100.3", 3478),
        mapped=("198.51.100.2", 41579),
        source=("198.51.100.3", 3478),
        response_origin=("198.51.100.3", 3478),
        other_address=("198.51.100.4", 3479),
    ),
    StunTransaction("filtering-2 change address and port", ("192.168.50.20", 41579), ("198.51.100.3", 3478)),
    StunTransaction(
        "filtering-3 change port", ("192.168.50.20", 1), ("198.51.100.3", 3478), error=(420, "Unknown Attribute")
    ),
)
# The summary natcheck makes of them, without a lifetime: what the report and the collector's tests carry.
NATCHECK_RESULT = NatCheckResult(
    mapping=Behaviour.ENDPOINT_INDEPENDENT,
    filtering=Behaviour.ADDRESS_AND_PORT_DEPENDENT,
    port_preserved=True,
    hairpin=False,
    mapped_address=("198.51.100.2", 41579),
    local_address=("192.168.50.20", 41579),
    server=("198.51.100.3", 3478),
    other_address=("198.51.100.4", 3479),
    tests=STUN_TRANSACTIONS,
)


def ends(flow: Flow) -> tuple[FlowEnd, FlowEnd]:
    """A complete flow's client and server ends; fail if one is missing."""
    assert flow.client is not None and flow.server is not None, f"flow {flow.flow} has one end only: {flow}"
    return flow.client, flow.server


def host_port(name: Name | None) -> tuple[str, int]:
    """An IP socket name's host and port, whether it has two items or four; fail on a path or nothing."""
    assert isinstance(name, tuple), f"{name!r} is not an IP socket name"
    return str(name[0]), int(name[1])
