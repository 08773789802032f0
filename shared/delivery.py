"""The delivery protocol between a reporter (DEALER) and the collector (ROUTER): numbered records, gaps, acks.

Every message is one ZeroMQ frame that starts with a fixed header:

| bytes | field    | meaning                                                          |
|-------|----------|------------------------------------------------------------------|
| 1     | kind     | MessageKind: RECORD, GAP, BATCH (reporter -> collector) or ACK   |
| 16    | reporter | the reporter's random id, fixed for its life                     |
| 8     | seq      | RECORD, GAP: this message's number in the reporter's sequence;    |
|       |          | BATCH: how many items follow; ACK: how many ranges follow        |

A RECORD's body is one packed record (shared.record). A GAP's body is the first and last sequence
number of records the reporter dropped because its window was full (8 bytes each), then its service
name (UTF-8): loss is itself a message, delivered like a record. A BATCH carries two or more RECORDs and
GAPs of one reporter in one frame (what its courier took at one wakeup: one ZeroMQ message, one
encryption, not one per record): each item is its kind (1 byte), its number (8) and its body's length
(4), then the body, and each is stored, acknowledged and deduplicated by its own number as if it came
alone.
An ACK's body is its ranges, 16 bytes each: every sequence number in them is on the collector's disk
(or was a duplicate of one that is).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from shared.record import MAX_RECORD

HEADER = struct.Struct("!B16sQ")
ITEM = struct.Struct("!BQI")  # a BATCH item's kind, number and body length
RANGE = struct.Struct("!QQ")
REPORTER_ID_SIZE = 16
NO_REPORTER = bytes(REPORTER_ID_SIZE)  # records stored without a sender's number (tests, older stores)
MAX_ACK_RANGES = 4096
MAX_MESSAGE = HEADER.size + ITEM.size + MAX_RECORD  # the collector's ROUTER refuses bigger (ZMQ_MAXMSGSIZE)
MAX_ACK = HEADER.size + MAX_ACK_RANGES * RANGE.size  # a reporter's DEALER refuses bigger
# Messages ZeroMQ may queue on a reporter's connection: its DEALER's SNDHWM and, per reporter, the collector's
# ROUTER's RCVHWM. A message is a batch of up to 64 KiB, so this bounds the bytes a stalled collector makes
# both sides hold (about 1 and 4 MiB); the records themselves wait in the reporter's window.
SEND_QUEUE, RECEIVE_QUEUE = 16, 64


class MessageKind(IntEnum):
    """What a delivery message carries."""

    RECORD = 1
    GAP = 2
    ACK = 3
    BATCH = 4


NUMBERED = {kind.value: kind for kind in (MessageKind.RECORD, MessageKind.GAP)}  # alone, or as a BATCH's items


class Message(NamedTuple):
    """One numbered message from a reporter: a record or a gap notice (a tuple: the collector reads thousands a
    second)."""

    kind: MessageKind
    reporter: bytes
    seq: int
    body: bytes


@dataclass(frozen=True)
class Gap:
    """Records a reporter dropped, unsent, because its window of unacknowledged records was full."""

    first: int
    last: int
    service: str

    @property
    def count(self) -> int:
        """How many records the gap stands for."""
        return self.last - self.first + 1


def pack_message(kind: MessageKind, reporter: bytes, seq: int, body: bytes) -> bytes:
    """One reporter -> collector frame."""
    return HEADER.pack(kind, reporter, seq) + body


def pack_item(kind: MessageKind, seq: int, body: bytes) -> bytes:
    """One numbered record or gap notice as a BATCH item: kept by the reporter until acknowledged, sent in batches."""
    return ITEM.pack(kind, seq, len(body)) + body


def pack_batch(reporter: bytes, items: list[bytes]) -> bytes:
    """One reporter -> collector frame carrying these items (pack_item) in order; a lone item goes as the RECORD or
    GAP message it is."""
    if len(items) == 1:
        kind, seq, _length = ITEM.unpack_from(items[0])
        return HEADER.pack(kind, reporter, seq) + items[0][ITEM.size :]
    return HEADER.pack(MessageKind.BATCH, reporter, len(items)) + b"".join(items)


def batches(items: Sequence[bytes]) -> Iterator[tuple[int, int]]:
    """Items in order as the fewest batches that each fit a message: (start, end) slices of `items`."""
    start = 0
    while start < len(items):
        end, size = start + 1, HEADER.size + len(items[start])  # one item always fits: a record is at most MAX_RECORD
        while end < len(items) and size + len(items[end]) <= MAX_MESSAGE:
            size += len(items[end])
            end += 1
        yield start, end
        start = end


def numbered(kind: int, seq: int) -> MessageKind:
    """A record's or gap's kind, checked with its number; ValueError says what is wrong."""
    checked = NUMBERED.get(kind)
    if checked is None:
        raise ValueError(f"message kind {kind} is not a record or a gap")
    if seq == 0:
        raise ValueError("message sequence number 0 is reserved")
    return checked


def unpack_message(frame: bytes) -> Message:
    """Read a reporter's frame of one record or gap; ValueError says what is wrong with it."""
    if len(frame) < HEADER.size:
        raise ValueError(f"message of {len(frame)} bytes is shorter than its {HEADER.size}-byte header")
    kind, reporter, seq = HEADER.unpack_from(frame)
    return Message(numbered(kind, seq), reporter, seq, frame[HEADER.size :])


