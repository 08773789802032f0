"""The report, typed: flows, their ends, NAT checks and counts, one definition for every reader.

The collector builds a Report; the query protocol (shared.collector_protocol), `socklab report
--json` and the page's /report.json carry `Report.to_wire()`; the table, the page, the tests and
the pytest plugin read `Report.from_wire()`. Names on the wire are as shared.names.name_to_wire
writes them. The JSON keys are a contract: new keys may be added, none renamed or removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.fields import counts, finite, listed, member, number, optional, plain_map, require_map, typed
from shared.names import Name, name_from_wire, name_to_wire
from shared.nat import Behaviour
from shared.record import Family, Proto


class FlowVerdict(StrEnum):
    """What lay between the two ends of a flow."""

    DIRECT = "direct"
    SNAT = "snat"
    DNAT = "dnat"
    PROXIED = "proxied"
    HAIRPIN = "hairpin"
    TWO_NATS = "two-nats"
    UNMATCHED = "unmatched"
    SERVER_ONLY = "server-only"  # the client is not socklab's (nc, curl, ...): only the server's view exists


EVIDENCE_VALUES = (str, int, float, bool)
ANY_CLIENT = "any"  # evidence["client"] of a flow whose client is not socklab's: the flow is server-only


def check_evidence(obj: Any, what: str) -> dict[str, Any]:
    """A flat map of what a server saw beyond names (a client that is not socklab's, datagram counts): names to words
    or finite numbers."""
    evidence = require_map(obj, what)
    for key, value in evidence.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, EVIDENCE_VALUES)):
            raise ValueError(f"{what} must map names to strings, numbers or nil, not {key!r}: {value!r}")
        if isinstance(value, float):
            finite(value, f"{what} {key!r}")
    return dict(evidence)


@dataclass(frozen=True)
class FlowEnd:
    """One end of a flow as its own records tell it."""

    service: str
    host: str
    family: Family
    sockname: Name | None
    peername: Name | None
    node: str = ""

    def to_wire(self) -> dict[str, Any]:
        """The end as the report carries it."""
        return {
            "service": self.service,
            "host": self.host,
            "family": str(self.family),
            "sockname": name_to_wire(self.sockname),
            "peername": name_to_wire(self.peername),
            "node": self.node,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> FlowEnd:
        """Check and read an end."""
        end = require_map(obj, "flow end")
        return cls(
            service=typed(end, "service", str, "flow end"),
            host=typed(end, "host", str, "flow end"),
            family=member(end, "family", Family, "flow end"),
            sockname=name_from_wire(end.get("sockname")),
            peername=name_from_wire(end.get("peername")),
            node=optional(end, "node", str, "flow end") or "",
        )


class HopKind(StrEnum):
    """What a rewriter did to a flow's names."""

    SNAT = "snat"
    DNAT = "dnat"
    PROXY = "proxy"
    HAIRPIN = "hairpin"


@dataclass(frozen=True)
class Hop:
    """One rewrite between the ends: who did it, by which rule, the name before and after, and the evidence."""

    by: str
    kind: HopKind
    rule: str
    before: Name
    after: Name
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The hop as a flow's "path" carries it."""
        return {
            "by": self.by,
            "kind": str(self.kind),
            "rule": self.rule,
            "before": name_to_wire(self.before),
            "after": name_to_wire(self.after),
            "evidence": self.evidence,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Hop:
        """Check and read a hop."""
        hop = require_map(obj, "hop")
        before, after = name_from_wire(hop.get("before")), name_from_wire(hop.get("after"))
        if before is None or after is None:
            raise ValueError("hop 'before' and 'after' must be names")
        return cls(
            by=typed(hop, "by", str, "hop"),
            kind=member(hop, "kind", HopKind, "hop"),
            rule=typed(hop, "rule", str, "hop"),
            before=before,
            after=after,
            evidence=plain_map(hop, "evidence", "hop"),
        )


@dataclass(frozen=True)
class Answer:
    """A datagram flow's answer, apart from the request's path: where it came from, and whether it arrived."""

    source: Name | None
    arrived: bool

    def to_wire(self) -> dict[str, Any]:
        """The answer as a flow carries it."""
        return {"from": name_to_wire(self.source), "arrived": self.arrived}

    @classmethod
    def from_wire(cls, obj: Any) -> Answer:
        """Check and read an answer."""
        answer = require_map(obj, "answer")
        return cls(source=name_from_wire(answer.get("from")), arrived=typed(answer, "arrived", bool, "answer"))


@dataclass(frozen=True)
class Flow:
    """Both ends of one flow, the verdict on what lay between them, and who rewrote what on the way."""

    flow: str
    proto: Proto
    family: Family
    scenario: str | None
    client: FlowEnd | None
    server: FlowEnd | None
    verdict: FlowVerdict
    port_preserved: bool | None
    path: tuple[Hop, ...] = ()
    answer: Answer | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Both ends joined and the client's closing record (the one naming its scenario) is in."""
        return self.verdict != FlowVerdict.UNMATCHED and self.scenario is not None

    def to_wire(self) -> dict[str, Any]:
        """The flow as the report carries it."""
        return {
            "flow": self.flow,
            "proto": str(self.proto),
            "family": str(self.family),
            "scenario": self.scenario,
            "client": self.client.to_wire() if self.client else None,
            "server": self.server.to_wire() if self.server else None,
            "verdict": str(self.verdict),
            "port_preserved": self.port_preserved,
            "path": [hop.to_wire() for hop in self.path],
            "answer": self.answer.to_wire() if self.answer else None,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Flow:
        """Check and read a flow (one without "path" or "answer", from before they existed, has none)."""
        flow = require_map(obj, "flow")
        path = listed(flow, "path", "flow")
        return cls(
            flow=typed(flow, "flow", str, "flow"),
            proto=member(flow, "proto", Proto, "flow"),
            family=member(flow, "family", Family, "flow"),
            scenario=optional(flow, "scenario", str, "flow"),
            client=FlowEnd.from_wire(flow["client"]) if flow.get("client") is not None else None,
            server=FlowEnd.from_wire(flow["server"]) if flow.get("server") is not None else None,
            verdict=member(flow, "verdict", FlowVerdict, "flow"),
            port_preserved=optional(flow, "port_preserved", bool, "flow"),
            path=tuple(Hop.from_wire(hop) for hop in path),
            answer=Answer.from_wire(flow["answer"]) if flow.get("answer") is not None else None,
            evidence=check_evidence(flow.get("evidence", {}), "flow evidence"),
        )


Address = tuple[str, int]


def _address(obj: Any, what: str) -> Address:
    if (
        not isinstance(obj, list | tuple)
        or len(obj) != 2
        or not isinstance(obj[0], str)
        or not isinstance(obj[1], int)
        or isinstance(obj[1], bool)
        or not 0 <= obj[1] <= 65535
    ):
        raise ValueError(f"{what} must be [host, port], not {obj!r}")
    return (obj[0], obj[1])


def _optional_address(obj: Any, what: str) -> Address | None:
    return None if obj is None else _address(obj, what)


def _address_to_wire(address: Address | None) -> list[Any] | None:
    return list(address) if address is not None else None


@dataclass(frozen=True)
class StunTransaction:
    """One RFC 5780 test as natcheck's client saw it: where it sent, and what came back from where."""

    name: str
    local: Address
    destination: Address
    mapped: Address | None = None
    source: Address | None = None
    response_origin: Address | None = None
    other_address: Address | None = None
    error: tuple[int, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The transaction as natcheck's JSON and the report carry it."""
        return {
            "name": self.name,
            "local": _address_to_wire(self.local),
            "destination": _address_to_wire(self.destination),
            "mapped": _address_to_wire(self.mapped),
            "source": _address_to_wire(self.source),
            "response_origin": _address_to_wire(self.response_origin),
            "other_address": _address_to_wire(self.other_address),
            "error": list(self.error) if self.error is not None else None,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> StunTransaction:
        """Check and read a transaction."""
        test = require_map(obj, "natcheck test")
        error = test.get("error")
        if error is not None and not (
            isinstance(error, list | tuple)
            and len(error) == 2
            and isinstance(error[0], int)
            and not isinstance(error[0], bool)
            and isinstance(error[1], str)
        ):
            raise ValueError(f"natcheck test error must be [code, reason], not {error!r}")
        return cls(
            name=typed(test, "name", str, "natcheck test"),
            local=_address(test.get("local"), "natcheck test local"),
            destination=_address(test.get("destination"), "natcheck test destination"),
            mapped=_optional_address(test.get("mapped"), "natcheck test mapped"),
            source=_optional_address(test.get("source"), "natcheck test source"),
            response_origin=_optional_address(test.get("response_origin"), "natcheck test response_origin"),
            other_address=_optional_address(test.get("other_address"), "natcheck test other_address"),
            error=(error[0], error[1]) if error is not None else None,
        )


@dataclass(frozen=True)
class LifetimeProbe:
    """One fresh mapping left idle, then asked for (RFC 5780 section 4.6): did the answer still get in?"""

    idle: float
    local: Address
    mapped: Address
    alive: bool

    def to_wire(self) -> dict[str, Any]:
        """The probe as natcheck's JSON carries it."""
        return {"idle": self.idle, "local": list(self.local), "mapped": list(self.mapped), "alive": self.alive}

    @classmethod
    def from_wire(cls, obj: Any) -> LifetimeProbe:
        """Check and read a probe."""
        probe = require_map(obj, "lifetime probe")
        return cls(
            idle=number(probe, "idle", "lifetime probe"),
            local=_address(probe.get("local"), "lifetime probe local"),
            mapped=_address(probe.get("mapped"), "lifetime probe mapped"),
            alive=typed(probe, "alive", bool, "lifetime probe"),
        )


@dataclass(frozen=True)
class MappingLifetime:
    """How long an idle UDP mapping lived (RFC 4787 REQ-5): the longest idle one survived, the shortest it did not."""

    survived: float
    expired: float | None
    probes: tuple[LifetimeProbe, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        """natcheck's added keys: the lifetime in seconds (nil: it outlived the search's bound), and the evidence."""
        return {
            "mapping_lifetime": self.expired,
            "mapping_lifetime_survived": self.survived,
            "mapping_lifetime_probes": [probe.to_wire() for probe in self.probes],
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> MappingLifetime | None:
        """Read natcheck's lifetime keys; None when it was not measured."""
        if obj.get("mapping_lifetime_survived") is None:
            return None
        probes = listed(obj, "mapping_lifetime_probes", "natcheck")
        expired = None if obj.get("mapping_lifetime") is None else number(obj, "mapping_lifetime", "natcheck")
        return cls(
            survived=number(obj, "mapping_lifetime_survived", "natcheck"),
            expired=expired,
            probes=tuple(LifetimeProbe.from_wire(probe) for probe in probes),
        )


@dataclass(frozen=True)
class NatCheckResult:
    """What RFC 5780's tests found about the NAT in front of one host (natcheck's summary)."""

    mapping: Behaviour
    filtering: Behaviour
    port_preserved: bool
    hairpin: bool
    mapped_address: Address
    local_address: Address
    server: Address
    other_address: Address | None
    tests: tuple[StunTransaction, ...] = ()
    lifetime: MappingLifetime | None = None

    def to_wire(self) -> dict[str, Any]:
        """The summary as `socklab natcheck --json` prints it and its record's extra carries it."""
        lifetime = self.lifetime.to_wire() if self.lifetime else {}
        return {
            "mapping": str(self.mapping),
            "filtering": str(self.filtering),
            "port_preserved": self.port_preserved,
            "hairpin": self.hairpin,
            "mapped_address": _address_to_wire(self.mapped_address),
            "local_address": _address_to_wire(self.local_address),
            "server": _address_to_wire(self.server),
            "other_address": _address_to_wire(self.other_address),
            "tests": [test.to_wire() for test in self.tests],
            **lifetime,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> NatCheckResult:
        """Check and read a summary; anything malformed raises ValueError."""
        result = require_map(obj, "natcheck")
        tests = listed(result, "tests", "natcheck")
        return cls(
            mapping=member(result, "mapping", Behaviour, "natcheck"),
            filtering=member(result, "filtering", Behaviour, "natcheck"),
            port_preserved=typed(result, "port_preserved", bool, "natcheck"),
            hairpin=typed(result, "hairpin", bool, "natcheck"),
            mapped_address=_address(result.get("mapped_address"), "natcheck mapped_address"),
            local_address=_address(result.get("local_address"), "natcheck local_address"),
            server=_address(result.get("server"), "natcheck server"),
            other_address=_optional_address(result.get("other_address"), "natcheck other_address"),
            tests=tuple(StunTransaction.from_wire(test) for test in tests),
            lifetime=MappingLifetime.from_wire(result),
        )


@dataclass(frozen=True)
class NatCheck:
    """A natcheck result as the collector holds it: who ran it, where and when."""

    service: str
    host: str
    time: float
    result: NatCheckResult

    def to_wire(self) -> dict[str, Any]:
        """One entry of the report's natchecks: the summary's keys beside service, host and time."""
        return {"service": self.service, "host": self.host, "time": self.time, **self.result.to_wire()}

    @classmethod
    def from_wire(cls, obj: Any) -> NatCheck:
        """Check and read a report's natcheck entry."""
        check = require_map(obj, "natcheck")
        return cls(
            service=typed(check, "service", str, "natcheck"),
            host=typed(check, "host", str, "natcheck"),
            time=number(check, "time", "natcheck"),
            result=NatCheckResult.from_wire(check),
        )


@dataclass(frozen=True)
class LostRange:
    """Records a reporter dropped because its window was full: its service, its id (a prefix), which numbers."""

    service: str
    reporter: str
    first: int
    last: int

    def to_wire(self) -> dict[str, Any]:
        """The range as the report carries it."""
        return {"service": self.service, "reporter": self.reporter, "first": self.first, "last": self.last}

    @classmethod
    def from_wire(cls, obj: Any) -> LostRange:
        """Check and read a lost range."""
        lost = require_map(obj, "lost range")
        return cls(
            service=typed(lost, "service", str, "lost range"),
            reporter=typed(lost, "reporter", str, "lost range"),
            first=typed(lost, "first", int, "lost range"),
            last=typed(lost, "last", int, "lost range"),
        )


@dataclass(frozen=True)
class Report:
    """Everything a reader needs: joined flows, NAT checks, and the counts that say nothing was lost or forged.

    `refused` counts the handshakes the collector refused, by reason (shared.curve): records never let in.
    """

    flows: tuple[Flow, ...] = ()
    methods: dict[str, int] = field(default_factory=dict)
    records: int = 0
    rejected: int = 0
    service_rejects: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    natchecks: tuple[NatCheck, ...] = ()
    lost: dict[str, int] = field(default_factory=dict)
    gaps: tuple[LostRange, ...] = ()
    missing: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def flow(self, flow_id: str) -> Flow | None:
        """The flow with this id, if the report holds it."""
        return next((flow for flow in self.flows if flow.flow == flow_id), None)

    def to_wire(self) -> dict[str, Any]:
        """The report as the query reply, `socklab report --json` and /report.json carry it."""
        return {
            "flows": [flow.to_wire() for flow in self.flows],
            "methods": dict(self.methods),
            "records": self.records,
            "rejected": self.rejected,
            "service_rejects": dict(self.service_rejects),
            "drops": dict(self.drops),
            "natchecks": [check.to_wire() for check in self.natchecks],
            "lost": dict(self.lost),
            "gaps": [gap.to_wire() for gap in self.gaps],
            "missing": dict(self.missing),
            "duplicates": self.duplicates,
            "refused": dict(self.refused),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Report:
        """Check and read a report (extra keys, such as a reply's "ok", are ignored)."""
        report = require_map(obj, "report")
        flows, natchecks, gaps = report.get("flows", []), report.get("natchecks", []), report.get("gaps", [])
        if not isinstance(flows, list) or not isinstance(natchecks, list) or not isinstance(gaps, list):
            raise ValueError("report 'flows', 'natchecks' and 'gaps' must be lists")
        return cls(
            flows=tuple(Flow.from_wire(flow) for flow in flows),
            methods=counts(report.get("methods", {}), "report 'methods'"),
            records=typed(report, "records", int, "report"),
            rejected=typed(report, "rejected", int, "report"),
            service_rejects=counts(report.get("service_rejects", {}), "report 'service_rejects'"),
            drops=counts(report.get("drops", {}), "report 'drops'"),
            natchecks=tuple(NatCheck.from_wire(check) for check in natchecks),
            lost=counts(report.get("lost", {}), "report 'lost'"),
            gaps=tuple(LostRange.from_wire(gap) for gap in gaps),
            missing=counts(report.get("missing", {}), "report 'missing'"),
            duplicates=typed(report, "duplicates", int, "report") if "duplicates" in report else 0,
            refused=counts(report.get("refused", {}), "report 'refused'"),
        )
