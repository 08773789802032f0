"""Length-prefixed msgpack frames: whole frames only, garbage refused with a reason."""

from __future__ import annotations

import re
import socket
import struct

import msgpack
import pytest

from shared.framing import MAX_FRAME, FrameBuffer, pack_frame, recv_frame, unpack_map

pytestmark = pytest.mark.unit


def test_pack_frame_is_a_big_endian_length_then_msgpack() -> None:
    body = msgpack.packb({"flow": "a"}, use_bin_type=True)
    assert pack_frame({"flow": "a"}) == struct.pack("!I", len(body)) + body


def test_frames_split_across_many_feeds() -> None:
    data = pack_frame({"flow": "a"}) + pack_frame({"flow": "b", "length": 3}) + pack_frame({})
    buffer = FrameBuffer()
    frames = []
    for i in range(len(data)):
        buffer.feed(data[i : i + 1])
        while (frame := buffer.next_frame()) is not None:
            frames.append((i, frame))
    ends = [len(pack_frame({"flow": "a"})) - 1, len(data) - len(pack_frame({})) - 1, len(data) - 1]
    assert frames == [(ends[0], {"flow": "a"}), (ends[1], {"flow": "b", "length": 3}), (ends[2], {})]
    assert buffer.take_rest() == b""


def test_next_frame_is_none_until_the_last_byte_arrives() -> None:
    data = pack_frame({"op": "list", "flow": "f"})
    for cut in range(len(data)):
        buffer = FrameBuffer()
        buffer.feed(data[:cut])
        assert buffer.next_frame() is None
        buffer.feed(data[cut:])
        assert buffer.next_frame() == {"op": "list", "flow": "f"}


def test_take_rest_hands_over_raw_bytes_after_the_hello() -> None:
    buffer = FrameBuffer()
    buffer.feed(pack_frame({"flow": "f", "length": 5}) + b"hel")
    buffer.feed(b"lo")
    assert buffer.next_frame() == {"flow": "f", "length": 5}
    assert buffer.take_rest() == b"hello"
    assert buffer.take_rest() == b""
    assert buffer.next_frame() is None


def test_a_frame_of_exactly_max_frame_is_waited_for_and_one_more_byte_is_refused() -> None:
    buffer = FrameBuffer()
    buffer.feed(struct.pack("!I", MAX_FRAME))
    assert buffer.next_frame() is None
    buffer = FrameBuffer()
    buffer.feed(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(ValueError, match=f"^frame length {MAX_FRAME + 1} exceeds {MAX_FRAME}$"):
        buffer.next_frame()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (struct.pack("!I", 0xFFFFFFFF), f"frame length 4294967295 exceeds {MAX_FRAME}"),
        (b"GET / HTTP/1.0\r\n", f"frame length 1195725856 exceeds {MAX_FRAME}"),
        (struct.pack("!I", 1) + b"\xc1", "frame is not msgpack"),
        (struct.pack("!I", 2) + b"\x81\xa1", "frame is not msgpack"),
        (struct.pack("!I", 2) + b"\x07\x07", "frame is not msgpack"),
        (struct.pack("!I", 1) + msgpack.packb(7), "frame is a int, not a map"),
        (struct.pack("!I", 2) + msgpack.packb([1]), "frame is a list, not a map"),
    ],
)
def test_garbage_is_refused(data: bytes, error: str) -> None:
    buffer = FrameBuffer()
    buffer.feed(data)
    with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
        buffer.next_frame()


def test_unpack_map_names_what_it_decodes() -> None:
    assert unpack_map(msgpack.packb({"a": 1}), "query") == {"a": 1}
    with pytest.raises(ValueError, match=r"^query is a bool, not a map$"):
        unpack_map(msgpack.packb(True), "query")


def test_oversize_frame_is_not_packed() -> None:
    with pytest.raises(ValueError, match=f"exceeds {MAX_FRAME}"):
        pack_frame({"x": b"\0" * MAX_FRAME})


def test_recv_frame_on_a_real_socket_pair() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(pack_frame({"ok": True}) + struct.pack("!I", MAX_FRAME + 1))
        assert recv_frame(b) == {"ok": True}
        with pytest.raises(ValueError, match="exceeds"):
            recv_frame(b)
        a.sendall(struct.pack("!I", 4) + b"\x93")
        a.close()
        with pytest.raises(EOFError, match=r"^socket closed after 1 of 4 bytes$"):
            recv_frame(b)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0", "is not msgpack: StackError"),
        (b"\x81\xa1a\xdb\xff\xff\xff\xff", "is not msgpack: Unpack failed: incomplete input"),
        (b"\x81\xa1a\xdd\xff\xff\xff\xff", "4294967295 exceeds max_array_len"),
        (b"\x81\xa1a\xdf\xff\xff\xff\xff", "4294967295 exceeds max_map_len"),
    ],
    ids=["deep-nesting", "huge-string", "huge-array", "huge-map"],
)
def test_deep_nesting_and_huge_declared_lengths_are_refused_before_anything_is_allocated(
    data: bytes, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        unpack_map(data, "frame")
