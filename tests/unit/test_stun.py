"""shared.stun against RFC 5769's test vectors, byte-exact round trips and every malformed-packet error."""

from __future__ import annotations

import binascii
import re

import pytest

from shared import stun
from shared.stun import Attr, Class, Method

pytestmark = pytest.mark.unit

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
MAGIC = "2112a442"

# RFC 5769 section 2.1: Sample Request
# (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT)
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# RFC 5769 section 2.2: Sample IPv4 Response (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT)
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# RFC 5769 section 2.3: Sample IPv6 Response
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)
IPV4_MAPPED = ("192.0.2.1", 32853)
IPV6_MAPPED = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def crc(message: bytes) -> int:
    """RFC 8489 section 14.7: CRC-32 of everything before the FINGERPRINT attribute, XORed with 0x5354554e."""
    return binascii.crc32(message[:-8]) ^ 0x5354554E


def test_rfc5769_sample_request() -> None:
    msg = stun.unpack_message(SAMPLE_REQUEST)
    assert (msg.method, msg.cls, msg.transaction_id) == (Method.BINDING, Class.REQUEST, TID)
    assert not msg.classic
    assert msg.attributes[Attr.SOFTWARE] == "STUN test client"
    assert msg.attributes[Attr.USERNAME] == "evtj:h6vY"
    assert msg.attributes[0x0024] == bytes.fromhex("6e0001ff"), "PRIORITY is kept as raw bytes"
    assert msg.attributes[Attr.FINGERPRINT] == 0xE57A3BCF


@pytest.mark.parametrize(
    ("vector", "mapped", "fingerprint"),
    [(SAMPLE_IPV4_RESPONSE, IPV4_MAPPED, 0xC07D4C96), (SAMPLE_IPV6_RESPONSE, IPV6_MAPPED, 0xC8FB0B4C)],
)
def test_rfc5769_sample_responses(vector: bytes, mapped: tuple[str, int], fingerprint: int) -> None:
    msg = stun.unpack_message(vector)
    assert (msg.method, msg.cls, msg.transaction_id) == (Method.BINDING, Class.RESPONSE, TID)
    assert msg.attributes[Attr.XOR_MAPPED_ADDRESS] == mapped
    assert msg.attributes[Attr.SOFTWARE] == "test vector"
    assert msg.attributes[Attr.FINGERPRINT] == fingerprint == crc(vector)


@pytest.mark.parametrize("vector", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE])
def test_fingerprint_catches_a_flipped_bit_in_the_message(vector: bytes) -> None:
    software_byte = 20 + 4 + 2  # inside SOFTWARE's value, which nothing else checks
    damaged = bytearray(vector)
    damaged[software_byte] ^= 0x01
    with pytest.raises(ValueError, match=r"^STUN fingerprint does not match$"):
        stun.unpack_message(bytes(damaged))


@pytest.mark.parametrize(
    ("vector", "mapped"), [(SAMPLE_IPV4_RESPONSE, IPV4_MAPPED), (SAMPLE_IPV6_RESPONSE, IPV6_MAPPED)]
)
def test_encoder_reproduces_rfc5769_responses(vector: bytes, mapped: tuple[str, int]) -> None:
    integrity = stun.unpack_message(vector).attributes[Attr.MESSAGE_INTEGRITY]
    attributes: dict[int, object] = {
        Attr.SOFTWARE: "test vector",
        Attr.XOR_MAPPED_ADDRESS: mapped,
        Attr.MESSAGE_INTEGRITY: integrity,
    }
    ours = stun.pack_message(stun.Message(Method.BINDING, Class.RESPONSE, TID, attributes), fingerprint=True)
    expected = bytearray(vector)
    expected[20 + 4 + 11] = 0  # the RFC pads SOFTWARE with a space, we pad with zero: both are allowed
    assert ours[:-4] == bytes(expected[:-4]), "the same bytes up to FINGERPRINT, which covers the padding"
    assert stun.unpack_message(ours).attributes[Attr.FINGERPRINT] == crc(ours)


