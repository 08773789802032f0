"""socklab explain FLOW...: a flow's path as lines a person reads, from the collector's evidence.

Who the client thought it talked to, each hop (who rewrote what into what, by which rule, with the
conntrack id and times or Docker's binding), what the server saw, and the answer's fate. A unique
prefix of a flow id will do. Exit status: 0 all explained, 1 a flow unknown (or no collector), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import zmq

from shared.collector_protocol import QueryOp, query_collector
from shared.config import load_config
from shared.names import Name, dumps_json, format_name, printable
from shared.report_model import Flow, FlowVerdict, Hop, HopKind

VERBS = {
    HopKind.SNAT: "rewrote the source",
    HopKind.DNAT: "rewrote the destination",
    HopKind.HAIRPIN: "turned the destination back into the LAN,",
    HopKind.PROXY: "received the flow",
}


def clock(moment: Any) -> str:
    """A record's Unix time as a UTC time of day to the millisecond, or '-' when unknown."""
    if not isinstance(moment, int | float):
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def format_tuple(tup: Any) -> str:
    """A conntrack tuple from a hop's evidence as src:sport -> dst:dport."""
    if not isinstance(tup, dict):
        return "-"
    return f"{format_name((tup.get('src'), tup.get('sport')))} -> {format_name((tup.get('dst'), tup.get('dport')))}"


def format_hop(number: int, hop: Hop) -> list[str]:
    """One hop: who rewrote what into what, by which rule, and the evidence that says so."""
    change = f"{format_name(hop.before)} into {format_name(hop.after)}"
    if hop.kind == HopKind.PROXY:
        change = f"at {format_name(hop.before)} and sent it on from its own socket {format_name(hop.after)}"
    lines = [
        f"  {number}. {hop.by} {VERBS.get(hop.kind, str(hop.kind))} {change} ({hop.kind})",
        f"       rule: {hop.rule}",
    ]
    evidence = hop.evidence
    if "conntrack_id" in evidence:
        setup = ", ".join(
            f"{key} {evidence[key] if not isinstance(evidence[key], bool) else ('on' if evidence[key] else 'off')}"
            for key in ("mode", "filtering", "hairpin")
            if key in evidence
        )
        lines.append(
            f"       conntrack id {evidence['conntrack_id']} on {evidence.get('router', '?')}: "
            f"made {clock(evidence.get('new'))}, destroyed {clock(evidence.get('destroy'))}"
        )
        lines.append(f"       original {format_tuple(evidence.get('original'))}")
        lines.append(f"       reply    {format_tuple(evidence.get('reply'))}")
        if setup:
            lines.append(f"       router setup: {setup}")
    if "container" in evidence:
        target = evidence.get("target") or ["?", "?"]
        lines.append(
            f"       Docker: {evidence['container']} at {format_name(tuple(target))} on {evidence.get('network')}, "
            f"gateway {evidence.get('gateway')}; proxy pid {evidence.get('proxy_pid') or '-'}; "
            f"reported by {evidence.get('reported_by')} at {clock(evidence.get('reported_at'))}"
        )
    return lines


def view(name: Name | None) -> str:
    """A name, or a note that this end did not say it."""
    return format_name(name) if name is not None else "(not reported)"


def format_explanation(flow: Flow) -> str:
    """The flow's story, client to server."""
    client, server = flow.client, flow.server
    who = f"{client.service if client else '?'} -> {server.service if server else '?'}"
    port = "" if flow.port_preserved is None else (", port kept" if flow.port_preserved else ", port changed")
    lines = [f"flow {flow.flow}  {flow.scenario or flow.proto}  {who}  {flow.verdict}{port}"]
    if client:
        lines.append(
            f"  the client ({client.service} on {client.host}) spoke from {view(client.sockname)} "
            f"to {view(client.peername)}"
        )
    else:
        lines.append("  the client did not report (a server-only flow: any client is welcome)")
    for number, hop in enumerate(flow.path, 1):
        lines.extend(format_hop(number, hop))
    if not flow.path:
        nothing = "nothing rewrote it: both ends agree" if flow.verdict == FlowVerdict.DIRECT else None
        lines.append(f"  {nothing or 'no rewriter found: no conntrack event or Docker binding matches both names'}")
    if server:
        lines.append(
            f"  the server ({server.service} on {server.host}) saw it come from {view(server.peername)} "
            f"at {view(server.sockname)}"
        )
    else:
        lines.append("  the server did not report")
    if flow.answer is not None:
        source = format_name(flow.answer.source) if flow.answer.source is not None else "(source not reported)"
        lines.append(f"  the answer came from {source} and {'arrived' if flow.answer.arrived else 'did not arrive'}")
    return "\n".join(printable(line) for line in lines)


def main(argv: list[str] | None = None) -> None:
    """Explain flows by id (or a unique prefix of one)."""
    cfg = load_config("explain")
    parser = argparse.ArgumentParser(prog="socklab explain", description=main.__doc__)
    parser.add_argument("flows", nargs="+", metavar="FLOW", help="flow id or a unique prefix of one")
    parser.add_argument("--json", action="store_true", help="the flows as the report carries them")
    parser.add_argument("--query", default=cfg.query, help="collector's REP endpoint")
    args = parser.parse_args(argv)
    context = zmq.Context()
    failed = False
    try:
        for wanted in args.flows:
            try:
                reply = query_collector(context, args.query, {"op": str(QueryOp.FLOW), "flow": wanted})
                flow = Flow.from_wire(reply.get("flow"))
            except (RuntimeError, TimeoutError, ValueError) as exc:
                print(f"explain: {wanted}: {exc}", file=sys.stderr)
                failed = True
                continue
            print(dumps_json(flow.to_wire()) if args.json else format_explanation(flow))
    finally:
        context.term()
    sys.exit(1 if failed else 0)
