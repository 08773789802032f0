"""The collector's append-only store: framed, checksummed entries written in batches, each batch fsynced once.

File format 2 starts with FILE_MAGIC; then entries, each a fixed header and a body:

| bytes | field    | meaning                                                           |
|-------|----------|-------------------------------------------------------------------|
| 4     | magic    | ENTRY_MAGIC: where a reader resynchronises after a corrupt entry  |
| 4     | length   | the body's length                                                 |
| 4     | crc      | CRC-32 of kind, reporter, seq and body                            |
| 1     | kind     | shared.delivery.MessageKind: RECORD or GAP                        |
| 16    | reporter | the sender's id (NO_REPORTER for an unnumbered record)            |
| 8     | seq      | the sender's sequence number (0 when unnumbered)                  |

A reader that meets a bad entry (wrong magic, a length past the end, a wrong CRC) skips to the next
magic whose entry checks out, counting and logging the bytes skipped; bad bytes with no good entry
after them are a torn tail from a crash, cut off at start. A file of format 1 (entries of a 4-byte
length and a record, no file magic) is rewritten in format 2 when the store opens.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Iterator

from shared.delivery import NO_REPORTER, NUMBERED, Message, MessageKind

log = logging.getLogger(__name__)

FILE_MAGIC = b"SOCKLAB-STORE-2\n"
ENTRY_MAGIC = b"\xa5SL2"
ENTRY = struct.Struct("!4sII")  # magic, length, crc
KEY = struct.Struct("!B16sQ")  # kind, reporter, seq: the part the CRC covers with the body
HEADER = struct.Struct("!4sIIB16sQ")  # ENTRY then KEY, read at once
V1_HEADER = struct.Struct("!I")
MAX_BODY = 16 * 1024 * 1024


Entry = Message  # one stored message: the tuple the collector read it as (kind, reporter, seq, body), not a copy


def pack_entries(entries: Iterable[Entry]) -> bytes:
    """Entries as the file holds them, one after another."""
    parts: list[bytes] = []
    for kind, reporter, seq, body in entries:
        key = KEY.pack(kind, reporter, seq)
        parts += (ENTRY.pack(ENTRY_MAGIC, len(body), zlib.crc32(body, zlib.crc32(key))), key, body)
    return b"".join(parts)


def pack_entry(entry: Entry) -> bytes:
    """One entry as the file holds it."""
    return pack_entries((entry,))


def read_entry(data: mmap.mmap, pos: int) -> tuple[Entry, int] | None:
    """The entry at `pos` and where the next begins, or None if the bytes there are no whole, intact entry."""
    if pos + HEADER.size > len(data):
        return None
    magic, length, crc, kind, reporter, seq = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if magic != ENTRY_MAGIC or length > MAX_BODY or end > len(data) or kind not in NUMBERED:
        return None
    if zlib.crc32(data[pos + ENTRY.size : end]) != crc:
        return None
    return Entry(NUMBERED[kind], reporter, seq, data[pos + HEADER.size : end]), end


def scan(data: mmap.mmap, start: int, path: str) -> Iterator[tuple[Entry, int]]:
    """Every intact entry from `start` with the offset after it, skipping (and logging) corrupt stretches."""
    pos = start
    while pos < len(data):
        found = read_entry(data, pos)
        if found is None:
            bad = pos
            pos = data.find(ENTRY_MAGIC, pos + 1)
            while pos != -1 and read_entry(data, pos) is None:
                pos = data.find(ENTRY_MAGIC, pos + 1)
            if pos == -1:
                return  # nothing good after it: the caller cuts the tail
            log.warning("store %s: skipped %d corrupt bytes at offset %d", path, pos - bad, bad)
            continue
        yield found
        pos = found[1]


def read_v1(data: bytes) -> Iterator[bytes]:
    """The records of a format 1 store (a 4-byte length, then the record), up to a torn tail."""
    pos = 0
    while pos + V1_HEADER.size <= len(data):
        (length,) = V1_HEADER.unpack_from(data, pos)
        end = pos + V1_HEADER.size + length
        if end > len(data):
            return
        yield data[pos + V1_HEADER.size : end]
        pos = end


class Store:
    """Appends whole batches with one write and one fsync; says False, never raises, when the disk refuses."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.corrupt_bytes = 0
        self.write_failures = 0
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._migrate_v1()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size
        if self._size == 0:
            self._write(FILE_MAGIC)
            self._size = len(FILE_MAGIC)
            os.fsync(self._fd)

    @property
    def fd(self) -> int:
        """The file descriptor appends go to."""
        return self._fd

    def _migrate_v1(self) -> None:
        """Rewrite a format 1 file in format 2 (to a new file, fsynced, then renamed over the old)."""
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        with open(self.path, "rb") as f:
            data = f.read()
        if data.startswith(FILE_MAGIC):
            return
        records = list(read_v1(data))
        temporary = self.path + ".migrating"
        with open(temporary, "wb") as f:
            f.write(FILE_MAGIC)
            f.write(pack_entries(Entry(MessageKind.RECORD, NO_REPORTER, 0, raw) for raw in records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        log.warning("store %s: format 1 with %d records rewritten in format 2", self.path, len(records))

    def append(self, record: bytes) -> bool:
        """Store one unnumbered record durably."""
        return self.append_batch([Entry(MessageKind.RECORD, NO_REPORTER, 0, record)])

    def append_batch(self, entries: Iterable[Entry]) -> bool:
        """Write entries with one write and one fsync; False (logged, counted, bytes taken back) if either failed."""
        data = pack_entries(entries)
        try:
            self._write(data)
            os.fsync(self._fd)
        except OSError as exc:
            self.write_failures += 1
            log.error("store %s: write failed (#%d), nothing acknowledged: %s", self.path, self.write_failures, exc)
            self._take_back()
            return False
        self._size += len(data)
        return True

    def _write(self, data: bytes) -> None:
        """Write all of `data`, however many calls the kernel needs."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _take_back(self) -> None:
        """Cut a failed batch's partial bytes, so the file ends with the last good entry (best effort)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            log.warning("store %s: could not cut a failed write back: %s", self.path, exc)

    def replay(self) -> Iterator[Entry]:
        """Yield every intact entry stored; corrupt stretches are skipped and counted, a torn tail is cut off."""
        if self._size <= len(FILE_MAGIC):
            return
        good_end = len(FILE_MAGIC)
        with mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ) as data:
            for entry, end in scan(data, good_end, self.path):
                self.corrupt_bytes += end - ENTRY.size - KEY.size - len(entry.body) - good_end
                good_end = end
                yield entry
        if good_end != self._size:
            log.warning("store %s has a torn tail of %d bytes, cut off", self.path, self._size - good_end)
            os.ftruncate(self._fd, good_end)  # else entries appended after it would be hidden behind it
            self._size = good_end

    def records(self) -> Iterator[bytes]:
        """The body of every stored record, in order."""
        return (entry.body for entry in self.replay() if entry.kind == MessageKind.RECORD)

    def close(self) -> None:
        """Close the store's file."""
        os.close(self._fd)
