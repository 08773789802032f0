"""Send COUNT records tagged TAG (no flow id: they join no flow and stay out of the report's flows) at RATE
a second through one Reporter, then wait for every ack; print what the reporter counted as JSON."""

from __future__ import annotations

import json
import socket
import sys
import time

import zmq

from shared.record import Role
from shared.reporter import Reporter


def main() -> None:
    """Stream, flush, say."""
    tag, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    context = zmq.Context()
    reporter = Reporter(context, "tcp://collector:5555", "stream", resend_after=1.0)
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):
            reporter.observe(sock, "sendto", None, Role.CLIENT, remote=("192.0.2.1", 9), extra={"stream": tag, "i": i})
            pause = start + (i + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    reporter.flush(60)
    stats = {"sent": reporter.sent, "dropped": reporter.dropped, "resent": reporter.resent, "unacked": reporter.unacked}
    reporter.close(grace=0)
    context.term()
    print(json.dumps(stats))


main()
