"""Helpers every test shares, unit and integration alike; fixtures live in tests/conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

from shared.names import Name
from shared.report_model import Flow, FlowEnd

Found = TypeVar("Found")


def wait_for(
    check: Callable[[], Found | Literal[False] | None], what: str, timeout: float = 10.0, interval: float = 0.02
) -> Found:
    """Poll until check() returns something truthy and return it; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def ends(flow: Flow) -> tuple[FlowEnd, FlowEnd]:
    """A complete flow's client and server ends; fail if one is missing."""
    assert flow.client is not None and flow.server is not None, f"flow {flow.flow} has one end only: {flow}"
    return flow.client, flow.server


def host_port(name: Name | None) -> tuple[str, int]:
    """An IP socket name's host and port, whether it has two items or four; fail on a path or nothing."""
    assert isinstance(name, tuple), f"{name!r} is not an IP socket name"
    return str(name[0]), int(name[1])