def unpack_messages(frame: bytes) -> list[Message]:
    """Read any reporter's frame, a BATCH or a lone record or gap, as its numbered messages; ValueError says what
    is wrong with it (one bad item refuses the whole frame)."""
    if len(frame) < HEADER.size:
        raise ValueError(f"message of {len(frame)} bytes is shorter than its {HEADER.size}-byte header")
    kind, reporter, count = HEADER.unpack_from(frame)
    if kind != MessageKind.BATCH:
        return [unpack_message(frame)]
    if not 0 < count <= (len(frame) - HEADER.size) // ITEM.size:
        raise ValueError(f"batch says {count} items but has {len(frame) - HEADER.size} bytes")
    messages: list[Message] = []
    at = HEADER.size
    for _ in range(count):
        if at + ITEM.size > len(frame):
            raise ValueError(f"batch ends inside item {len(messages) + 1} of {count}")
        item, seq, length = ITEM.unpack_from(frame, at)
        at += ITEM.size + length
        if at > len(frame):
            raise ValueError(f"batch item {len(messages) + 1} of {count} says {length} bytes, past the frame's end")
        messages.append(Message(numbered(item, seq), reporter, seq, frame[at - length : at]))
    if at != len(frame):
        raise ValueError(f"batch has {len(frame) - at} bytes after its {count} items")
    return messages


def pack_gap(gap: Gap) -> bytes:
    """A gap notice's body."""
    return RANGE.pack(gap.first, gap.last) + gap.service.encode()


def unpack_gap(body: bytes) -> Gap:
    """Read a gap notice's body; ValueError says what is wrong with it."""
    if len(body) < RANGE.size:
        raise ValueError(f"gap of {len(body)} bytes is shorter than its {RANGE.size}-byte range")
    first, last = RANGE.unpack_from(body)
    if not 0 < first <= last:
        raise ValueError(f"gap range {first}..{last} is empty or starts at 0")
    try:
        service = body[RANGE.size :].decode()
    except UnicodeDecodeError:
        raise ValueError("gap service is not UTF-8") from None
    return Gap(first, last, service)


def pack_ack(reporter: bytes, ranges: list[tuple[int, int]]) -> bytes:
    """One collector -> reporter frame acknowledging these (first, last) ranges."""
    if len(ranges) > MAX_ACK_RANGES:
        raise ValueError(f"ack of {len(ranges)} ranges exceeds {MAX_ACK_RANGES}")
    return HEADER.pack(MessageKind.ACK, reporter, len(ranges)) + b"".join(RANGE.pack(*r) for r in ranges)


def unpack_ack(frame: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Read the collector's ack: whose it is and its ranges; ValueError says what is wrong with it."""
    if len(frame) < HEADER.size:
        raise ValueError(f"ack of {len(frame)} bytes is shorter than its {HEADER.size}-byte header")
    kind, reporter, count = HEADER.unpack_from(frame)
    if kind != MessageKind.ACK:
        raise ValueError(f"message kind {kind} is not an ack")
    if count > MAX_ACK_RANGES or len(frame) != HEADER.size + count * RANGE.size:
        raise ValueError(f"ack says {count} ranges but has {len(frame) - HEADER.size} bytes of them")
    ranges = [RANGE.unpack_from(frame, HEADER.size + i * RANGE.size) for i in range(count)]
    if any(not 0 < first <= last for first, last in ranges):
        raise ValueError("ack range is empty or starts at 0")
    return reporter, ranges


def to_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sequence numbers as the fewest (first, last) ranges, in order."""
    if seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))):
        return [(seqs[0], seqs[-1])]  # the usual batch: one run, in order, checked at C speed
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and seq <= ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], max(seq, ranges[-1][1]))
        else:
            ranges.append((seq, seq))
    return ranges
