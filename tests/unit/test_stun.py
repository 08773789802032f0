"""shared.stun against RFC 5769's test vectors, byte-exact round trips and every malformed-packet error."""

from __future__ import annotations

import re

import pytest

from shared import stun

pytestmark = pytest.mark.unit

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 section 2.1: Sample Request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT)
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# RFC 5769 section 2.2: Sample IPv4 Response
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


def test_rfc5769_sample_request() -> None:
    msg = stun.unpack_message(SAMPLE_REQUEST)
    assert (msg.method, msg.cls, msg.transaction_id) == (stun.Method.BINDING, stun.Class.REQUEST, TID)
    assert msg.attributes[stun.Attr.SOFTWARE] == "STUN test client"
    assert msg.attributes[stun.Attr.USERNAME] == "evtj:h6vY"
    assert not msg.classic


def test_rfc5769_sample_ipv4_response() -> None:
    msg = stun.unpack_message(SAMPLE_IPV4_RESPONSE)
    assert (msg.cls, msg.transaction_id) == (stun.Class.RESPONSE, TID)
    assert msg.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == ("192.0.2.1", 32853)
    assert msg.attributes[stun.Attr.SOFTWARE] == "test vector"


def test_rfc5769_sample_ipv6_response() -> None:
    msg = stun.unpack_message(SAMPLE_IPV6_RESPONSE)
    assert msg.attributes[stun.Attr.XOR_MAPPED_ADDRESS] == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


@pytest.mark.parametrize(
    "attributes",
    [
        {stun.Attr.XOR_MAPPED_ADDRESS: ("192.0.2.1", 32853), stun.Attr.SOFTWARE: "test vector"},
        {stun.Attr.XOR_MAPPED_ADDRESS: ("2001:db8:1234:5678:11:2233:4455:6677", 32853)},
        {stun.Attr.RESPONSE_ORIGIN: ("198.51.100.3", 3478), stun.Attr.OTHER_ADDRESS: ("198.51.100.4", 3479)},
        {stun.Attr.CHANGE_REQUEST: stun.CHANGE_IP | stun.CHANGE_PORT},
        {stun.Attr.ERROR_CODE: (420, "Unknown Attribute"), stun.Attr.UNKNOWN_ATTRIBUTES: [0x0042, 0x0043]},
        {stun.Attr.MAPPED_ADDRESS: ("203.0.113.9", 1)},
    ],
)
def test_round_trip_is_byte_exact(attributes: dict[int, object]) -> None:
    msg = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, TID, dict(attributes))
    for fingerprint in (False, True):
        data = stun.pack_message(msg, fingerprint=fingerprint)
        again = stun.unpack_message(data)
        assert stun.pack_message(again, fingerprint=fingerprint) == data
        assert {k: v for k, v in again.attributes.items() if k != stun.Attr.FINGERPRINT} == attributes


def test_xor_mapped_address_matches_rfc5769_bytes() -> None:
    assert stun.pack_xor_address(("192.0.2.1", 32853), TID) == bytes.fromhex("0001a147e112a643")


@pytest.mark.parametrize("cls", list(stun.Class))
def test_message_type_is_symmetric(cls: stun.Class) -> None:
    for method in (0x001, 0x00A, 0xFFF):
        assert stun.split_type(stun.message_type(method, cls)) == (method, cls)
    assert stun.message_type(stun.Method.BINDING, stun.Class.RESPONSE) == 0x0101


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x01\x00", "STUN message length is less than 20 bytes"),
        (b"\xc0\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12), "STUN message type has its two top bits set"),
        (b"\x00\x01\x00\x02" + b"\x21\x12\xa4\x42" + bytes(14), "STUN message length is not a multiple of 4"),
        (b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + bytes(12), "STUN message length does not match the packet"),
        (
            b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + bytes(12) + b"\x00\x20\x00\x08",
            "STUN attribute value is truncated",
        ),
        (
            b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + bytes(12) + b"\x00\x01\x00\x04\x00\x07\x00\x01",
            "STUN address has unknown protocol 7",
        ),
        (
            b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + bytes(12) + b"\x00\x01\x00\x04\x00\x01\x00\x01",
            "STUN address has invalid length for IPv4: 0",
        ),
    ],
)
def test_malformed_packets_raise_exact_errors(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
        stun.unpack_message(data)


def test_bad_fingerprint_is_rejected() -> None:
    damaged = SAMPLE_IPV4_RESPONSE[:-1] + bytes([SAMPLE_IPV4_RESPONSE[-1] ^ 1])
    with pytest.raises(ValueError, match=r"^STUN fingerprint does not match$"):
        stun.unpack_message(damaged)


def test_classic_rfc3489_message_keeps_its_cookie() -> None:
    classic = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, TID, cookie=0x01020304)
    again = stun.unpack_message(stun.pack_message(classic))
    assert again.classic and again.cookie == 0x01020304


def test_is_stun_tells_stun_from_other_traffic() -> None:
    assert stun.is_stun(SAMPLE_REQUEST)
    assert not stun.is_stun(b"\x82\xa4flow" + bytes(20))
    assert not stun.is_stun(b"\x00\x01")
