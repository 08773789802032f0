"""Readiness: a service writes a file once it is ready; health checks, waiting services and `make up` read it.

The files live in one tmpfs volume every container mounts (compose's `ready`), so a health check is
`test -f` (a Python check every second cost 6-9 % of a core per container), a client can wait for echo
and the router, and `make up` waits for the whole stack with one exec (`socklab health`). The volume
starts empty with the stack: a file is never one that a previous run left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

READY_DIR = Path("/run/socklab-ready")
POLL_INTERVAL = 0.05


def mark_ready(service: str, note: str, directory: Path = READY_DIR) -> None:
    """Say `service` is ready (its sockets bound, its first round done) and what it is ready with."""
    (directory / service).write_text(note + "\n")
    log.info("%s ready: %s", service, note)


def not_ready(services: Iterable[str], directory: Path = READY_DIR) -> list[str]:
    """The services that have not said they are ready."""
    return [service for service in services if not (directory / service).exists()]


def wait_ready(services: Iterable[str], timeout: float, directory: Path = READY_DIR) -> None:
    """Wait until every service is ready, so what comes next finds them serving; TimeoutError names the rest."""
    deadline, services = time.monotonic() + timeout, list(services)
    while missing := not_ready(services, directory):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout:g} s: {', '.join(missing)}")
        time.sleep(POLL_INTERVAL)