def test_xor_addresses_match_rfc5769_bytes() -> None:
    assert stun.pack_xor_address(IPV4_MAPPED, TID) == bytes.fromhex("0001a147e112a643")
    ipv6 = bytes.fromhex("0002a1470113a9faa5d3f179bc25f4b5bed2b9d9")
    assert stun.pack_xor_address(IPV6_MAPPED, TID) == ipv6
    assert stun.unpack_xor_address(bytes.fromhex("0001a147e112a643"), TID) == IPV4_MAPPED


@pytest.mark.parametrize(
    ("cls", "attributes"),
    [
        (Class.RESPONSE, {Attr.XOR_MAPPED_ADDRESS: IPV4_MAPPED, Attr.SOFTWARE: "test vector"}),
        (Class.RESPONSE, {Attr.XOR_MAPPED_ADDRESS: IPV6_MAPPED}),
        (Class.RESPONSE, {Attr.MAPPED_ADDRESS: ("203.0.113.9", 1), Attr.SOURCE_ADDRESS: IPV6_MAPPED}),
        (Class.RESPONSE, {Attr.RESPONSE_ORIGIN: ("198.51.100.3", 3478)}),
        (Class.REQUEST, {Attr.CHANGE_REQUEST: stun.CHANGE_IP | stun.CHANGE_PORT}),
        (Class.REQUEST, {Attr.USERNAME: "evtj:h6vY", Attr.RESPONSE_PORT: 5000}),
        (Class.REQUEST, {0x8030: b"odd"}),
        (Class.ERROR, {Attr.ERROR_CODE: (420, "Unknown Attribute"), Attr.UNKNOWN_ATTRIBUTES: [0x42]}),
        (Class.INDICATION, {}),
    ],
)
def test_round_trip_is_byte_exact(cls: Class, attributes: dict[int, object]) -> None:
    msg = stun.Message(Method.BINDING, cls, TID, dict(attributes))
    for fingerprint in (False, True):
        data = stun.pack_message(msg, fingerprint=fingerprint)
        assert len(data) % 4 == 0
        again = stun.unpack_message(data)
        assert (again.method, again.cls, again.transaction_id, again.cookie) == (
            msg.method,
            cls,
            TID,
            stun.MAGIC_COOKIE,
        )
        assert {k: v for k, v in again.attributes.items() if k != Attr.FINGERPRINT} == attributes
        assert stun.pack_message(again, fingerprint=fingerprint) == data


def test_classic_rfc3489_message_keeps_its_cookie_and_is_not_taken_for_rfc8489() -> None:
    classic = stun.Message(Method.BINDING, Class.REQUEST, TID, cookie=0x01020304)
    data = stun.pack_message(classic)
    assert data == bytes.fromhex("0001000001020304" + TID.hex())
    again = stun.unpack_message(data)
    assert again.classic and again.cookie == 0x01020304


def test_message_type_and_split_type_are_inverse_for_every_method_and_class() -> None:
    for cls in Class:
        for method in range(0x1000):
            value = stun.message_type(method, cls)
            assert value & 0xC000 == 0
            assert stun.split_type(value) == (method, cls)


@pytest.mark.parametrize(
    ("cls", "value"),
    [
        (Class.REQUEST, 0x0001),
        (Class.INDICATION, 0x0011),
        (Class.RESPONSE, 0x0101),
        (Class.ERROR, 0x0111),
    ],
)
def test_binding_message_types_are_rfc8489s(cls: Class, value: int) -> None:
    assert stun.message_type(Method.BINDING, cls) == value


def header(length: int, mtype: int = 0x0001) -> bytes:
    return mtype.to_bytes(2, "big") + length.to_bytes(2, "big") + bytes.fromhex(MAGIC) + TID


def attr(kind: int, value: bytes, declared: int | None = None) -> bytes:
    length = len(value) if declared is None else declared
    return kind.to_bytes(2, "big") + length.to_bytes(2, "big") + value + b"\0" * (-len(value) % 4)


