"""socklab health: the checks compose runs, each answering within a second."""

from __future__ import annotations

import argparse
import os
import socket
import sys

import zmq

from shared.collector_protocol import query_collector
from shared.config import load_config


def main(argv: list[str] | None = None) -> None:
    """Exit 0 when the named thing answers: a local TCP port, the collector, or a ready file."""
    parser = argparse.ArgumentParser(prog="socklab health", description=main.__doc__)
    parser.add_argument("--tcp", type=int, help="a local TCP port that must accept")
    parser.add_argument("--collector", action="store_true", help="the collector must answer a ping")
    parser.add_argument("--file", help="a file that must exist")
    args = parser.parse_args(argv)
    try:
        if args.tcp is not None:
            socket.create_connection(("localhost", args.tcp), timeout=1).close()
        if args.collector:
            context = zmq.Context()
            try:
                query_collector(context, load_config("health").query, {"op": "ping"}, timeout=1)
            finally:
                context.term()
        if args.file and not os.path.exists(args.file):
            raise FileNotFoundError(args.file)
    except (OSError, TimeoutError, RuntimeError) as exc:
        sys.exit(f"unhealthy: {exc}")
