"""Replay of a store of N records: the store's own read (framing, CRC, resynchronising reader) and a whole
collector start (decode, check, index), timed on one file written here first."""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
import uuid

from services.collector import Collector
from services.store import Entry, Store
from shared.delivery import MessageKind
from shared.record import Family, Method, Observation, Proto, Role, pack_observation


def write_store(path: str, count: int) -> None:
    """`count` observations from 4 reporters, in batches of 1000 as the collector writes them."""
    store = Store(path)
    reporters = [uuid.uuid4().bytes for _ in range(4)]
    batch: list[Entry] = []
    for i in range(count):
        role = Role.CLIENT if i % 2 else Role.SERVER
        record = Observation(
            "echo",
            "h1",
            f"flow-{i // 4}",
            role,
            Proto.UDP,
            Family.IPV4,
            Method.RECVFROM,
            local=("198.51.100.10", 7007),
            remote=("198.51.100.2", 40000 + i % 20000),
            time=1.7e9 + i,
        )
        batch.append(Entry(MessageKind.RECORD, reporters[i % 4], i // 4 + 1, pack_observation(record)))
        if len(batch) == 1000:
            store.append_batch(batch)
            batch = []
    store.append_batch(batch)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "records.bin")
        write_store(path, args.records)
        size = os.path.getsize(path)
        store = Store(path)
        start = time.perf_counter()
        entries = sum(1 for _ in store.replay())
        read_s = time.perf_counter() - start
        store.close()
        gc.collect()
        start = time.perf_counter()
        collector = Collector(Store(path))
        start_s = time.perf_counter() - start
        held = len(collector.observations)
        collector.store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.records} records, {size / 2**20:.0f} MiB: store read {read_s:.2f} s ({entries} entries), "
        f"collector start {start_s:.2f} s ({held} records held), peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
