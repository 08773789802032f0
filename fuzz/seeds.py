"""Valid inputs for each parser, the corpus a campaign starts from when fuzz/corpus/PARSER/ is empty."""

from __future__ import annotations

import msgpack

from shared import stun
from shared.collector_protocol import QueryOp, pack_query
from shared.echo_protocol import Datagram, Hello, pack_datagram, pack_hello
from shared.framing import pack_frame
from shared.record import (
    ConntrackEvent,
    ConntrackEventType,
    ConntrackTuple,
    Family,
    Method,
    Observation,
    Proto,
    Role,
    pack_record,
)
from shared.registry_protocol import Registration
from shared.report_model import Flow, FlowEnd, FlowVerdict, Hop, HopKind, Report

CLIENT, SERVER = ("192.168.50.20", 40000), ("198.51.100.10", 7007)
NATCHECK = {
    "mapping": "endpoint-independent",
    "filtering": "address-and-port-dependent",
    "port_preserved": True,
    "hairpin": False,
    "mapped_address": ["198.51.100.2", 40000],
    "local_address": list(CLIENT),
    "server": ["198.51.100.3", 3478],
    "other_address": ["198.51.100.4", 3479],
    "tests": [{"name": "test1", "local": list(CLIENT), "destination": ["198.51.100.3", 3478], "error": [420, "x"]}],
}


def observation(**extra: object) -> Observation:
    """A client's closing record."""
    return Observation(
        "client-lan", "c1", "f1", Role.CLIENT, Proto.UDP, Family.IPV6, Method.GETSOCKNAME, CLIENT, SERVER, extra=extra
    )


def flow() -> Flow:
    """A flow with both ends and a hop."""
    end = FlowEnd("echo", "e1", Family.IPV4, SERVER, ("198.51.100.2", 40000))
    hop = Hop("router", HopKind.SNAT, "MASQUERADE", CLIENT, ("198.51.100.2", 40000), {"id": 7})
    return Flow("f1", Proto.TCP, Family.IPV4, "tcp", end, end, FlowVerdict.SNAT, True, (hop,), None, {"bytes": 3})


def seeds() -> dict[str, list[bytes]]:
    """A few valid inputs per parser."""
    tuple_ = ConntrackTuple("192.168.50.20", "198.51.100.10", 40000, 7007)
    event = ConntrackEvent("router", "r", ConntrackEventType.NEW, 1, Proto.UDP, Family.IPV4, tuple_, tuple_, {"m": 1})
    registration = Registration("echo", CLIENT, SERVER, {"tcp": 7007})
    response = stun.binding_request(stun.CHANGE_PORT)
    response.attributes[stun.Attr.XOR_MAPPED_ADDRESS] = SERVER
    response.attributes[stun.Attr.ERROR_CODE] = (420, "Unknown Attribute")
    response.attributes[stun.Attr.UNKNOWN_ATTRIBUTES] = [3]
    return {
        "record": [
            pack_record(observation(scenario="udp", reflexive=list(SERVER))),
            pack_record(observation(natcheck=NATCHECK, evidence={"bytes_in": 3})),
            pack_record(event),
        ],
        "framing": [pack_hello(Hello("f1", 3)) + b"abc", pack_datagram(Datagram("f1", b"x")), pack_frame({"op": 1})],
        "registry": [
            msgpack.packb(
                {
                    "op": "connect",
                    "name": "a",
                    "peer": "b",
                    "proto": "udp",
                    "private": list(CLIENT),
                    "stun": "00" * 12,
                    "wait": 1.0,
                }
            ),
            msgpack.packb(
                {
                    "ok": True,
                    "registrations": [registration.to_wire()],
                    "rendezvous": "r",
                    "role": "client",
                    "proto": "tcp",
                    "self": {"name": "a", "public": list(SERVER), "private": list(CLIENT)},
                    "peer": {"name": "b", "public": list(CLIENT), "private": list(SERVER)},
                }
            ),
        ],
        "http": [
            b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html;q=0.5, application/json;q=0.9, */*\r\n\r\n",
            b"HEAD /x HTTP/1.0\r\nAccept: text/*\r\n\r\n",
            b"POST / HTTP/1.1\r\n\r\n",
        ],
        "stun": [stun.pack_message(response, fingerprint=True), stun.pack_message(stun.binding_request())],
        "query": [pack_query(op, verdict=["snat"], last=2, since=1, flow="f") for op in QueryOp],
        "report": [msgpack.packb(Report((flow(),), {"bind": 1}, 1, 0, {"echo": 1}, {}).to_wire(), use_bin_type=True)],
    }
