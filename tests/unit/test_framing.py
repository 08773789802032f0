"""Length-prefixed msgpack frames: whole frames only, garbage refused with a reason."""

from __future__ import annotations

import socket
import struct

import msgpack
import pytest

from shared.framing import MAX_FRAME, FrameBuffer, pack_frame, recv_frame

pytestmark = pytest.mark.unit


def test_frames_split_across_many_feeds() -> None:
    data = pack_frame({"flow": "a"}) + pack_frame({"flow": "b"}) + b"raw bytes"
    buffer = FrameBuffer()
    frames = []
    for i in range(len(data)):
        buffer.feed(data[i : i + 1])
        while (frame := buffer.next_frame()) is not None:
            frames.append(frame)
            if len(frames) == 2:
                break
        if len(frames) == 2:
            buffer.feed(data[i + 1 :])
            break
    assert frames == [{"flow": "a"}, {"flow": "b"}]
    assert buffer.take_rest() == b"raw bytes"
    assert buffer.take_rest() == b""


def test_next_frame_waits_for_a_whole_frame() -> None:
    buffer = FrameBuffer()
    buffer.feed(pack_frame({"op": "list"})[:-1])
    assert buffer.next_frame() is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (struct.pack("!I", MAX_FRAME + 1), f"frame length {MAX_FRAME + 1} exceeds {MAX_FRAME}"),
        (b"GET / HTTP/1.0\r\n", "frame length 1195725856 exceeds 65536"),
        (struct.pack("!I", 1) + b"\xc1", "frame is not msgpack"),
        (struct.pack("!I", 1) + msgpack.packb(7), "frame is a int, not a map"),
    ],
)
def test_garbage_is_refused(data: bytes, error: str) -> None:
    buffer = FrameBuffer()
    buffer.feed(data)
    with pytest.raises(ValueError, match=f"^{error}"):
        buffer.next_frame()


def test_oversize_frame_is_not_packed() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        pack_frame({"x": b"\0" * (MAX_FRAME + 1)})


def test_recv_frame_on_a_real_socket_pair() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(pack_frame({"ok": True}))
        assert recv_frame(b) == {"ok": True}
        a.close()
        with pytest.raises(EOFError):
            recv_frame(b)
