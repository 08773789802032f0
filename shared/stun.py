"""STUN wire format (RFC 8489, with RFC 5780's attributes and RFC 3489's classic requests).

Constants and IntEnums for the wire, symmetric pack/unpack functions, ValueError with an exact
message for every malformed packet.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
HEADER_LENGTH = HEADER.size
ATTR_HEADER = struct.Struct("!HH")
FINGERPRINT_XOR = 0x5354554E
IPV4_PROTOCOL, IPV6_PROTOCOL = 0x01, 0x02
CHANGE_IP, CHANGE_PORT = 0x04, 0x02
ERROR_CLASSES = range(3, 7)  # RFC 8489 section 14.8: error codes 300 to 699
ERROR_NUMBERS = range(100)
MESSAGE_INTEGRITY_LENGTH = 20


class Method(IntEnum):
    """STUN methods (RFC 8489 section 18.2)."""

    BINDING = 0x001


class Class(IntEnum):
    """Message classes, already in their bit positions of the message type."""

    REQUEST = 0x000
    INDICATION = 0x010
    RESPONSE = 0x100
    ERROR = 0x110


class Attr(IntEnum):
    """Attribute types (RFC 8489, RFC 5780, and RFC 3489's classic ones)."""

    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    SOURCE_ADDRESS = 0x0004
    CHANGED_ADDRESS = 0x0005
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    XOR_MAPPED_ADDRESS = 0x0020
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


ADDRESS_ATTRS = {
    Attr.MAPPED_ADDRESS,
    Attr.SOURCE_ADDRESS,
    Attr.CHANGED_ADDRESS,
    Attr.RESPONSE_ORIGIN,
    Attr.OTHER_ADDRESS,
}
XOR_ADDRESS_ATTRS = {Attr.XOR_MAPPED_ADDRESS}


def pack_address(value: tuple[str, int]) -> bytes:
    """Encode (host, port) as a STUN address attribute value."""
    addr = ipaddress.ip_address(value[0])
    proto = IPV4_PROTOCOL if addr.version == 4 else IPV6_PROTOCOL
    return struct.pack("!BBH", 0, proto, value[1]) + addr.packed


def unpack_address(data: bytes) -> tuple[str, int]:
    """Decode a STUN address attribute value to (host, port)."""
    if len(data) < 4:
        raise ValueError("STUN address length is less than 4 bytes")
    _, proto, port = struct.unpack("!BBH", data[:4])
    raw = data[4:]
    if proto == IPV4_PROTOCOL:
        if len(raw) != 4:
            raise ValueError(f"STUN address has invalid length for IPv4: {len(raw)}")
        return str(ipaddress.IPv4Address(raw)), port
    if proto == IPV6_PROTOCOL:
        if len(raw) != 16:
            raise ValueError(f"STUN address has invalid length for IPv6: {len(raw)}")
        return str(ipaddress.IPv6Address(raw)), port
    raise ValueError(f"STUN address has unknown protocol {proto}")


def _xor(data: bytes, transaction_id: bytes) -> bytes:
    pad = MAGIC_COOKIE.to_bytes(4, "big") + transaction_id
    head = struct.pack("!BBH", data[0], data[1], struct.unpack("!H", data[2:4])[0] ^ (MAGIC_COOKIE >> 16))
    return head + bytes(a ^ b for a, b in zip(data[4:], pad, strict=False))


def pack_xor_address(value: tuple[str, int], transaction_id: bytes) -> bytes:
    """Encode (host, port) as XOR-MAPPED-ADDRESS: port and address XORed with cookie and id."""
    return _xor(pack_address(value), transaction_id)


def unpack_xor_address(data: bytes, transaction_id: bytes) -> tuple[str, int]:
    """Decode XOR-MAPPED-ADDRESS."""
    if len(data) < 4:
        raise ValueError("STUN address length is less than 4 bytes")
    return unpack_address(_xor(data, transaction_id))


@dataclass
class Message:
    """One STUN message; `cookie` other than MAGIC_COOKIE marks an RFC 3489 classic message."""

    method: int
    cls: Class
    transaction_id: bytes = field(default_factory=lambda: os.urandom(12))
    attributes: dict[int, Any] = field(default_factory=dict)
    cookie: int = MAGIC_COOKIE

    @property
    def classic(self) -> bool:
        """An RFC 3489 message, which gets MAPPED-ADDRESS instead of XOR-MAPPED-ADDRESS."""
        return self.cookie != MAGIC_COOKIE


def flow_id(transaction_id: bytes) -> str:
    """A STUN transaction is a flow; its id is the transaction id, which both ends know."""
    return "stun-" + transaction_id.hex()


def binding_request(change: int = 0, transaction_id: bytes | None = None) -> Message:
    """A Binding request; `change` (CHANGE_IP, CHANGE_PORT) asks RFC 5780 for an answer from elsewhere."""
    if change & ~(CHANGE_IP | CHANGE_PORT):
        raise ValueError(f"CHANGE-REQUEST flags must be CHANGE_IP and/or CHANGE_PORT, not {change:#x}")
    msg = Message(Method.BINDING, Class.REQUEST, transaction_id or os.urandom(12))
    if change:
        msg.attributes[Attr.CHANGE_REQUEST] = change
    return msg


def message_type(method: int, cls: int) -> int:
    """Interleave method and class bits as RFC 8489 section 5 draws them."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def split_type(value: int) -> tuple[int, Class]:
    """Undo message_type()."""
    method = (value & 0x000F) | ((value >> 1) & 0x0070) | ((value >> 2) & 0x0F80)
    return method, Class(value & 0x0110)


def _pack_attr_value(attr: int, value: Any, transaction_id: bytes) -> bytes:
    if attr in ADDRESS_ATTRS:
        return pack_address(value)
    if attr in XOR_ADDRESS_ATTRS:
        return pack_xor_address(value, transaction_id)
    if attr in (Attr.CHANGE_REQUEST, Attr.FINGERPRINT):
        return struct.pack("!I", value)
    if attr == Attr.RESPONSE_PORT:
        return struct.pack("!HH", value, 0)
    if attr == Attr.ERROR_CODE:
        code, reason = value
        if code // 100 not in ERROR_CLASSES:
            raise ValueError(f"STUN error code {code} is not between 300 and 699")
        return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()
    if attr == Attr.UNKNOWN_ATTRIBUTES:
        return b"".join(struct.pack("!H", a) for a in value)
    if attr in (Attr.SOFTWARE, Attr.USERNAME):
        return value.encode()
    return bytes(value)


def _unpack_attr_value(attr: int, data: bytes, transaction_id: bytes) -> Any:
    if attr in ADDRESS_ATTRS:
        return unpack_address(data)
    if attr in XOR_ADDRESS_ATTRS:
        return unpack_xor_address(data, transaction_id)
    if attr in (Attr.CHANGE_REQUEST, Attr.FINGERPRINT, Attr.RESPONSE_PORT):
        if len(data) != 4:
            raise ValueError(f"STUN attribute {attr:#06x} must be 4 bytes, not {len(data)}")
        return struct.unpack("!I", data)[0] if attr != Attr.RESPONSE_PORT else struct.unpack("!H", data[:2])[0]
    if attr == Attr.ERROR_CODE:
        return unpack_error_code(data)
    if attr == Attr.UNKNOWN_ATTRIBUTES:
        if len(data) % 2:
            raise ValueError(f"STUN UNKNOWN-ATTRIBUTES length {len(data)} is odd")
        return [struct.unpack("!H", data[i : i + 2])[0] for i in range(0, len(data), 2)]
    if attr in (Attr.SOFTWARE, Attr.USERNAME):
        return data.decode(errors="replace")
    return data


def unpack_error_code(data: bytes) -> tuple[int, str]:
    """ERROR-CODE: a class 3 to 6 and a number 0 to 99 (RFC 8489 section 14.8), then a UTF-8 reason."""
    if len(data) < 4:
        raise ValueError("STUN ERROR-CODE is less than 4 bytes")
    cls, number = data[2] & 0x07, data[3]
    if cls not in ERROR_CLASSES:
        raise ValueError(f"STUN ERROR-CODE class {cls} is not between 3 and 6")
    if number not in ERROR_NUMBERS:
        raise ValueError(f"STUN ERROR-CODE number {number} is not between 0 and 99")
    try:
        reason = data[4:].decode()
    except UnicodeDecodeError:
        raise ValueError("STUN ERROR-CODE reason is not UTF-8") from None
    return cls * 100 + number, reason


def pack_message(msg: Message, *, fingerprint: bool = False) -> bytes:
    """Encode a message, attributes in insertion order, optionally ending with FINGERPRINT."""
    body = bytearray()
    for attr, value in msg.attributes.items():
        if attr == Attr.FINGERPRINT:
            continue
        raw = _pack_attr_value(attr, value, msg.transaction_id)
        body += ATTR_HEADER.pack(attr, len(raw)) + raw + b"\0" * (-len(raw) % 4)
    mtype = message_type(msg.method, msg.cls)
    if fingerprint:
        head = HEADER.pack(mtype, len(body) + 8, msg.cookie, msg.transaction_id)
        crc = binascii.crc32(head + bytes(body)) ^ FINGERPRINT_XOR
        body += ATTR_HEADER.pack(Attr.FINGERPRINT, 4) + struct.pack("!I", crc)
    return HEADER.pack(mtype, len(body), msg.cookie, msg.transaction_id) + bytes(body)


def unpack_message(data: bytes) -> Message:
    """Decode a message; a malformed packet raises ValueError saying exactly what is wrong."""
    if len(data) < HEADER_LENGTH:
        raise ValueError("STUN message length is less than 20 bytes")
    mtype, length, cookie, transaction_id = HEADER.unpack_from(data)
    if mtype & 0xC000:
        raise ValueError("STUN message type has its two top bits set")
    if length % 4:
        raise ValueError("STUN message length is not a multiple of 4")
    if len(data) != HEADER_LENGTH + length:
        raise ValueError("STUN message length does not match the packet")
    method, cls = split_type(mtype)
    attributes: dict[int, Any] = {}
    pos, integrity = HEADER_LENGTH, False
    while pos < len(data):  # the length is a multiple of 4, so a whole attribute header is always there
        attr, alen = ATTR_HEADER.unpack_from(data, pos)
        start = pos + ATTR_HEADER.size
        if start + alen > len(data):
            raise ValueError("STUN attribute value is truncated")
        value = data[start : start + alen]
        pos = start + alen + (-alen % 4)
        if attr == Attr.FINGERPRINT:
            if pos != len(data):
                raise ValueError("STUN FINGERPRINT is not the last attribute")
            expected = binascii.crc32(data[: start - ATTR_HEADER.size]) ^ FINGERPRINT_XOR
            if len(value) != 4 or struct.unpack("!I", value)[0] != expected:
                raise ValueError("STUN fingerprint does not match")
        elif integrity:
            continue  # RFC 5389 section 15.4: after MESSAGE-INTEGRITY only FINGERPRINT counts, the rest is ignored
        if attr in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256):
            check_integrity_length(attr, alen)
            integrity = True
        key = Attr(attr) if attr in Attr._value2member_map_ else attr
        if key not in attributes:  # RFC 8489 section 14: only the first of a repeated attribute counts
            attributes[key] = _unpack_attr_value(attr, value, transaction_id)
    return Message(method, cls, transaction_id, attributes, cookie)


def check_integrity_length(attr: int, length: int) -> None:
    """MESSAGE-INTEGRITY is an HMAC-SHA1 of 20 bytes; MESSAGE-INTEGRITY-SHA256 16 to 32 bytes, a multiple of 4."""
    if attr == Attr.MESSAGE_INTEGRITY and length != MESSAGE_INTEGRITY_LENGTH:
        raise ValueError(f"STUN MESSAGE-INTEGRITY must be 20 bytes, not {length}")
    if attr == Attr.MESSAGE_INTEGRITY_SHA256 and (length % 4 or not 16 <= length <= 32):
        raise ValueError(f"STUN MESSAGE-INTEGRITY-SHA256 must be 16 to 32 bytes in fours, not {length}")
