"""The typed report: every part survives msgpack and JSON byte for byte, and every malformed part is refused."""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack
import pytest

from shared.record import Family, Proto
from shared.report_model import (
    Flow,
    FlowEnd,
    FlowVerdict,
    NatCheck,
    NatCheckResult,
    Report,
    StunTransaction,
)
from tests.helpers import NATCHECK_RESULT as RESULT
from tests.helpers import STUN_TRANSACTIONS as TRANSACTIONS

pytestmark = pytest.mark.unit

CLIENT = FlowEnd("client-lan", "lan", Family.IPV6, ("fd00:50::20", 44176, 0, 0), ("2001:db8:100::3", 5300, 0, 0))
SERVER = FlowEnd("registry", "reg", Family.IPV6, ("2001:db8:100::3", 5300, 0, 0), ("2001:db8:100::2", 44176, 0, 0))
UNIX = FlowEnd("client-wan", "wan", Family.UNIX, "", "/run/socklab/echo.sock")
REPORT = Report(
    flows=(
        Flow("a1", Proto.TCP, Family.IPV6, "registry-lookup", CLIENT, SERVER, FlowVerdict.SNAT, True),
        Flow("u1", Proto.UNIX, Family.UNIX, "unix", UNIX, None, FlowVerdict.UNMATCHED, None),
        Flow("s1", Proto.UDP, Family.IPV6, None, None, SERVER, FlowVerdict.UNMATCHED, None),
    ),
    methods={"accept": 18, "getsockname": 44},
    records=62,
    rejected=1,
    service_rejects={"echo": 5},
    drops={"echo": 0, "client-lan": 3},
    natchecks=(
        NatCheck("client-lan", "lan", 1700000000.25, RESULT),
        NatCheck("client-wan", "wan", 1700000002.0, RESULT),
    ),
)
PARTS: list[Any] = [CLIENT, UNIX, *REPORT.flows, *TRANSACTIONS, RESULT, *REPORT.natchecks, REPORT, Report()]


@pytest.mark.parametrize("part", PARTS, ids=lambda p: type(p).__name__)
def test_every_part_round_trips_msgpack_byte_for_byte(part: Any) -> None:
    data = msgpack.packb(part.to_wire(), use_bin_type=True)
    again = type(part).from_wire(msgpack.unpackb(data, raw=False))
    assert again == part
    assert msgpack.packb(again.to_wire(), use_bin_type=True) == data


@pytest.mark.parametrize("part", PARTS, ids=lambda p: type(p).__name__)
def test_every_part_round_trips_json_byte_for_byte(part: Any) -> None:
    text = json.dumps(part.to_wire())
    again = type(part).from_wire(json.loads(text))
    assert again == part
    assert json.dumps(again.to_wire()) == text


def test_report_keys_are_the_contract() -> None:
    wire = REPORT.to_wire()
    assert list(wire) == [
        "flows",
        "methods",
        "records",
        "rejected",
        "service_rejects",
        "drops",
        "natchecks",
        "lost",
        "gaps",
        "missing",
        "duplicates",
        "refused",
    ]
    assert list(wire["flows"][0]) == [
        *(
            "flow",
            "proto",
            "family",
            "scenario",
            "client",
            "server",
            "verdict",
            "port_preserved",
            "path",
            "answer",
            "evidence",
        )
    ]
    assert list(wire["flows"][0]["client"]) == ["service", "host", "family", "sockname", "peername", "node"]
    assert wire["flows"][0]["client"]["sockname"] == ["fd00:50::20", 44176, 0, 0]
    natcheck = wire["natchecks"][0]
    assert list(natcheck)[:3] == ["service", "host", "time"] and natcheck["mapping"] == "endpoint-independent"
    assert list(natcheck["tests"][2]) == [
        *("name", "local", "destination", "mapped", "source", "response_origin", "other_address", "error")
    ]
    assert natcheck["tests"][2]["error"] == [420, "Unknown Attribute"]


def test_a_reply_s_extra_keys_are_ignored_and_the_report_finds_flows_by_id() -> None:
    report = Report.from_wire({"ok": True, "later": [1], **REPORT.to_wire()})
    assert report == REPORT
    assert report.flow("u1") == REPORT.flows[1]
    assert report.flow("nope") is None


