"""socklab health: wait until services are ready (shared.readiness), as `make up` and the tests do."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.readiness import READY_DIR, wait_ready


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
