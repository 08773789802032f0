"""make bench-kill: SIGKILL the collector 10 times while 4 reporters send; count what was lost or stored twice.

The collector runs as a subprocess of this script (services.collector's Store, Collector and serve loop,
as `socklab collector` runs them, without the page; its store in a temporary directory, ports on
loopback). It is killed with SIGKILL `--every` seconds after it answered a ping, then started again on
the same store (its restart time, replay included, is measured). Four reporter processes send records at a steady rate
the whole time, then wait for every acknowledgement. The store is then read back entry by entry:
  sent        records the reporters accepted into their windows
  stored      distinct (reporter, sequence) records in the store
  lost        sent - stored (goal 0)
  duplicates  records stored more than once (goal 0)
  dropped     records refused because a window was full (each in a gap the collector reports)
Prints the figures and merges them as the "kill" object into bench/results.json (other keys kept).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import zmq

from bench.common import save
from services.collector import Collector, bind, serve
from services.store import Store
from shared.collector_protocol import query_collector
from shared.curve import make_keys
from shared.delivery import MessageKind
from shared.record import Role
from shared.reporter import Reporter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send(endpoint: str, name: str, seconds: float, rate: float, out: mp.Queue) -> None:
    """One reporter: `rate` records a second for `seconds`, then wait (up to 60 s) for every ack."""
    context = zmq.Context()
    reporter = Reporter(context, endpoint, name, resend_after=1.0)
    start, i = time.monotonic(), 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() - start < seconds:
            reporter.observe(sock, "sendto", f"{name}-{i // 100}", Role.CLIENT, remote=("192.0.2.1", 9))
            i += 1
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    reporter.flush(60)
    out.put(
        {
            "id": reporter.id.hex(),
            "sent": reporter.sent,
            "dropped": reporter.dropped,
            "resent": reporter.resent,
            "unacked": reporter.unacked,
        }
    )
    reporter.close(grace=0)
    context.term()


def run_collector(store: str, ingest: str, query: str) -> None:
    """The child: a collector on its store until it is killed."""
    collector = Collector(Store(store))
    serve(collector, *bind(zmq.Context(), ingest, query), threading.Event())


class CollectorProcess:
    """The collector as a child process on loopback ports, started again on the same store after each kill."""

    def __init__(self, store: str) -> None:
        self.ingest = f"tcp://127.0.0.1:{free_port()}"
        self.query = f"tcp://127.0.0.1:{free_port()}"
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, context: zmq.Context) -> float:
        """Start it and wait until it answers; the seconds that took (its replay included)."""
        begun = time.monotonic()
        command = [sys.executable, "-m", "bench.kill", "--collector", self.store, self.ingest, self.query]
        self.process = subprocess.Popen(command)
        self.records(context, timeout=60)
        return time.monotonic() - begun

    def records(self, context: zmq.Context, timeout: float = 5) -> int:
        """Records the collector holds, asked over its query socket (retried until it answers)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return int(query_collector(context, self.query, {"op": "ping"})["records"])
            except (RuntimeError, zmq.ZMQError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def count_store(path: str, reporters: set[str]) -> tuple[int, int]:
    """Distinct records of these reporters in the store, and how many entries repeat one."""
    store = Store(path)
    try:
        keys = Counter(
            (e.reporter.hex(), e.seq)
            for e in store.replay()
            if e.kind == MessageKind.RECORD and e.reporter.hex() in reporters
        )
    finally:
        store.close()
    return len(keys), sum(n - 1 for n in keys.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--reporters", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2000, help="records a second per reporter")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between a restart and the next kill")
    parser.add_argument("--collector", nargs=3, metavar=("STORE", "INGEST", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.collector:
        run_collector(*args.collector)
        return
    context = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        make_keys(keys)
        os.environ["SOCKLAB_KEYS"] = str(keys)  # the collector and the reporters speak CurveZMQ, as in a stack
        collector = CollectorProcess(os.path.join(tmp, "records.bin"))
        collector.start(context)
        seconds = (args.kills + 1) * (args.every + 1.5)
        out: mp.Queue = mp.Queue()
        senders = [
            mp.Process(target=send, args=(collector.ingest, f"r{n}", seconds, args.rate, out))
            for n in range(args.reporters)
        ]
        for sender in senders:
            sender.start()
        restarts = []
        for _ in range(args.kills):
            time.sleep(args.every)
            collector.kill()
            restarts.append(collector.start(context))
        stats = [out.get(timeout=seconds + 120) for _ in senders]
        for sender in senders:
            sender.join(10)
        collector.kill()
        stored, duplicates = count_store(collector.store, {s["id"] for s in stats})
    context.term()
    sent = sum(s["sent"] for s in stats)
    kill = {
        "kills": args.kills,
        "reporters": args.reporters,
        "sent": sent,
        "stored": stored,
        "lost": sent - stored,
        "duplicates": duplicates,
        "dropped": sum(s["dropped"] for s in stats),
        "resent": sum(s["resent"] for s in stats),
        "unacked_at_end": sum(s["unacked"] for s in stats),
        "restart_s_median": sorted(restarts)[len(restarts) // 2],
    }
    print(
        f"{args.kills} SIGKILLs of the collector, {args.reporters} reporters at {args.rate:.0f} records/s each: "
        f"sent {sent}, stored {stored}, lost {kill['lost']}, duplicates {duplicates} "
        f"(dropped {kill['dropped']}, resent {kill['resent']}, restart {kill['restart_s_median']:.2f} s median)"
    )
    save({"kill": kill})


if __name__ == "__main__":
    main()
