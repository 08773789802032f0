"""Readiness: a service writes a file once it is ready; health checks, waiting services and `make up` read it.

The files live in one tmpfs volume every container mounts (compose's `ready`), so a health check is
`test -f` (a Python check every second cost 6-9 % of a core per container), a client can wait for echo
and the router, and `make up` waits for the whole stack with one exec. The volume starts empty with the
stack: a file is never one that a previous run left.
"""

from __future__ import annotations

import argparse
import logging
import sys
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


def main(argv: list[str] | None = None) -> None:
    """Wait until the named services are ready: `make up` and the tests run this before the first report."""
    parser = argparse.ArgumentParser(prog="socklab health", description=main.__doc__)
    parser.add_argument("services", nargs="+", metavar="SERVICE", help="compose service names")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    parser.add_argument("--directory", type=Path, default=READY_DIR, help="where ready files are")
    args = parser.parse_args(argv)
    try:
        wait_ready(args.services, args.timeout, args.directory)
    except TimeoutError as exc:
        sys.exit(f"socklab health: {exc}")
