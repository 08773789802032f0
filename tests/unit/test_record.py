"""The report record: names survive the wire exactly, and every malformed record is refused with a reason."""

from __future__ import annotations

import re
import socket
from typing import Any

import msgpack
import pytest

from shared.record import Family, Observation, Proto, Role, pack_observation, socket_kind, unpack_observation

pytestmark = pytest.mark.unit


def record(**changes: Any) -> Observation:
    fields: dict[str, Any] = {
        "service": "echo",
        "host": "h",
        "flow": "f1",
        "role": Role.SERVER,
        "proto": Proto.TCP,
        "family": "ipv6",
        "method": "accept",
        "local": ("::ffff:198.51.100.10", 7007, 0, 0),
        "remote": ("fe80::1", 40000, 7, 3),
        "time": 1.5,
        "drops": 2,
        "extra": {"scenario": "tcp4", "reflexive": ["192.0.2.1", 5]},
    }
    return Observation(**{**fields, **changes})


@pytest.mark.parametrize(
    "name",
    [
        ("192.0.2.1", 80),
        ("2001:db8::1", 443, 0x12345, 4),
        "/run/socklab/echo.sock",
        "",
        b"\0abstract",
        None,
    ],
    ids=["ipv4", "ipv6", "path", "unnamed", "abstract", "none"],
)
def test_names_round_trip_exactly(name: Any) -> None:
    obs = record(local=name, remote=name)
    again = unpack_observation(pack_observation(obs))
    assert again == obs
    assert type(again.local) is type(name), "tuples stay tuples, paths str, abstract names bytes"


def test_ipv6_names_keep_flowinfo_and_scope_id() -> None:
    again = unpack_observation(pack_observation(record()))
    assert again.remote == ("fe80::1", 40000, 7, 3)
    assert again.local == ("::ffff:198.51.100.10", 7007, 0, 0)


def test_a_listeners_record_has_no_flow() -> None:
    again = unpack_observation(pack_observation(record(flow=None, method="bind", remote=None)))
    assert (again.flow, again.remote, again.role, again.proto) == (None, None, Role.SERVER, Proto.TCP)


def wire(**changes: Any) -> bytes:
    """A good record's map with keys changed; a value of ... deletes the key."""
    data = msgpack.unpackb(pack_observation(record()), raw=False)
    data.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del data[key]
    return msgpack.packb(data, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xc1", "record is not msgpack"),
        (b"\x81\xa1v", "record is not msgpack"),
        (msgpack.packb([1, 2]), "record is a list, not a map"),
        (msgpack.packb("v"), "record is a str, not a map"),
        (wire(v=...), "record has no 'v'"),
        (wire(v=2), "record schema version 2 is not 1"),
        (wire(v=True), "record 'v' has type bool"),
        (wire(service=...), "record has no 'service'"),
        (wire(time=...), "record has no 'time'"),
        (wire(service=5), "record 'service' has type int"),
        (wire(host=b"h"), "record 'host' has type bytes"),
        (wire(time="now"), "record 'time' has type str"),
        (wire(time=False), "record 'time' has type bool"),
        (wire(drops=True), "record 'drops' has type bool"),
        (wire(drops=1.0), "record 'drops' has type float"),
        (wire(role=1), "record 'role' has type int"),
        (wire(role="peer"), "record role 'peer' is unknown"),
        (wire(proto="sctp"), "record proto 'sctp' is unknown"),
        (wire(family="ipx"), "record family 'ipx' is unknown"),
        (wire(method="listen"), "record method 'listen' is unknown"),
        (wire(flow=7), "record 'flow' has type int"),
        (wire(node=3), "record 'node' has type int"),
        (wire(extra=[]), "record 'extra' has type list"),
        (wire(local=["192.0.2.1", 80, 0]), "name must have 2 or 4 items, not 3"),
        (wire(local=["192.0.2.1"]), "name must have 2 or 4 items, not 1"),
        (wire(local=["192.0.2.1", 70000]), "name port 70000 out of range"),
        (wire(local=["192.0.2.1", -1]), "name port -1 out of range"),
        (wire(local=["192.0.2.1", True]), "name port, flowinfo and scope_id must be integers"),
        (wire(local=["::1", 80, "0", 0]), "name port, flowinfo and scope_id must be integers"),
        (wire(local=[1, 80]), "name host must be a string"),
        (wire(local=[b"192.0.2.1", 80]), "name host must be a string"),
        (wire(remote={"host": "x"}), "name must be a list, string or nil, not dict"),
        (wire(remote=80), "name must be a list, string or nil, not int"),
    ],
)
def test_malformed_records_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
        unpack_observation(data)


def test_a_record_names_its_node_and_one_that_does_not_reads_as_unknown() -> None:
    assert unpack_observation(pack_observation(record(node="node2"))).node == "node2"
    assert unpack_observation(wire(node=...)).node == ""
    assert unpack_observation(wire(node=None)).node == ""


def test_a_record_round_trips_byte_for_byte_through_its_map() -> None:
    data = pack_observation(record())
    again = Observation.from_wire(msgpack.unpackb(data, raw=False))
    assert again == record() and again.to_wire() == msgpack.unpackb(data, raw=False)
    assert pack_observation(again) == data


@pytest.mark.parametrize("moment", [float("nan"), float("inf")])
def test_a_time_json_cannot_carry_is_refused(moment: float) -> None:
    with pytest.raises(ValueError, match=r"^record 'time' .* is not finite$"):
        unpack_observation(wire(time=moment))


@pytest.mark.parametrize(
    "changes",
    [{}, {"local": ("192.0.2.1", 80), "remote": ("192.0.2.2", 65535)}, {"time": 2}, {"flow": None}, {"remote": "/p"}],
    ids=["ipv6", "ipv4", "int-time", "no-flow", "path"],
)
def test_the_one_pass_reader_reads_what_the_field_by_field_reader_reads(changes: dict[str, Any]) -> None:
    obj = msgpack.unpackb(pack_observation(record(**changes)), raw=False)
    fast, checked = Observation.from_wire(obj), Observation.checked(obj)
    assert fast == checked and type(fast.time) is float and type(fast.local) is type(checked.local)


def test_held_records_share_one_copy_of_each_service_name() -> None:
    first, second = (unpack_observation(pack_observation(record())) for _ in range(2))
    assert first.service is second.service and first.host is second.host


def test_held_records_share_address_strings_and_an_empty_extra() -> None:
    first, second = (unpack_observation(pack_observation(record(local=("192.0.2.1", 80), extra={}))) for _ in range(2))
    assert first.local is not None and second.local is not None
    assert first.local[0] is second.local[0] and first.extra is second.extra and first.extra == {}


@pytest.mark.parametrize(
    ("family", "kind", "expected"),
    [
        (socket.AF_INET, socket.SOCK_STREAM, (Proto.TCP, Family.IPV4)),
        (socket.AF_INET6, socket.SOCK_DGRAM, (Proto.UDP, Family.IPV6)),
        (socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, (Proto.UDP, Family.IPV4)),
        (socket.AF_UNIX, socket.SOCK_STREAM, (Proto.UNIX, Family.UNIX)),
        (socket.AF_UNIX, socket.SOCK_DGRAM, (Proto.UNIX, Family.UNIX)),
    ],
)
def test_a_sockets_kind_read_from_its_raw_numbers_is_what_its_properties_say(
    family: int, kind: int, expected: tuple[Proto, Family]
) -> None:
    with socket.socket(family, kind) as sock:
        assert socket_kind(sock) == expected == (Proto.of(sock), Family.of(sock.family))
        assert socket_kind(sock) == expected, "and the same once cached"
