"""What echo and the registry share about accepted streams in a selectors loop."""

from __future__ import annotations

import selectors
import socket
from dataclasses import dataclass, field

from shared.framing import FrameBuffer
from shared.names import Name


@dataclass
class AcceptedStream:
    """One accepted connection: the name accept() returned, its incoming frames, and its flow once named."""

    sock: socket.socket
    accepted_from: Name
    frames: FrameBuffer = field(default_factory=FrameBuffer)
    flow: str | None = None


def close_all(selector: selectors.BaseSelector) -> None:
    """Unregister and close every socket a selector watches."""
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        sock.close()
