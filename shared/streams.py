"""What echo and the registry share about accepted streams in a selectors loop: the connection, and when to accept."""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.framing import FrameBuffer
from shared.names import Name

log = logging.getLogger(__name__)

OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass
class AcceptedStream:
    """One accepted connection: the name accept() returned, its incoming frames, and its flow once named."""

    sock: socket.socket
    accepted_from: Name
    frames: FrameBuffer = field(default_factory=FrameBuffer)
    flow: str | None = None
    last_active: float = field(default_factory=time.monotonic)


class AcceptGate:
    """Whether a loop accepts: not past its cap of open streams, nor during a back-off after descriptors ran out.

    While the gate is shut its listeners are not watched, so the kernel's backlog holds new clients and the
    loop never spins on a listener that stays readable because accept() keeps failing.
    """

    def __init__(
        self,
        selector: selectors.BaseSelector,
        listeners: dict[socket.socket, Any],
        max_streams: int,
        backoff: float,
        stats: Counter[str],
    ) -> None:
        self.selector, self.listeners, self.stats = selector, listeners, stats
        self.max_streams, self.backoff = max_streams, backoff
        self.open_streams = 0
        self.accepting = False
        self.resume_at: float | None = None

    def open(self) -> None:
        """Watch the listeners, each with its selector data."""
        for sock, data in self.listeners.items():
            self.selector.register(sock, selectors.EVENT_READ, data)
        self.accepting = True
        self.resume_at = None

    def shut(self, until: float | None) -> None:
        """Stop watching the listeners until `until`, or, with None, until a stream closes."""
        if self.accepting:
            for sock in self.listeners:
                self.selector.unregister(sock)
            self.accepting = False
        self.resume_at = until

    def accept(self, listener: socket.socket) -> tuple[socket.socket, Name] | None:
        """One non-blocking client, or None; out of descriptors shuts the gate a while, the cap until a close."""
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                self.stats["accept_backoff"] += 1
                log.warning("accept failed (%s): not accepting for %.1f s", exc, self.backoff)
                self.shut(time.monotonic() + self.backoff)
            elif not isinstance(exc, BlockingIOError):
                log.warning("accept failed: %s", exc)
            return None
        sock.setblocking(False)
        self.stats["accepted"] += 1
        self.open_streams += 1
        if self.open_streams >= self.max_streams:
            self.stats["stream_cap"] += 1
            log.warning("%d streams open: not accepting until one closes", self.open_streams)
            self.shut(None)
        return sock, addr

    def stream_closed(self) -> None:
        """One accepted stream is gone: accept again if the cap held the gate."""
        self.open_streams -= 1
        if not self.accepting and self.resume_at is None and self.open_streams < self.max_streams:
            self.open()

    def tick(self, now: float) -> None:
        """Accept again once a back-off is over (or wait for a stream to close if the cap holds now)."""
        if not self.accepting and self.resume_at is not None and now >= self.resume_at:
            if self.open_streams < self.max_streams:
                self.open()
            else:
                self.resume_at = None


def close_all(selector: selectors.BaseSelector) -> None:
    """Unregister and close every socket a selector watches."""
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        sock.close()
