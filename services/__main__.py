"""socklab: one command for every service and tool (`socklab echo`, `socklab report --json`, ...)."""

from __future__ import annotations

import argparse
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
    "cases": "services.cases",
    "punch": "services.punch",
    "config": "shared.config",
    "explain": "services.explain",
    "docker-facts": "services.docker_facts",
    "swarm": "services.swarm",
    "node-conntrack": "services.node_conntrack",
}


def stop(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit so finally blocks close sockets (PID 1 gets no default handler)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a subcommand's main(); no command or an unknown one prints the usage and exits 2."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="socklab", description=__doc__, epilog="socklab COMMAND --help: its options")
    parser.add_argument("command", choices=COMMANDS, help="the service or tool to run")
    command = parser.parse_args(argv[:1]).command
    try:
        cfg = load_config(command)
    except ValueError as exc:
        sys.exit(f"socklab: {exc}")
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, stop)
    importlib.import_module(COMMANDS[command]).main(argv[1:])


if __name__ == "__main__":
    main()