def packet(*attributes: bytes) -> bytes:
    body = b"".join(attributes)
    return header(len(body)) + body


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x01\x00", "STUN message length is less than 20 bytes"),
        (header(0)[:19], "STUN message length is less than 20 bytes"),
        (header(0, mtype=0xC001), "STUN message type has its two top bits set"),
        (header(0, mtype=0x4001), "STUN message type has its two top bits set"),
        (header(2) + b"\0\0", "STUN message length is not a multiple of 4"),
        (header(4), "STUN message length does not match the packet"),
        (header(0) + b"\0\0\0\0", "STUN message length does not match the packet"),
        (header(4) + attr(0x0020, b"", declared=8), "STUN attribute value is truncated"),
        (packet(attr(0x0001, b"\x00\x07\x00\x01")), "STUN address has unknown protocol 7"),
        (packet(attr(0x0020, b"\x00\x00\x00\x01")), "STUN address has unknown protocol 0"),
        (packet(attr(0x0001, b"\x00\x01")), "STUN address length is less than 4 bytes"),
        (packet(attr(0x0020, b"\x00\x01")), "STUN address length is less than 4 bytes"),
        (packet(attr(0x0001, b"\x00\x01\x00\x01")), "STUN address has invalid length for IPv4: 0"),
        (packet(attr(0x0001, b"\x00\x02\x00\x01" + bytes(4))), "STUN address has invalid length for IPv6: 4"),
        (packet(attr(0x0003, bytes(8))), "STUN attribute 0x0003 must be 4 bytes, not 8"),
        (packet(attr(0x0009, b"\x00\x00")), "STUN ERROR-CODE is less than 4 bytes"),
        (packet(attr(0x8028, bytes(4))), "STUN fingerprint does not match"),
        (packet(attr(0x8028, bytes(8))), "STUN fingerprint does not match"),
        (packet(attr(0x0009, b"\x00\x00\x04\x96")), "STUN ERROR-CODE number 150 is not between 0 and 99"),
        (packet(attr(0x0009, b"\x00\x00\x02\x00")), "STUN ERROR-CODE class 2 is not between 3 and 6"),
        (packet(attr(0x0009, b"\x00\x00\x04\x00\xff")), "STUN ERROR-CODE reason is not UTF-8"),
        (packet(attr(0x000A, b"\x00\x01\x00")), "STUN UNKNOWN-ATTRIBUTES length 3 is odd"),
        (packet(attr(0x0008, bytes(16))), "STUN MESSAGE-INTEGRITY must be 20 bytes, not 16"),
        (packet(attr(0x001C, bytes(12))), "STUN MESSAGE-INTEGRITY-SHA256 must be 16 to 32 bytes in fours, not 12"),
    ],
)
def test_malformed_packets_raise_exact_errors(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        stun.unpack_message(data)


def with_fingerprint(message: bytes) -> bytes:
    """A message with a correct FINGERPRINT appended (its length counting the attribute)."""
    grown = message[:2] + (len(message) - 20 + 8).to_bytes(2, "big") + message[4:]
    value = binascii.crc32(grown) ^ 0x5354554E
    return grown + attr(0x8028, value.to_bytes(4, "big"))


def test_a_fingerprint_that_is_not_the_last_attribute_is_refused() -> None:
    fingerprinted = with_fingerprint(packet(attr(0x8022, b"abcd")))
    body = fingerprinted[20:] + attr(0x8022, b"late")
    with pytest.raises(ValueError, match=r"^STUN FINGERPRINT is not the last attribute$"):
        stun.unpack_message(header(len(body)) + body)


def test_after_message_integrity_only_the_fingerprint_counts() -> None:
    integrity = attr(0x0008, bytes(20))
    message = with_fingerprint(packet(attr(0x8022, b"mine"), integrity, attr(0x8022, b"late"), attr(0x0001, b"junk")))
    read = stun.unpack_message(message)
    assert read.attributes[Attr.SOFTWARE] == "mine"
    assert read.attributes[Attr.MESSAGE_INTEGRITY] == bytes(20)
    assert Attr.MAPPED_ADDRESS not in read.attributes, "an attribute after MESSAGE-INTEGRITY is ignored, not parsed"
    assert Attr.FINGERPRINT in read.attributes


def test_the_first_of_a_repeated_attribute_counts() -> None:
    read = stun.unpack_message(packet(attr(0x8022, b"one!"), attr(0x8022, b"two!")))
    assert read.attributes[Attr.SOFTWARE] == "one!"


def test_an_error_code_outside_300_to_699_is_not_packed() -> None:
    message = stun.Message(Method.BINDING, Class.ERROR, attributes={Attr.ERROR_CODE: (800, "no")})
    with pytest.raises(ValueError, match=r"^STUN error code 800 is not between 300 and 699$"):
        stun.pack_message(message)
