"""Property tests for every parser (Hypothesis): valid input round-trips, invalid input raises only ValueError.

The default profile keeps the unit suite fast; HYPOTHESIS_PROFILE=fuzz runs each for long (tests/conftest.py).
The kept corpus of `make fuzz` (fuzz/corpus/PARSER/) is replayed through the same targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz.targets import targets
from shared import stun
from shared.collector_protocol import FlowQuery, QueryOp, pack_query, unpack_query
from shared.delivery import HEADER, MessageKind, pack_batch, pack_item, unpack_messages
from shared.echo_protocol import Datagram, Hello, pack_datagram, pack_hello, unpack_datagram, unpack_hello
from shared.framing import FrameBuffer, pack_frame
from shared.names import dumps_json
from shared.record import (
    ConntrackEvent,
    ConntrackEventType,
    ConntrackTuple,
    Family,
    Method,
    Observation,
    Proto,
    Role,
    pack_record,
    unpack_record,
)
from shared.registry_protocol import Registration
from shared.report_model import Answer, Flow, FlowEnd, FlowVerdict, Hop, HopKind, Report

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
TARGETS = targets()

words = st.text(max_size=12)
ports = st.integers(0, 65535)
hosts = st.ip_addresses().map(str)
finite = st.floats(allow_nan=False, allow_infinity=False)
names = st.one_of(
    st.none(),
    st.tuples(hosts, ports),
    st.tuples(hosts, ports, st.integers(0, 2**20), st.integers(0, 2**32 - 1)),
    st.text(max_size=20),
    st.binary(max_size=20),
)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1))
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


observations = st.builds(
    Observation,
    service=words,
    host=words,
    flow=st.none() | words,
    role=st.sampled_from(Role),
    proto=st.sampled_from(Proto),
    family=st.sampled_from(Family),
    method=st.sampled_from(Method),
    local=names,
    remote=names,
    time=finite,
    drops=st.integers(0, 2**32),
    extra=st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in ("scenario", "evidence", "natcheck")), plain_values, max_size=3
    ),
)
conntrack_tuples = st.builds(ConntrackTuple, hosts, hosts, ports, ports)
conntrack_events = st.builds(
    ConntrackEvent,
    service=words,
    host=words,
    event=st.sampled_from(ConntrackEventType),
    id=st.integers(0, 2**32),
    proto=st.sampled_from([Proto.TCP, Proto.UDP]),
    family=st.sampled_from([Family.IPV4, Family.IPV6]),
    original=conntrack_tuples,
    reply=conntrack_tuples,
    setup=st.dictionaries(st.text(max_size=6), plain_values, max_size=3),
    time=finite,
    drops=st.integers(0, 2**32),
)


@given(st.one_of(observations, conntrack_events))
def test_a_record_round_trips_byte_exact(record: Any) -> None:
    packed = pack_record(record)
    assert unpack_record(packed) == record
    assert pack_record(unpack_record(packed)) == packed
    dumps_json(record.to_wire())


@given(observations, st.text(max_size=8), any_values)
def test_a_record_with_any_field_replaced_is_read_or_refused_with_valueerror(
    record: Observation, key: str, value: Any
) -> None:
    wire = {**record.to_wire(), key: value}
    TARGETS["record"](msgpack.packb(wire, use_bin_type=True))


@given(observations, any_values)
def test_extras_are_plain_data_or_the_record_is_refused(record: Observation, value: Any) -> None:
    wire = {**record.to_wire(), "extra": {"x": value}}
    try:
        unpack_record(msgpack.packb(wire, use_bin_type=True))
    except ValueError:
        return
    dumps_json(wire)


@given(st.binary(max_size=256))
def test_any_bytes_are_a_record_or_a_valueerror(data: bytes) -> None:
    TARGETS["record"](data)


frames = st.dictionaries(st.text(max_size=8), plain_values, max_size=4)


numbered_items = st.tuples(
    st.sampled_from([MessageKind.RECORD, MessageKind.GAP]), st.integers(1, 2**64 - 1), st.binary(max_size=24)
)


@given(st.binary(min_size=16, max_size=16), st.lists(numbered_items, min_size=1, max_size=5))
def test_a_batch_reads_back_as_its_items_in_order(reporter: bytes, items: list[tuple[MessageKind, int, bytes]]) -> None:
    read = unpack_messages(pack_batch(reporter, [pack_item(*item) for item in items]))
    assert [(m.kind, m.seq, m.body) for m in read] == items
    assert {m.reporter for m in read} == {reporter}


@given(st.sampled_from(list(MessageKind)), st.integers(0, 8), st.binary(max_size=96))
def test_any_bytes_after_a_header_are_messages_or_a_valueerror(kind: MessageKind, count: int, body: bytes) -> None:
    frame = HEADER.pack(kind, bytes(16), count) + body
    try:
        read = unpack_messages(frame)
    except ValueError:
        return
    assert read and all(m.seq and m.kind in (MessageKind.RECORD, MessageKind.GAP) for m in read)


@given(st.lists(frames, min_size=1, max_size=3), st.integers(1, 7))
def test_frames_in_any_chunks_come_out_whole_and_byte_exact(maps: list[dict[str, Any]], chunk: int) -> None:
    stream = b"".join(pack_frame(frame) for frame in maps)
    buffer, out = FrameBuffer(), []
    for start in range(0, len(stream), chunk):
        buffer.feed(stream[start : start + chunk])
        while (frame := buffer.next_frame()) is not None:
            out.append(frame)
    assert b"".join(pack_frame(frame) for frame in out) == stream


@given(st.binary(max_size=256))
def test_any_bytes_on_a_stream_are_frames_or_a_valueerror(data: bytes) -> None:
    TARGETS["framing"](data)


@given(words.filter(bool), st.none() | st.integers(0, 2**40), st.binary(max_size=32))
def test_echo_hello_and_datagram_round_trip(flow: str, length: int | None, data: bytes) -> None:
    hello = pack_hello(Hello(flow, length))
    buffer = FrameBuffer()
    buffer.feed(hello)
    frame = buffer.next_frame()
    assert frame is not None and unpack_hello(frame) == Hello(flow, length)
    assert unpack_datagram(pack_datagram(Datagram(flow, data))) == Datagram(flow, data)


registrations = st.builds(
    Registration,
    name=words,
    reported=names.filter(lambda n: n is None or isinstance(n, tuple)),
    observed=st.tuples(hosts, ports),
    ports=st.dictionaries(st.text(max_size=6), ports, max_size=3),
    time=finite,
)


@given(registrations)
def test_a_registration_round_trips(registration: Registration) -> None:
    wire = msgpack.unpackb(msgpack.packb(registration.to_wire(), use_bin_type=True))
    assert Registration.from_wire(wire) == registration


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "op",
                "name",
                "peer",
                "proto",
                "private",
                "stun",
                "wait",
                "ports",
                "registrations",
                "rendezvous",
                "role",
                "self",
                "time",
                "observed",
            ]
        ),
        any_values,
        max_size=8,
    )
)
def test_registry_maps_are_read_or_refused_with_valueerror(obj: dict[str, Any]) -> None:
    TARGETS["registry"](msgpack.packb(obj, use_bin_type=True))


address_attrs = st.sampled_from(sorted(stun.ADDRESS_ATTRS | stun.XOR_ADDRESS_ATTRS))


@st.composite
def stun_messages(draw: st.DrawFn) -> stun.Message:
    attributes: dict[int, Any] = {}
    for attr in draw(st.lists(address_attrs, max_size=3, unique=True)):
        attributes[attr] = (draw(hosts), draw(ports))
    if draw(st.booleans()):
        attributes[stun.Attr.CHANGE_REQUEST] = draw(st.sampled_from([0, 2, 4, 6]))
    if draw(st.booleans()):
        attributes[stun.Attr.SOFTWARE] = draw(st.text(max_size=20))
    if draw(st.booleans()):
        attributes[stun.Attr.ERROR_CODE] = (draw(st.integers(300, 699)), draw(st.text(max_size=20)))
    if draw(st.booleans()):
        attributes[stun.Attr.UNKNOWN_ATTRIBUTES] = draw(st.lists(st.integers(0, 0xFFFF), max_size=4))
    if draw(st.booleans()):
        attributes[0x7F01] = draw(st.binary(max_size=12))
    return stun.Message(
        draw(st.integers(0, 0xFFF)),
        draw(st.sampled_from(stun.Class)),
        draw(st.binary(min_size=12, max_size=12)),
        attributes,
        draw(st.sampled_from([stun.MAGIC_COOKIE, 0])),
    )


@given(stun_messages(), st.booleans())
def test_a_stun_message_round_trips_byte_exact(message: stun.Message, fingerprint: bool) -> None:
    packed = stun.pack_message(message, fingerprint=fingerprint)
    read = stun.unpack_message(packed)
    assert stun.pack_message(read, fingerprint=fingerprint) == packed
    read.attributes.pop(stun.Attr.FINGERPRINT, None)
    assert read == message


@given(st.binary(max_size=128))
def test_any_bytes_are_a_stun_message_or_a_valueerror(data: bytes) -> None:
    TARGETS["stun"](data)


@given(stun_messages(), st.binary(max_size=64))
def test_a_stun_message_with_garbage_attributes_is_read_or_refused(message: stun.Message, tail: bytes) -> None:
    packed = stun.pack_message(message)
    tail += b"\0" * (-len(tail) % 4)
    head = stun.HEADER.pack(
        int.from_bytes(packed[:2], "big"), len(packed) - 20 + len(tail), message.cookie, message.transaction_id
    )
    TARGETS["stun"](head + packed[20:] + tail)


flow_queries = st.builds(
    FlowQuery,
    verdict=st.lists(words, max_size=2).map(tuple),
    service=st.lists(words, max_size=2).map(tuple),
    proto=st.lists(words, max_size=2).map(tuple),
    family=st.lists(words, max_size=2).map(tuple),
    scenario=st.lists(words, max_size=2).map(tuple),
    search=words,
    last=st.none() | st.integers(0, 2**32),
    since=st.integers(0, 2**32),
)


@given(flow_queries, st.sampled_from(QueryOp))
def test_a_query_round_trips(query: FlowQuery, op: QueryOp) -> None:
    got_op, fields = unpack_query(pack_query(op, **query.to_wire()))
    assert got_op == op
    assert FlowQuery.from_wire(fields) == query


@given(
    st.dictionaries(
        st.sampled_from(["op", "verdict", "service", "search", "last", "since", "flow"]),
        any_values | st.sampled_from(list(QueryOp)),
        max_size=5,
    )
)
def test_any_query_gets_an_answer_never_an_exception(query: dict[str, Any]) -> None:
    TARGETS["query"](msgpack.packb(query, use_bin_type=True))


ends = st.builds(FlowEnd, words, words, st.sampled_from(Family), names, names)
hops = st.builds(
    Hop,
    words,
    st.sampled_from(HopKind),
    words,
    st.tuples(hosts, ports),
    st.tuples(hosts, ports),
    st.dictionaries(st.text(max_size=6), plain_values, max_size=2),
)
evidence = st.dictionaries(
    st.text(max_size=6), st.none() | words | st.integers(0, 2**32) | finite | st.booleans(), max_size=3
)
flows = st.builds(
    Flow,
    flow=words,
    proto=st.sampled_from(Proto),
    family=st.sampled_from(Family),
    scenario=st.none() | words,
    client=st.none() | ends,
    server=st.none() | ends,
    verdict=st.sampled_from(FlowVerdict),
    port_preserved=st.none() | st.booleans(),
    path=st.lists(hops, max_size=2).map(tuple),
    answer=st.none() | st.builds(Answer, names, st.booleans()),
    evidence=evidence,
)
counts = st.dictionaries(words, st.integers(0, 2**32), max_size=3)
reports = st.builds(
    Report, st.lists(flows, max_size=3).map(tuple), counts, st.integers(0, 2**32), st.integers(0, 2**32), counts, counts
)


@given(reports)
def test_a_report_round_trips_through_msgpack_and_json(report: Report) -> None:
    wire = msgpack.unpackb(msgpack.packb(report.to_wire(), use_bin_type=True))
    assert Report.from_wire(wire) == report
    TARGETS["report"](msgpack.packb(report.to_wire(), use_bin_type=True))


@given(reports, st.text(max_size=8), any_values)
def test_a_report_with_any_field_replaced_is_read_or_refused(report: Report, key: str, value: Any) -> None:
    wire = report.to_wire()
    target = wire["flows"][0] if wire["flows"] else wire
    target[key] = value
    TARGETS["report"](msgpack.packb(wire, use_bin_type=True))


header_lines = st.lists(
    st.tuples(
        st.from_regex(r"[A-Za-z-]{1,12}", fullmatch=True), st.text(st.characters(max_codepoint=126), max_size=30)
    ),
    max_size=4,
)


@given(st.sampled_from(["GET", "HEAD", "POST", "get"]), st.text(max_size=20), header_lines, st.binary(max_size=16))
def test_an_http_head_is_answered_or_refused_with_its_status(
    method: str, target: str, headers: list[tuple[str, str]], tail: bytes
) -> None:
    lines = [f"{method} /{target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
    head = "\r\n".join(lines).encode(errors="surrogateescape") + b"\r\n\r\n"
    TARGETS["http"](head)
    TARGETS["http"](head[: len(head) // 2] + tail)


@given(st.binary(max_size=256))
def test_any_bytes_are_an_http_head_or_an_httperror(data: bytes) -> None:
    TARGETS["http"](data)


@pytest.mark.parametrize("parser", sorted(TARGETS))
def test_the_kept_corpus_replays_clean(parser: str) -> None:
    inputs = sorted((CORPUS / parser).glob("*"))
    assert inputs, f"fuzz/corpus/{parser} holds no inputs"
    for path in inputs:
        TARGETS[parser](path.read_bytes())
