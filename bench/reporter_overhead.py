"""What reporting costs the data path: echo round trips with and without a reporter, and with a dead collector.

Runs echo in a child process on loopback and drives it from this process, once per configuration:
  baseline      echo's reporter is connected to nothing and has a one-record window: every record
                after the first is numbered and dropped at once (the cheapest a report can be)
  collector     records go to a live collector in a third process, which stores them
  no-collector  records queue for a collector that never comes (the window fills, then drops)
Prints round trips per second and the ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import socket
import statistics
import tempfile
import threading
import time

import msgpack
import zmq

from services.collector import Collector, Store, bind, serve
from services.echo import EchoServer
from shared.framing import pack_frame, recv_frame
from shared.reporter import Reporter


def run_echo(endpoint: str, window: int, ready: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    context = zmq.Context()
    reporter = Reporter(context, endpoint, "bench-echo", window=window)
    server = EchoServer(reporter, 0, None)
    server.listen()
    ready.put(server.port)
    flag = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), flag.set()), daemon=True).start()
    server.serve(flag)
    ready.put((reporter.sent, reporter.dropped))
    server.close()
    reporter.close(grace=0)
    context.term()


def run_collector(port: int, stop: mp.Event) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        collector = Collector(Store(os.path.join(tmp, "records.bin")))
        flag = threading.Event()
        threading.Thread(target=lambda: (stop.wait(), flag.set()), daemon=True).start()
        serve(collector, *bind(zmq.Context(), f"tcp://127.0.0.1:{port}", "tcp://127.0.0.1:*"), flag)


def udp_round_trips(port: int, count: int) -> float:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        datagram = msgpack.packb({"flow": "bench", "data": b"x" * 64})
        start = time.perf_counter()
        for _ in range(count):
            sock.send(datagram)
            sock.recv(2048)
        return count / (time.perf_counter() - start)


def tcp_flows(port: int, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(pack_frame({"flow": f"bench-{i}", "length": 64}) + b"x" * 64)
            recv_frame(sock)
            while sock.recv(4096):
                pass
    return count / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(endpoint: str, window: int, udp: int, tcp: int, with_collector: bool) -> dict[str, float]:
    stop, ready = mp.Event(), mp.Queue()
    collector = None
    if with_collector:
        collector = mp.Process(target=run_collector, args=(int(endpoint.rsplit(":", 1)[1]), stop))
        collector.start()
    echo = mp.Process(target=run_echo, args=(endpoint, window, ready, stop))
    echo.start()
    port = ready.get(timeout=10)
    result = {"udp": udp_round_trips(port, udp), "tcp": tcp_flows(port, tcp)}
    stop.set()
    sent, dropped = ready.get(timeout=10)
    echo.join(10)
    if collector:
        collector.join(10)
    result.update(sent=sent, dropped=dropped)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--udp", type=int, default=20000, help="UDP round trips per configuration")
    parser.add_argument("--tcp", type=int, default=2000, help="TCP flows per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration, interleaved; median kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    configs = [
        ("baseline", nowhere, 1, False),
        ("collector", f"tcp://127.0.0.1:{free_port()}", 10_000, True),
        ("no-collector", nowhere, 10_000, False),
    ]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in configs}
    for _ in range(args.rounds):
        for name, ep, window, live in configs:
            runs[name].append(measure(ep, window, args.udp, args.tcp, live))
    results = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    base = results["baseline"]
    header = ("udp rt/s", "ratio", "tcp flows/s", "ratio", "sent", "dropped")
    widths = (10, 6, 12, 6, 8, 8)
    print(f"{'configuration':14} " + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for name, r in results.items():
        print(
            f"{name:14} {r['udp']:10.0f} {r['udp'] / base['udp']:6.2f} {r['tcp']:12.0f} "
            f"{r['tcp'] / base['tcp']:6.2f} {r['sent']:8.0f} {r['dropped']:8.0f}"
        )


if __name__ == "__main__":
    main()
