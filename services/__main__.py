"""socklab: one command for every service and tool (`socklab echo`, `socklab report --json`, ...)."""

from __future__ import annotations

import importlib
import logging
import signal
import sys

from shared.config import load_config

COMMANDS = {
    "echo": "services.echo",
    "registry": "services.registry",
    "client": "services.client",
    "collector": "services.collector",
    "router": "services.router",
    "report": "services.report",
    "health": "services.health",
    "natcheck": "services.natcheck",
    "config": "shared.config",
}


def stop(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit so finally blocks close sockets (PID 1 gets no default handler)."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Dispatch to a subcommand's main()."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: socklab {{{','.join(COMMANDS)}}} [options]")
    try:
        cfg = load_config(sys.argv[1])
    except ValueError as exc:
        sys.exit(f"socklab: {exc}")
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, stop)
    importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
