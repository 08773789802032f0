"""The one poller, for the test host: socklab's tests and the pytest plugin's stack handle wait with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

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
