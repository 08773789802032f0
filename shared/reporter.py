"""The one reporter: pushes records to the collector and never makes the data path wait.

The bounded queue is ZeroMQ's own send queue (SNDHWM). Every send is non-blocking; a record
that does not fit is dropped and counted, and the count travels in the next record that fits.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from typing import Any

import zmq

from shared.host_topology import read_topology
from shared.names import Name
from shared.record import Family, Method, Observation, Proto, Record, Role, pack_record

log = logging.getLogger(__name__)

DEFAULT_HWM = 10_000


class Reporter:
    """A PUSH socket that connects to the collector (the stable side binds)."""

    def __init__(self, context: zmq.Context, endpoint: str, service: str, *, hwm: int = DEFAULT_HWM) -> None:
        self.service = service
        self.host = socket.gethostname()
        self.sent = 0
        self.dropped = 0
        self._push = context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, hwm)
        self._push.setsockopt(zmq.LINGER, 2000)
        self._push.connect(endpoint)

    def report(self, record: Record) -> bool:
        """Queue one record of any kind without waiting; False when it was dropped."""
        try:
            self._push.send(pack_record(record), zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("report queue full: %d records dropped", self.dropped)
            return False
        self.sent += 1
        return True

    def report_topology(self) -> bool:
        """Say once, at start, where this service runs: its interfaces, addresses and routes."""
        return self.report(replace(read_topology(self.service, self.host), drops=self.dropped))

    def observe(
        self,
        sock: socket.socket,
        method: str,
        flow: str | None,
        role: Role,
        *,
        local: Name | None = None,
        remote: Name | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Report what `method` on `sock` said, tagging proto and family from the socket itself."""
        return self.report(
            Observation(
                service=self.service,
                host=self.host,
                flow=flow,
                role=role,
                proto=Proto.of(sock),
                family=Family.of(sock.family),
                method=Method(method),
                local=local,
                remote=remote,
                drops=self.dropped,
                extra=extra or {},
            )
        )

    def reject(self, sock: socket.socket, method: str, remote: Name, reason: Exception) -> None:
        """Log input a parser refused and report who sent it, so the collector counts it per service."""
        log.warning("%s rejected %s input from %s: %s", self.service, method, remote, reason)
        self.observe(sock, method, None, Role.SERVER, remote=remote, extra={"rejected": str(reason)})

    def close(self) -> None:
        """Give queued records a moment to leave, then close."""
        self._push.close()
