"""socklab report: ask the collector for the joined flows and print them as a table or JSON."""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections.abc import Iterable

import zmq

from shared.collector_protocol import query_collector
from shared.config import load_config
from shared.names import format_name, json_name
from shared.report_model import Flow, FlowVerdict, NatCheck, Report


def describe_verdict(flow: Flow) -> str:
    """A verdict in words, with the port's fate where a source was translated."""
    verdict = str(flow.verdict)
    if flow.verdict in (FlowVerdict.SNAT, FlowVerdict.PROXIED) and flow.port_preserved is not None:
        verdict += ", port kept" if flow.port_preserved else ", port changed"
    return verdict


def flow_cells(flow: Flow) -> tuple[str, str, str, str]:
    """A flow's scenario, who spoke to whom, and each end's view, as the table and the page show them."""
    client, server = flow.client, flow.server
    return (
        flow.scenario or str(flow.proto),
        f"{client.service if client else '?'} -> {server.service if server else '?'}",
        f"{format_name(client.sockname)} -> {format_name(client.peername)}" if client else "-",
        f"{format_name(server.peername)} -> {format_name(server.sockname)}" if server else "-",
    )


def format_table(report: Report) -> str:
    """The report for a terminal: each flow's two views side by side, then the counts."""
    rows = [("scenario", "client -> server", "client sees: me -> peer", "server sees: peer -> me", "verdict")]
    rows += [(*flow_cells(flow), describe_verdict(flow)) for flow in report.flows]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4] for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    methods = ", ".join(f"{m} {n}" for m, n in sorted(report.methods.items()))
    lines.append("")
    lines.append(f"records {report.records}, rejected {report.rejected}; by method: {methods}")
    lines.extend(format_natchecks(report.natchecks))
    if report.service_rejects:
        lines.append("rejected by services: " + ", ".join(f"{s} {n}" for s, n in report.service_rejects.items()))
    return "\n".join(lines)


def format_natchecks(checks: Iterable[NatCheck]) -> list[str]:
    """The newest NAT check of each service, a line apiece, so a rerun replaces what it found before."""
    newest = {check.service: check.result for check in checks}
    rows = [("service", "mapping", "filtering", "port", "hairpin", "mapped address")]
    for service, result in newest.items():
        port = "kept" if result.port_preserved else "changed"
        hairpin, mapped = "yes" if result.hairpin else "no", format_name(result.mapped_address)
        rows.append((service, str(result.mapping), str(result.filtering), port, hairpin, mapped))
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    table = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return ["", "NAT check", *table] if newest else []


PAGE_STYLE = (
    "body{font:14px monospace;margin:1em}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;text-align:left;white-space:nowrap}"
    "tr:nth-child(even){background:#f4f4f4}.direct{color:#070}.snat,.dnat{color:#a50}.proxied{color:#a0a}"
    ".unmatched{color:#999}"
)


def render_page(report: Report, refresh: int = 2) -> str:
    """The report as a page that reloads itself: every name from the records is escaped."""
    rows = []
    for flow in report.flows:
        tds = "".join(f"<td>{html.escape(cell)}</td>" for cell in flow_cells(flow))
        verdict = html.escape(describe_verdict(flow))
        rows.append(f'<tr>{tds}<td class="{flow.verdict}">{verdict}</td></tr>')
    checks = "".join(
        f"<li>{html.escape(c.service)}: {c.result.mapping} mapping, {c.result.filtering} "
        f"filtering, mapped to {html.escape(format_name(c.result.mapped_address))}</li>"
        for c in report.natchecks
    )
    head = "".join(f"<th>{h}</th>" for h in ("scenario", "client -> server", "client sees", "server sees", "verdict"))
    return (
        f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">'
        f"<title>socklab</title><style>{PAGE_STYLE}</style><h1>socklab: both ends of every flow</h1>"
        f"<p>{report.records} records, {report.rejected} rejected</p>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table><ul>{checks}</ul>"
    )


def main(argv: list[str] | None = None) -> None:
    """Print the collector's report."""
    cfg = load_config("report")
    parser = argparse.ArgumentParser(prog="socklab report", description=main.__doc__)
    parser.add_argument("--json", action="store_true", help="JSON for machines")
    parser.add_argument("--query", default=cfg.query, help="collector's REP endpoint")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the collector")
    args = parser.parse_args(argv)
    context = zmq.Context()
    deadline = time.monotonic() + args.wait
    try:
        while True:
            try:
                reply = query_collector(context, args.query, {"op": "report"})
                break
            except TimeoutError as exc:
                if time.monotonic() > deadline:
                    sys.exit(str(exc))
    finally:
        context.term()
    try:
        report = Report.from_wire(reply)
    except ValueError as exc:
        sys.exit(f"report: the collector's reply is malformed: {exc}")
    print(json.dumps(report.to_wire(), indent=2, default=json_name) if args.json else format_table(report))
