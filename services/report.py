"""socklab report: ask the collector for the joined flows and print them as a table or JSON."""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from typing import Any

import zmq

from shared.collector_protocol import query_collector
from shared.config import load_config
from shared.names import format_name, json_name, name_from_wire


def show(name: Any) -> str:
    """Format a name as it came over the wire."""
    return format_name(name_from_wire(name))


def describe_verdict(flow: dict[str, Any]) -> str:
    """A verdict in words, with the port's fate where a source was translated."""
    verdict = str(flow["verdict"])
    if verdict in ("snat", "proxied") and flow["port_preserved"] is not None:
        verdict += ", port kept" if flow["port_preserved"] else ", port changed"
    return verdict


def format_table(report: dict[str, Any]) -> str:
    """The report for a terminal: each flow's two views side by side, then the counts."""
    rows = [("scenario", "client -> server", "client sees: me -> peer", "server sees: peer -> me", "verdict")]
    for flow in report["flows"]:
        client, server = flow["client"] or {}, flow["server"] or {}
        mine = f"{show(client.get('sockname'))} -> {show(client.get('peername'))}" if client else "-"
        theirs = f"{show(server.get('peername'))} -> {show(server.get('sockname'))}" if server else "-"
        who = f"{client.get('service', '?')} -> {server.get('service', '?')}"
        rows.append((flow["scenario"] or flow["proto"], who, mine, theirs, describe_verdict(flow)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4] for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    methods = ", ".join(f"{m} {n}" for m, n in sorted(report["methods"].items()))
    lines.append("")
    lines.append(f"records {report['records']}, rejected {report['rejected']}; by method: {methods}")
    lines.extend(format_natchecks(report.get("natchecks", [])))
    if report.get("service_rejects"):
        lines.append("rejected by services: " + ", ".join(f"{s} {n}" for s, n in report["service_rejects"].items()))
    return "\n".join(lines)


def format_natchecks(checks: list[dict[str, Any]]) -> list[str]:
    """The newest NAT check of each service, a line apiece, so a rerun replaces what it found before."""
    newest = {check["service"]: check for check in checks}
    rows = [("service", "mapping", "filtering", "port", "hairpin", "mapped address")]
    for service, check in newest.items():
        port = "kept" if check["port_preserved"] else "changed"
        hairpin, mapped = "yes" if check["hairpin"] else "no", show(check["mapped_address"])
        rows.append((service, check["mapping"], check["filtering"], port, hairpin, mapped))
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    table = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return ["", "NAT check", *table] if newest else []


PAGE_STYLE = (
    "body{font:14px monospace;margin:1em}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;text-align:left;white-space:nowrap}"
    "tr:nth-child(even){background:#f4f4f4}.direct{color:#070}.snat,.dnat{color:#a50}.proxied{color:#a0a}"
    ".unmatched{color:#999}"
)


def render_page(report: dict[str, Any], refresh: int = 2) -> str:
    """The report as a page that reloads itself: every name from the records is escaped."""
    rows = []
    for flow in report["flows"]:
        client, server = flow["client"] or {}, flow["server"] or {}
        cells = [
            flow["scenario"] or flow["proto"],
            f"{client.get('service', '?')} -> {server.get('service', '?')}",
            f"{show(client.get('sockname'))} -> {show(client.get('peername'))}" if client else "-",
            f"{show(server.get('peername'))} -> {show(server.get('sockname'))}" if server else "-",
        ]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        verdict = html.escape(describe_verdict(flow))
        rows.append(f'<tr>{tds}<td class="{html.escape(flow["verdict"])}">{verdict}</td></tr>')
    checks = "".join(
        f"<li>{html.escape(c['service'])}: {html.escape(c['mapping'])} mapping, {html.escape(c['filtering'])} "
        f"filtering, mapped to {html.escape(show(c['mapped_address']))}</li>"
        for c in report.get("natchecks", [])
    )
    head = "".join(f"<th>{h}</th>" for h in ("scenario", "client -> server", "client sees", "server sees", "verdict"))
    return (
        f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">'
        f"<title>socklab</title><style>{PAGE_STYLE}</style><h1>socklab: both ends of every flow</h1>"
        f"<p>{report['records']} records, {report['rejected']} rejected</p>"
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
                report = query_collector(context, args.query, {"op": "report"})
                break
            except TimeoutError as exc:
                if time.monotonic() > deadline:
                    sys.exit(str(exc))
    finally:
        context.term()
    report.pop("ok")
    print(json.dumps(report, indent=2, default=json_name) if args.json else format_table(report))
