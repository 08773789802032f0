"""A container that is not the stack's, on its ctl network: a record pushed without a key and with a key of
its own, and a query asked with its own key. Run with python3 -c in socklab's image (argv: flow id, server
key). Prints what each socket's own monitor saw: the collector's refusal as this end experienced it."""

from __future__ import annotations

import json
import socket
import sys
import time

import zmq
from zmq.utils.monitor import parse_monitor_message

from shared.delivery import MessageKind, pack_message
from shared.record import Family, Method, Observation, Proto, Role, pack_observation

EVENTS = {
    zmq.EVENT_CONNECTED: "connected",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshake-succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake-failed-protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake-failed-auth",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake-failed",
}


def seen(monitor: zmq.Socket) -> list[str]:
    """The events a socket's monitor holds, by name."""
    events = []
    while monitor.poll(0):
        event = parse_monitor_message(monitor.recv_multipart())["event"]
        if event in EVENTS and EVENTS[event] not in events:
            events.append(EVENTS[event])
    return events


def main() -> None:
    """Try every door and say what came back."""
    flow, server_key = sys.argv[1], sys.argv[2].encode()
    observation = Observation("intruder", "h", flow, Role.CLIENT, Proto.TCP, Family.IPV4, Method.CONNECT)
    record = pack_message(MessageKind.RECORD, bytes(16), 1, pack_observation(observation))
    context = zmq.Context()
    socks = {"plain": context.socket(zmq.DEALER), "keyed": context.socket(zmq.DEALER), "query": context.socket(zmq.REQ)}
    monitors = {name: sock.get_monitor_socket() for name, sock in socks.items()}
    for name in ("keyed", "query"):
        socks[name].curve_publickey, socks[name].curve_secretkey = zmq.curve_keypair()
        socks[name].curve_serverkey = server_key
    socks["plain"].connect("tcp://collector:5555")
    socks["keyed"].connect("tcp://collector:5555")
    socks["query"].connect("tcp://collector:5556")
    for name in ("plain", "keyed"):
        socks[name].send(record, zmq.NOBLOCK)
    socks["query"].send(b"\x81\xa2op\xa4ping")
    answered = socks["query"].poll(2000) != 0
    time.sleep(0.5)
    print(
        json.dumps(
            {
                "collector": socket.gethostbyname("collector"),
                "answered": answered,
                "events": {name: seen(monitor) for name, monitor in monitors.items()},
            }
        )
    )
    for sock in [*socks.values(), *monitors.values()]:
        sock.close(linger=0)
    context.term()


main()
