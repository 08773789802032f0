"""Echo's wire protocol, the one module both echo and its clients import.

Stream (TCP and Unix): the client's first frame (shared.framing) is a hello {"flow": id, "length": n};
echo answers with a greeting frame {"flow", "peer", "local"} (the names its accepted socket has),
then echoes n raw bytes and closes first, so the TIME_WAIT state stays on the server and a client
may bind the same port again at once. Without "length" it echoes until EOF.

Datagram (UDP): each datagram is a msgpack map {"flow", "data"}; echo answers {"flow", "peer",
"local", "data"}, where local is the address the datagram arrived at.

"peer" is the reflexive name: how echo saw the client.

Any other client is welcome too, and told apart on its first bytes without ever waiting for more
than it sent (see classify_stream): a frame is at most 64 KiB, so the 4-byte length of a hello
starts 0x00 0x00; a stream whose first byte is anything else is raw at once and echoed byte for byte
(a person typing `hi` gets `hi` back). Only a lone first byte 0x00 waits for the second one. (A frame
of exactly 64 KiB, header 00 01 00 00, would read as raw; a hello is a few dozen bytes.) On UDP a
datagram that unpacks as an echo datagram gets the answer above; any other datagram is echoed as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

from shared.framing import pack_frame, unpack_map
from shared.names import Name, name_from_wire, name_to_wire

DEFAULT_PORT = 7007
MAX_DATAGRAM = 65535
FRAME_MARK = b"\x00\x00"


class StreamKind(StrEnum):
    """What a stream client speaks: socklab's frames, or anything at all."""

    FRAMED = "framed"
    RAW = "raw"


def classify_stream(first: bytes) -> StreamKind | None:
    """Framed when the first two bytes are 0x00 0x00, raw at once otherwise; None only for a lone 0x00."""
    if first[:2] == FRAME_MARK:
        return StreamKind.FRAMED
    if first[:1] == FRAME_MARK[:1] and len(first) < 2:
        return None
    return StreamKind.RAW if first else None


@dataclass(frozen=True)
class Hello:
    """A stream client's first frame: the flow it reports under and how many bytes it will send."""

    flow: str
    length: int | None = None


@dataclass(frozen=True)
class Datagram:
    """One echo datagram: a flow id and its bytes."""

    flow: str
    data: bytes


@dataclass(frozen=True)
class Reflection:
    """Echo's answer: the names its socket had for the flow; `peer` is how echo saw the client."""

    flow: str
    peer: Name | None
    local: Name | None
    data: bytes | None = None


def check_flow(obj: dict[str, Any], what: str) -> str:
    """The flow id every echo message carries."""
    flow = obj.get("flow")
    if not isinstance(flow, str) or not flow:
        raise ValueError(f"{what} has no flow id")
    return flow


def pack_hello(hello: Hello) -> bytes:
    """Frame a stream's hello."""
    body: dict[str, Any] = {"flow": hello.flow}
    if hello.length is not None:
        body["length"] = hello.length
    return pack_frame(body)


def unpack_hello(frame: dict[str, Any]) -> Hello:
    """Check a stream's first frame."""
    flow = check_flow(frame, "hello frame")
    length = frame.get("length")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 0):
        raise ValueError("hello frame length is not a count of bytes")
    return Hello(flow, length)


def pack_datagram(datagram: Datagram) -> bytes:
    """Encode a client's datagram."""
    return msgpack.packb({"flow": datagram.flow, "data": datagram.data}, use_bin_type=True)


def unpack_datagram(data: bytes) -> Datagram:
    """Check one echo datagram: a msgpack map with a flow id and bytes."""
    obj = unpack_map(data, "datagram")
    flow = check_flow(obj, "datagram")
    if not isinstance(obj.get("data"), bytes):
        raise ValueError("datagram has no data bytes")
    return Datagram(flow, obj["data"])


def reflection_to_wire(reflection: Reflection) -> dict[str, Any]:
    """Echo's answer as a map: data only for datagrams."""
    body: dict[str, Any] = {
        "flow": reflection.flow,
        "peer": name_to_wire(reflection.peer),
        "local": name_to_wire(reflection.local),
    }
    if reflection.data is not None:
        body["data"] = reflection.data
    return body


def pack_greeting(reflection: Reflection) -> bytes:
    """Frame echo's answer to a stream's hello."""
    return pack_frame(reflection_to_wire(reflection))


def pack_reflection_datagram(reflection: Reflection) -> bytes:
    """Encode echo's answer to a datagram."""
    return msgpack.packb(reflection_to_wire(reflection), use_bin_type=True)


def reflection_from_wire(obj: dict[str, Any], flow: str) -> Reflection:
    """Check echo's answer belongs to `flow` and read the names echo saw."""
    if obj.get("flow") != flow:
        raise ValueError(f"echo answered flow {obj.get('flow')!r}, not {flow!r}")
    data = obj.get("data")
    return Reflection(flow, name_from_wire(obj.get("peer")), name_from_wire(obj.get("local")), data)


def unpack_reflection_datagram(data: bytes, flow: str) -> Reflection:
    """Decode and check echo's answer to a datagram."""
    return reflection_from_wire(unpack_map(data, "echo reply"), flow)
