"""The cost of observing: echo's round trips with every record sent to a live collector vs reporting off.

Every round trip is a new flow, so every one is reported in full: a TCP flow (connect, hello, 64 B,
close: accept, getsockname and getpeername reported) and a UDP datagram of a new flow (recvmsg and
sendto reported). "Reporting off" makes no record at all. The collector runs in a third process and
shares the 2 cores, so its CPU is part of what observing costs here.
"""

from __future__ import annotations

import argparse
import socket
import time

from bench.common import interleave, save, summarize
from bench.echo import measure, udp_round_trips
from shared.echo_protocol import Hello, pack_hello
from shared.framing import recv_frame

PAYLOAD = b"x" * 64
ON, OFF = "echo reporting to a collector", "echo, reporting off"


def tcp_flows(port: int, seconds: float) -> int:
    """Whole TCP flows one after another for `seconds`: connect, hello, 64 B echoed, close."""
    flows, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(pack_hello(Hello(f"bench-{flows}", len(PAYLOAD))) + PAYLOAD)
            recv_frame(sock)
            while sock.recv(4096):
                pass
        flows += 1
    return flows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each run drives echo")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    seconds = args.seconds
    tcp = interleave(
        {
            ON: lambda: measure("echo", lambda p: tcp_flows(p, seconds)),
            OFF: lambda: measure("echo", lambda p: tcp_flows(p, seconds), reporting=False),
        },
        args.rounds,
    )
    tcp_summary = summarize("observing: TCP flows (3 server records each)", "flows/s", tcp, OFF)
    udp = interleave(
        {
            ON: lambda: measure("echo", lambda p: udp_round_trips(p, seconds, True)),
            OFF: lambda: measure("echo", lambda p: udp_round_trips(p, seconds, True), reporting=False),
        },
        args.rounds,
    )
    udp_summary = summarize("observing: UDP datagrams, each a new flow (2 records each)", "flows/s", udp, OFF)
    ratios = (tcp_summary[ON]["ratio"], udp_summary[ON]["ratio"])
    save({"observe_ratio": min(ratios), "observe": {"tcp": tcp_summary, "udp": udp_summary}})


if __name__ == "__main__":
    main()
