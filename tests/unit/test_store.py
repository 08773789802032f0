"""The store: checksummed entries, a corrupt stretch skipped without losing what follows it, a torn tail cut,
a format 1 file migrated, a refused write taken back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.collector import Collector
from services.store import ENTRY, ENTRY_MAGIC, FILE_MAGIC, KEY, V1_HEADER, Entry, Store, pack_entry
from shared.delivery import NO_REPORTER, MessageKind
from tests.unit.test_collector import GOOD

pytestmark = pytest.mark.unit

RID = bytes(range(16))


def entries(count: int) -> list[Entry]:
    return [Entry(MessageKind.RECORD, RID, seq, b"record %d" % seq) for seq in range(1, count + 1)]


def stored(path: Path) -> list[Entry]:
    store = Store(str(path))
    try:
        return list(store.replay())
    finally:
        store.close()


def test_a_batch_is_read_back_whole(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "r.bin"))
    assert store.append_batch(entries(3)) and store.append(b"unnumbered")
    store.close()
    assert stored(tmp_path / "r.bin") == [*entries(3), Entry(MessageKind.RECORD, NO_REPORTER, 0, b"unnumbered")]
    assert (tmp_path / "r.bin").read_bytes().startswith(FILE_MAGIC)


def overwrite(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


BODY = ENTRY.size + KEY.size
DAMAGE = {
    "magic": lambda data, at: overwrite(data, at, b"\xff\xff"),
    "length past the end": lambda data, at: overwrite(data, at + 4, b"\x7f\xff\xff\xff"),
    "length too short": lambda data, at: overwrite(data, at + 4, b"\x00\x00\x00\x01"),
    "crc": lambda data, at: overwrite(data, at + 8, b"\x00\x00"),
    "body": lambda data, at: overwrite(data, at + BODY + 2, b"X"),
    "inserted bytes": lambda data, at: data[:at] + b"garbage in the middle" + data[at:],
}


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_corrupt_entry_in_the_middle_costs_only_itself(tmp_path: Path, what: str) -> None:
    path = tmp_path / "r.bin"
    store = Store(str(path))
    store.append_batch(entries(5))
    store.close()
    third = len(FILE_MAGIC) + 2 * len(pack_entry(entries(1)[0]))
    damaged = DAMAGE[what](path.read_bytes(), third)
    path.write_bytes(damaged)
    expected = [1, 2, 3, 4, 5] if what == "inserted bytes" else [1, 2, 4, 5]
    assert [e.seq for e in stored(path)] == expected, f"a corrupt {what} hides nothing after it"
    assert path.read_bytes() == damaged, "nothing cut: the end of the file was good"


def test_the_skipped_bytes_are_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.bin"
    store = Store(str(path))
    store.append_batch(entries(2))
    store.close()
    first = len(FILE_MAGIC) + len(pack_entry(entries(1)[0]))
    path.write_bytes(path.read_bytes()[:first] + b"junk" + path.read_bytes()[first:])
    store = Store(str(path))
    assert [e.seq for e in store.replay()] == [1, 2]
    assert store.corrupt_bytes == 4
    store.close()
    assert f"skipped 4 corrupt bytes at offset {first}" in caplog.text


def test_a_torn_tail_is_cut_and_entries_appended_after_it_survive(tmp_path: Path) -> None:
    path = tmp_path / "r.bin"
    store = Store(str(path))
    store.append_batch(entries(2))
    store.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(pack_entry(Entry(MessageKind.RECORD, RID, 3, b"x" * 100))[:50])  # a crash mid-write
    store = Store(str(path))
    assert [e.seq for e in store.replay()] == [1, 2]
    assert path.read_bytes() == whole, "the tail is cut"
    store.append_batch([Entry(MessageKind.RECORD, RID, 3, b"after")])
    store.close()
    assert [e.body for e in stored(path)] == [b"record 1", b"record 2", b"after"]


def test_a_magic_inside_a_body_is_not_taken_for_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "r.bin"
    tricky = Entry(MessageKind.RECORD, RID, 1, ENTRY_MAGIC + b"\x00\x00\x00\x00" * 20)
    store = Store(str(path))
    store.append_batch([tricky, *entries(3)[1:]])
    store.close()
    data = bytearray(path.read_bytes())
    data[len(FILE_MAGIC) + ENTRY.size + KEY.size - 1] ^= 0xFF  # break the first entry's key: its CRC fails
    path.write_bytes(bytes(data))
    assert [e.seq for e in stored(path)] == [2, 3]


def test_a_format_1_store_is_migrated_with_its_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.bin"
    old = [b"first record", b"second record"]
    path.write_bytes(b"".join(V1_HEADER.pack(len(r)) + r for r in old) + V1_HEADER.pack(99) + b"torn")
    store = Store(str(path))
    assert list(store.records()) == old
    store.close()
    assert path.read_bytes().startswith(FILE_MAGIC)
    assert "format 1 with 2 records rewritten in format 2" in caplog.text
    assert not os.path.exists(str(path) + ".migrating")


def test_a_refused_write_says_false_is_counted_and_leaves_no_partial_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.bin"
    store = Store(str(path))
    store.append_batch(entries(1))
    saved, full = os.dup(store.fd), os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, store.fd)
    assert not store.append_batch(entries(3)[1:]), "ENOSPC from the kernel: False, no exception"
    os.dup2(saved, store.fd)
    os.close(saved)
    os.close(full)
    assert store.write_failures == 1 and "No space left on device" in caplog.text
    assert store.append_batch(entries(3)[1:]), "space again: the same entries are taken"
    store.close()
    assert stored(path) == entries(3)


def test_a_collector_replays_a_store_with_a_corrupt_middle(tmp_path: Path) -> None:
    path = tmp_path / "r.bin"
    collector = Collector(Store(str(path)))
    for raw in GOOD:
        collector.ingest(raw)
    collector.store.close()
    data = bytearray(path.read_bytes())
    data[len(FILE_MAGIC) + 5] ^= 0xFF  # the first entry's length
    path.write_bytes(bytes(data))
    again = Collector(Store(str(path)))
    assert again.observations == collector.observations[1:]
    again.store.close()