def test_a_flow_is_complete_only_with_both_ends_judged_and_a_scenario() -> None:
    joined = REPORT.flows[0]
    assert joined.complete
    assert not Flow("x", Proto.TCP, Family.IPV4, None, CLIENT, SERVER, FlowVerdict.DIRECT, True).complete
    assert not REPORT.flows[1].complete, "one end only"


def wire(**changes: Any) -> dict[str, Any]:
    """REPORT's first flow on the wire with keys changed; a value of ... deletes the key."""
    flow = {**REPORT.flows[0].to_wire(), **changes}
    return {k: v for k, v in flow.items() if v is not ...}


@pytest.mark.parametrize(
    ("kind", "obj", "error"),
    [
        (Report, [], "report is a list, not a map"),
        (Report, {"flows": {}, "records": 0, "rejected": 0}, "report 'flows', 'natchecks' and 'gaps' must be lists"),
        (Report, {"flows": []}, "report has no 'records'"),
        (Report, {"records": True, "rejected": 0}, "report 'records' has type bool"),
        (
            Report,
            {"records": 1, "rejected": 0, "methods": {"accept": "1"}},
            "report 'methods' must map names to counts",
        ),
        (Report, {"records": 1, "rejected": 0, "drops": []}, "report 'drops' is a list, not a map"),
        (Flow, wire(flow=...), "flow has no 'flow'"),
        (Flow, wire(proto="sctp"), "flow proto 'sctp' is unknown"),
        (Flow, wire(family=4), "flow 'family' has type int"),
        (Flow, wire(verdict="nat"), "flow verdict 'nat' is unknown"),
        (Flow, wire(scenario=1), "flow 'scenario' has type int"),
        (Flow, wire(port_preserved=1), "flow 'port_preserved' has type int"),
        (Flow, wire(client="me"), "flow end is a str, not a map"),
        (Flow, wire(client={**CLIENT.to_wire(), "family": "ipx"}), "flow end family 'ipx' is unknown"),
        (Flow, wire(server={**SERVER.to_wire(), "sockname": ["::1", 1, 0]}), "name must have 2 or 4 items"),
        (FlowEnd, {**CLIENT.to_wire(), "service": None}, "flow end 'service' has type NoneType"),
        (NatCheck, {**REPORT.natchecks[0].to_wire(), "time": "now"}, "natcheck 'time' has type str"),
        (NatCheck, {**REPORT.natchecks[0].to_wire(), "time": float("nan")}, "natcheck 'time' nan is not finite"),
        (
            NatCheckResult,
            {**RESULT.to_wire(), "mapping_lifetime_survived": float("inf")},
            "natcheck 'mapping_lifetime_survived' inf is not finite",
        ),
        (NatCheckResult, {**RESULT.to_wire(), "mapping": "full-cone"}, "natcheck mapping 'full-cone' is unknown"),
        (NatCheckResult, {**RESULT.to_wire(), "port_preserved": None}, "natcheck 'port_preserved' has type NoneType"),
        (NatCheckResult, {**RESULT.to_wire(), "server": ["h", 70000]}, "natcheck server must be [host, port]"),
        (NatCheckResult, {**RESULT.to_wire(), "other_address": "h:1"}, "natcheck other_address must be [host, port]"),
        (NatCheckResult, {**RESULT.to_wire(), "tests": {}}, "natcheck 'tests' must be a list"),
        (StunTransaction, {**TRANSACTIONS[2].to_wire(), "error": [True, "x"]}, "natcheck test error must be [code,"),
        (StunTransaction, {**TRANSACTIONS[2].to_wire(), "local": None}, "natcheck test local must be [host, port]"),
        (StunTransaction, {**TRANSACTIONS[0].to_wire(), "mapped": ["h", "1"]}, "natcheck test mapped must be [host,"),
    ],
)
def test_malformed_parts_are_refused_saying_what_is_wrong(kind: Any, obj: Any, error: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(error)}"):
        kind.from_wire(obj)
