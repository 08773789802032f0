"""Helpers every test shares, unit and integration alike; fixtures live in tests/conftest.py."""

from __future__ import annotations

from shared.names import Name
from shared.polling import wait_for
from shared.report_model import Flow, FlowEnd

__all__ = ["ends", "host_port", "wait_for"]


def ends(flow: Flow) -> tuple[FlowEnd, FlowEnd]:
    """A complete flow's client and server ends; fail if one is missing."""
    assert flow.client is not None and flow.server is not None, f"flow {flow.flow} has one end only: {flow}"
    return flow.client, flow.server


def host_port(name: Name | None) -> tuple[str, int]:
    """An IP socket name's host and port, whether it has two items or four; fail on a path or nothing."""
    assert isinstance(name, tuple), f"{name!r} is not an IP socket name"
    return str(name[0]), int(name[1])
