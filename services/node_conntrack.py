"""socklab node-conntrack: a swarm node's conntrack events, streamed to the collector as the router streams its own.

Runs in a container on the node's own network namespace (network_mode host, NET_ADMIN), where Docker NATs
a task's traffic leaving the overlay (docker_gwbridge's MASQUERADE) and a `mode: host` published port (DNAT).
Its records name the node as their service, so a flow's path says which node rewrote what.
"""

from __future__ import annotations

import argparse
import logging

import zmq

from services.conntrack_events import follow_conntrack
from shared.config import load_config
from shared.reporter import Reporter

log = logging.getLogger(__name__)

# The rules Docker installs on a swarm node, by the purpose a flow's hop names (services/paths.py).
NODE_RULES = {
    "rules": {
        "snat-ipv4": "MASQUERADE -s <docker_gwbridge subnet> ! -o docker_gwbridge (a task leaving the overlay)",
        "inbound-dnat": "DNAT --to-destination <task>:<port> (a mode: host published port, DOCKER chain)",
    }
}


def main(argv: list[str] | None = None) -> None:
    """Stream this node's conntrack events until `conntrack -E` ends."""
    cfg = load_config("node-conntrack")
    argparse.ArgumentParser(prog="socklab node-conntrack", description=main.__doc__).parse_args(argv)
    context = zmq.Context()
    reporter = Reporter(context, cfg.collector, cfg.service, node=cfg.node)
    try:
        follow_conntrack(reporter, lambda: NODE_RULES)
    finally:
        reporter.close()
        context.term()
