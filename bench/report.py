"""Report latency at 10³..10⁶ stored records, replay time, and memory per held record.

For each size a child process writes a store of that many records (four a flow), starts a Collector
on it (the replay a restart does) and then asks it, as `socklab report` and the page do (Collector.answer
and the packed reply), for a page (the newest 100 flows), a filtered page (snat flows, newest 100) and
a search for one flow id. The first page after a replay joins only the flows it shows; the first
whole report (what the page's first load asks) joins every flow: both are timed apart.
Memory per record is the child's resident set after the replay minus before, over the record count.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import statistics
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.common import flow_records, save, temp_store
from services.collector import Collector
from services.store import Entry, Store
from shared.collector_protocol import pack_query, pack_reply
from shared.delivery import MessageKind

QUERIES: dict[str, dict[str, Any]] = {
    "page": {"op": "report", "last": 100},
    "filtered": {"op": "report", "verdict": "snat", "last": 100},
    "search": {"op": "report", "search": "", "last": 100},  # the search text is a flow id, set per size
}
REPEATS = 5
WRITE_BATCH = 10_000  # records a reporter's numbered batch holds when the store is written


def resident_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def timed_ms(collector: Collector, query: dict[str, Any]) -> float:
    """One query answered and packed, in milliseconds."""
    raw = pack_query(query.pop("op"), **query)
    start = time.perf_counter()
    reply = collector.answer(raw)
    pack_reply(reply)
    elapsed = (time.perf_counter() - start) * 1000
    if not reply.get("ok"):
        raise RuntimeError(f"query failed: {reply.get('error')}")
    return elapsed


def measure(count: int, out: Queue[Any]) -> None:
    """Write a store of `count` records, replay it, and time the queries."""
    with temp_store() as path:
        store, reporter, records = Store(path), uuid.uuid4().bytes, flow_records(count)
        for first_seq in range(0, count, WRITE_BATCH):
            batch = records[first_seq : first_seq + WRITE_BATCH]
            entries = (Entry(MessageKind.RECORD, reporter, first_seq + i + 1, raw) for i, raw in enumerate(batch))
            store.append_batch(entries)
        store.close()
        del records, batch
        gc.collect()
        before = resident_bytes()
        start = time.perf_counter()
        collector = Collector(Store(path))
        replay = time.perf_counter() - start
        held = resident_bytes() - before
        first_page = timed_ms(collector, dict(QUERIES["page"]))
        start = time.perf_counter()
        collector.report()
        first = (time.perf_counter() - start) * 1000
        wanted = f"{(count // 4) // 2:016x}"
        result: dict[str, Any] = {"replay_s": replay, "bytes_per_record": held / count, "first_report_ms": first}
        result["first_page_ms"] = first_page
        for name, query in QUERIES.items():
            ask = {**query, "search": wanted} if name == "search" else query
            result[f"{name}_ms"] = statistics.median(timed_ms(collector, dict(ask)) for _ in range(REPEATS))
        collector.store.close()
    out.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    print(f"\nreport latency (median of {REPEATS}), replay and memory")
    print(
        f"  {'records':>9} {'page ms':>8} {'filtered':>9} {'search':>8} {'1st page':>8} {'1st all':>8} "
        f"{'replay s':>9} {'B/record':>9}"
    )
    results: dict[str, dict[str, float]] = {}
    for count in args.sizes:
        out: Queue[Any] = mp.Queue()
        child = mp.Process(target=measure, args=(count, out))
        child.start()
        r = out.get(timeout=600)
        child.join(10)
        results[str(count)] = r
        print(
            f"  {count:>9,} {r['page_ms']:8.1f} {r['filtered_ms']:9.1f} {r['search_ms']:8.1f} "
            f"{r['first_page_ms']:8.1f} {r['first_report_ms']:8.0f} {r['replay_s']:9.2f} {r['bytes_per_record']:9.0f}"
        )
    report_ms = {size: max(r["page_ms"], r["filtered_ms"], r["search_ms"]) for size, r in results.items()}
    save({"report_ms": report_ms, "report": results})


if __name__ == "__main__":
    main()
