"""One target per parser: bytes in, and the parser either reads them or raises its documented ValueError.

A target raises anything else (AssertionError, TypeError, ...) only for a finding: a parser that broke on
garbage, or input it accepted that a view cannot show or that does not survive its own round trip. `make
fuzz` drives these with atheris (coverage-guided) or Hypothesis, and the unit suite replays the kept corpus.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgpack

from services.collector import Collector, Store, read_record
from services.report import format_table
from services.whoami import HttpError, Seen, answer, parse_request, refuse
from shared import stun
from shared.collector_protocol import FlowQuery, unpack_query
from shared.echo_protocol import classify_stream, pack_datagram, reflection_from_wire, unpack_datagram, unpack_hello
from shared.framing import FrameBuffer, unpack_map
from shared.names import dumps_json, shown_as_is
from shared.record import pack_record, unpack_record
from shared.registry_protocol import ConnectRequest, Registration, Rendezvous
from shared.report_model import Report


def record(data: bytes) -> None:
    """A record the collector accepts can be shown in every view and packs back to the same record."""
    try:
        parsed, _natcheck = read_record(data)
    except ValueError:
        return
    dumps_json(parsed.to_wire())
    assert unpack_record(pack_record(parsed)) == parsed


def framing(data: bytes) -> None:
    """Frames in any chunks: whole maps out, or ValueError; echo's hello and datagrams alike."""
    classify_stream(data[:2])
    buffer = FrameBuffer()
    buffer.feed(data)
    try:
        while (frame := buffer.next_frame()) is not None:
            unpack_hello(frame)
            reflection_from_wire(frame, "flow")
    except ValueError:
        pass
    try:
        datagram = unpack_datagram(data)
    except ValueError:
        return
    assert unpack_datagram(pack_datagram(datagram)) == datagram


def registry(data: bytes) -> None:
    """A registry request or reply map: each reader takes it or raises ValueError."""
    try:
        obj = unpack_map(data, "registry frame")
    except ValueError:
        return
    for read in (Registration.from_wire, ConnectRequest.from_frame, Rendezvous.from_reply):
        with contextlib.suppress(ValueError):
            read(obj)
    for entry in obj.get("registrations", []) if isinstance(obj.get("registrations"), list) else []:
        try:
            found = Registration.from_wire(entry)
        except ValueError:
            continue
        assert Registration.from_wire(found.to_wire()) == found


def stun_message(data: bytes) -> None:
    """A STUN message read packs again, and what that packs to reads back the same."""
    try:
        message = stun.unpack_message(data)
    except ValueError:
        return
    packed = stun.pack_message(message)
    assert stun.pack_message(stun.unpack_message(packed)) == packed


class QueryTarget:
    """A collector with a few records answers any query bytes with a map, never an exception."""

    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory()
        self.collector = Collector(Store(str(Path(self.directory.name) / "records")))

    def __call__(self, data: bytes) -> None:
        """Ask once."""
        try:
            _op, query = unpack_query(data)
            FlowQuery.from_wire(query)
        except ValueError:
            pass
        reply = self.collector.answer(data)
        assert isinstance(reply.get("ok"), bool)
        msgpack.packb(reply, use_bin_type=True)


def report(data: bytes) -> None:
    """A report read is shown as a table and JSON, and reads back the same from its own wire form."""
    try:
        parsed = Report.from_wire(unpack_map(data, "report"))
    except ValueError:
        return
    dumps_json(parsed.to_wire())
    assert Report.from_wire(parsed.to_wire()) == parsed
    for wide in (False, True):
        table = format_table(parsed, wide)
        assert all(shown_as_is(ch) for line in table.splitlines() for ch in line), "the table holds a control character"


SEEN = Seen("f1", "tcp", ("::ffff:198.51.100.2", 40000, 0, 0), ("::ffff:198.51.100.10", 7080, 0, 0))


def http(data: bytes) -> None:
    """whoami's HTTP head: whole and answered with a status line, not yet whole, or refused with HttpError."""
    try:
        request = parse_request(data)
    except HttpError as exc:
        assert refuse(exc).startswith(f"HTTP/1.1 {exc.status} ".encode())
        return
    if request is not None:
        status, reply = answer(request, SEEN)
        assert reply.startswith(f"HTTP/1.1 {status} ".encode())


def targets() -> dict[str, Callable[[bytes], None]]:
    """Every parser's target by the name `make fuzz PARSER=...` and the corpus folder use."""
    return {
        "record": record,
        "framing": framing,
        "http": http,
        "registry": registry,
        "stun": stun_message,
        "query": QueryTarget(),
        "report": report,
    }
