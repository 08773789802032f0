"""What every benchmark shares: A/B rounds interleaved, CPU time from schedstat, medians, and results.json.

A benchmark measures a subject against a baseline in the same run: rounds alternate A B, B A, ... so a
noisy neighbour on a shared 2-core machine hits both alike. Wall rates swing; CPU per operation (the
serving process's threads, from /proc/PID/task/*/schedstat) is steadier, so both are kept and printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import msgpack
import zmq

import services.collector
from services.collector import Collector, bind, serve
from services.store import Store
from shared.record import SCHEMA_VERSION

RESULTS = Path(__file__).with_name("results.json")


@dataclass(frozen=True)
class Sample:
    """One timed run: operations per wall second, the server's CPU microseconds per operation, and what was lost
    (records not stored, or dropped by a reporter whose window was full) of how many records were made."""

    rate: float
    cpu_us: float
    lost: int = 0
    records: int = 0


def cpu_seconds(pid: int) -> float:
    """CPU time every thread of a process has run so far (schedstat's first field, in ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def interleave(variants: dict[str, Callable[[], Sample]], rounds: int) -> dict[str, list[Sample]]:
    """Run each variant once a round, the order reversed every other round."""
    names = list(variants)
    runs: dict[str, list[Sample]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            runs[name].append(variants[name]())
    return runs


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, lowest and highest."""
    return statistics.median(values), min(values), max(values)


def summarize(title: str, unit: str, runs: dict[str, list[Sample]], baseline: str) -> dict[str, Any]:
    """Print each variant's rate and CPU per operation, and its ratio to the baseline round by round."""
    print(f"\n{title}")
    print(f"  {'variant':28} {unit + ' median':>16} {'min..max':>19} {'CPU µs/op':>10} {'ratio':>6} {'min..max':>11}")
    base = runs[baseline]
    summary: dict[str, Any] = {}
    for name, samples in runs.items():
        rate, low, high = spread([s.rate for s in samples])
        cpu = statistics.median(s.cpu_us for s in samples)
        ratio, rlow, rhigh = spread([s.rate / b.rate for s, b in zip(samples, base, strict=True)])
        cpu_ratio = statistics.median(b.cpu_us / s.cpu_us for s, b in zip(samples, base, strict=True) if s.cpu_us)
        lost, records = sum(s.lost for s in samples), sum(s.records for s in samples)
        print(
            f"  {name:28} {rate:16,.0f} {f'{low:,.0f}..{high:,.0f}':>19} {cpu:10.2f} "
            f"{ratio:6.2f} {f'{rlow:.2f}..{rhigh:.2f}':>11}"
            + (f"  lost {lost:,}" if lost else "")
            + (f" of {records:,} records" if lost and records else "")
        )
        summary[name] = {"rate": rate, "cpu_us": cpu, "ratio": ratio, "ratio_min": rlow, "ratio_max": rhigh}
        summary[name]["cpu_ratio"] = cpu_ratio
        summary[name]["lost"] = lost
        summary[name]["records"] = records
    return summary


def save(results: dict[str, Any]) -> None:
    """Merge these keys into bench/results.json, keeping every key another benchmark wrote."""
    try:
        held = json.loads(RESULTS.read_text())
    except FileNotFoundError:
        held = {}
    held.update(results)
    with tempfile.NamedTemporaryFile("w", dir=RESULTS.parent, delete=False) as f:
        json.dump(held, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(f.name, RESULTS)


def free_port() -> int:
    """A loopback TCP port no one holds right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_flag(stop: Event) -> threading.Event:
    """A thread's Event set when a process's Event is (the services' loops wait on the former)."""
    flag = threading.Event()
    threading.Thread(target=lambda: flag.set() if stop.wait() else None, daemon=True).start()
    return flag


def no_curve(_sock: zmq.Socket, _directory: object = None) -> None:
    """Leave a socket plain ZeroMQ: the one-line CurveZMQ hook of the baseline that measures what curve costs."""


def run_collector(ingest: str, query: str, stop: Event, curve: bool = True) -> None:
    """The real collector (bind, serve, Collector, Store) on a temporary store, until `stop` is set; with
    `curve` False (this child process only), its sockets are left without CurveZMQ."""
    if not curve:
        services.collector.secure_server = no_curve  # type: ignore[assignment]
    with temp_store() as path:
        collector = Collector(Store(path))
        context = zmq.Context()
        serve(collector, *bind(context, ingest, query), stop_flag(stop))
        collector.store.close()
        context.term()


@contextlib.contextmanager
def temp_store() -> Iterator[str]:
    """A store path in a fresh temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="socklab-bench-") as tmp:
        yield os.path.join(tmp, "records.bin")


def flow_records(count: int) -> list[bytes]:
    """`count` packed records, four a flow (the client's connect and getsockname, the server's recvmsg and sendto),
    every other flow through a source NAT, as the client scenarios report them."""
    server = ["198.51.100.10", 7007]
    records = []
    for i in range(count):
        n, step = i // 4, i % 4
        client = ["192.168.50.20", 10000 + n % 50000]
        seen = ["203.0.113.2", client[1]] if n % 2 else client
        method, local, remote, extra = [
            ("connect", None, server, {}),
            ("getsockname", client, None, {"scenario": "udp4"}),
            ("recvmsg", server, seen, {}),
            ("sendto", None, seen, {}),
        ][step]
        wire = {
            "v": SCHEMA_VERSION,
            "time": 1.7e9 + i / 1000,
            "service": "client-lan" if step < 2 else "echo",
            "host": "c0ffee" if step < 2 else "ec40",
            "flow": f"{n:016x}",
            "role": "client" if step < 2 else "server",
            "proto": "udp",
            "family": "ipv4",
            "method": method,
            "local": local,
            "remote": remote,
            "drops": 0,
            "extra": extra,
        }
        records.append(msgpack.packb(wire, use_bin_type=True))
    return records
