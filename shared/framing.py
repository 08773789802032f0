"""Length-prefixed msgpack frames for stream sockets: a 4-byte big-endian length, then a msgpack map.

Used by echo's flow hello on TCP and Unix streams and by every registry request and reply.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

from shared.fields import require_map

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024


def pack_frame(obj: dict[str, Any]) -> bytes:
    """Frame one map for a stream socket."""
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def unpack_map(data: bytes, what: str) -> dict[str, Any]:
    """Decode bytes that must hold one msgpack map; anything else raises ValueError naming `what`."""
    try:
        obj = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"{what} is not msgpack: {str(exc) or type(exc).__name__}") from None
    return require_map(obj, what)


class FrameBuffer:
    """Collects bytes from a non-blocking stream and hands out whole frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    def next_frame(self) -> dict[str, Any] | None:
        """Take the next whole frame, None until one has arrived, ValueError on garbage."""
        if len(self._buf) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buf)
        if length > MAX_FRAME:
            raise ValueError(f"frame length {length} exceeds {MAX_FRAME}")
        if len(self._buf) < HEADER.size + length:
            return None
        body = bytes(self._buf[HEADER.size : HEADER.size + length])
        del self._buf[: HEADER.size + length]
        return unpack_map(body, "frame")

    def take_rest(self) -> bytes:
        """Hand over bytes that followed the last frame (raw echo data after the hello)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def recvall(sock: socket.socket, length: int) -> bytes:
    """Receive exactly `length` bytes from a blocking stream socket."""
    data = bytearray()
    while len(data) < length:
        more = sock.recv(length - len(data))
        if not more:
            raise EOFError(f"socket closed after {len(data)} of {length} bytes")
        data += more
    return bytes(data)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    """Receive one frame from a blocking stream socket."""
    (length,) = HEADER.unpack(recvall(sock, HEADER.size))
    if length > MAX_FRAME:
        raise ValueError(f"frame length {length} exceeds {MAX_FRAME}")
    return unpack_map(recvall(sock, length), "frame")
