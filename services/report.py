"""socklab report: the collector's joined flows as a table or JSON, filtered, or followed as they are joined.

The idiom is `hubble observe`'s: `-o table|wide|json|jsonl`, `--follow`, `--last N`, and filters
(--verdict, --service, --proto, --family, --scenario, --search) that the collector applies, so
--follow transfers only new flows. The table fits 120 columns; `-o wide` adds the flow id and both
ends' full views. `--json` is `-o json`: the whole report, as it has always been printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from typing import Any

import zmq

from shared.collector_protocol import FlowQuery, query_collector
from shared.config import load_config
from shared.names import dumps_json, format_name, printable
from shared.record import Family, Proto
from shared.report_model import Flow, FlowEnd, FlowVerdict, NatCheck, Report


def describe_verdict(flow: Flow) -> str:
    """A verdict in words, with the port's fate where a source was translated."""
    verdict = str(flow.verdict)
    if flow.verdict in (FlowVerdict.SNAT, FlowVerdict.PROXIED) and flow.port_preserved is not None:
        verdict += ", port kept" if flow.port_preserved else ", port changed"
    return verdict


def flow_cells(flow: Flow) -> tuple[str, str, str, str]:
    """A flow's scenario, who spoke to whom, and each end's view, as the wide table and the page show them."""
    client, server = flow.client, flow.server
    return (
        flow.scenario or str(flow.proto),
        f"{client.service if client else '?'} -> {server.service if server else '?'}",
        f"{format_name(client.sockname)} -> {format_name(client.peername)}" if client else "-",
        f"{format_name(server.peername)} -> {format_name(server.sockname)}" if server else "-",
    )


NARROW_HEADER = ("scenario", "client -> server", "source, client's view", "source, server's view", "verdict")
WIDE_HEADER = (
    "flow",
    "scenario",
    "client@node -> server@node",
    "client sees: me -> peer",
    "server sees: peer -> me",
    "verdict",
    "path",
)
# Widths for --follow, which prints rows before it has seen them all: the stack's longest cells.
NARROW_WIDTHS = (17, 22, 24, 27)
TABLE_COLUMNS = 120
WIDE_WIDTHS = (16, 17, 32, 52, 60, 21)


def narrow_cells(flow: Flow) -> tuple[str, ...]:
    """A row that fits 120 columns: where the client spoke from, and where the server saw it come from."""
    scenario, speakers, _, _ = flow_cells(flow)
    client = format_name(flow.client.sockname) if flow.client else "-"
    server = format_name(flow.server.peername) if flow.server else "-"
    return printable_cells((scenario, speakers, client, server, describe_verdict(flow)))


def speaker(end: FlowEnd | None) -> str:
    """Who spoke, and on which Docker node where the record said: echo@node2."""
    if end is None:
        return "?"
    return f"{end.service}@{end.node}" if end.node else end.service


def wide_cells(flow: Flow) -> tuple[str, ...]:
    """A row with the flow id, who spoke from which node, both ends' full views, and who rewrote what on the way."""
    path = ", ".join(f"{hop.by} {hop.kind}" for hop in flow.path) or "-"
    scenario, _, client, server = flow_cells(flow)
    speakers = f"{speaker(flow.client)} -> {speaker(flow.server)}"
    return printable_cells((flow.flow, scenario, speakers, client, server, describe_verdict(flow), path))


def printable_cells(cells: tuple[str, ...]) -> tuple[str, ...]:
    """Cells a terminal shows as text: a name holding an escape sequence or a newline cannot redraw the table."""
    return tuple(printable(cell) for cell in cells)


def fit(cell: str, width: int) -> str:
    """A cell padded to its column's width, or cut to it with an ellipsis."""
    return cell.ljust(width) if len(cell) <= width else cell[: width - 1] + "…"


def format_row(cells: tuple[str, ...], widths: tuple[int, ...], cut: int = 0) -> str:
    """Cells padded to their column's width, the first `cut` columns cut to it; the last column is never padded."""
    padded = [fit(c, w) if i < cut else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))]
    return "  ".join(padded) + "  " + cells[-1]


def narrow_widths(widths: tuple[int, ...], verdict: int) -> tuple[int, ...]:
    """Column widths that fit the table in TABLE_COLUMNS, taken from who spoke, then from the scenario, never names."""
    sizes = list(widths)
    excess = sum(sizes) + 2 * len(sizes) + verdict - TABLE_COLUMNS
    for column, least in ((1, 16), (0, 10)):
        take = max(0, min(excess, sizes[column] - least))
        sizes[column] -= take
        excess -= take
    return tuple(sizes)


def format_flows(flows: Iterable[Flow], wide: bool = False) -> list[str]:
    """The flows as table lines, a header and a rule first, each column as wide as its longest cell.

    The narrow table fits 120 columns: should the stack's names not fit, who spoke and the scenario
    are cut (-o wide has them whole); socket names and verdicts never are.
    """
    rows: list[tuple[str, ...]] = [WIDE_HEADER if wide else NARROW_HEADER]
    rows += [wide_cells(flow) if wide else narrow_cells(flow) for flow in flows]
    widths = tuple(max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1))
    if not wide:
        widths = narrow_widths(widths, max(len(row[-1]) for row in rows))
    lines = [format_row(row, widths, cut=0 if wide else 2) for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return lines


def format_table(report: Report, wide: bool = False) -> str:
    """The report for a terminal: a line per flow, then the counts and the newest NAT checks."""
    lines = format_flows(report.flows, wide)
    methods = printable(", ".join(f"{m} {n}" for m, n in sorted(report.methods.items())))
    lines.append("")
    lines.append(f"records {report.records}, rejected {report.rejected}; by method: {methods}")
    lines.extend(format_natchecks(report.natchecks))
    if report.service_rejects:
        rejects = ", ".join(f"{s} {n}" for s, n in report.service_rejects.items())
        lines.append("rejected by services: " + printable(rejects))
    lines.extend(printable(line) for line in format_losses(report))
    return "\n".join(lines)


def format_losses(report: Report) -> list[str]:
    """What reporters dropped (their window was full) or never delivered, so loss is never silent."""
    lines = []
    if report.lost:
        lines.append("LOST, reporter window full: " + ", ".join(f"{s} {n}" for s, n in sorted(report.lost.items())))
        lines.extend(f"  {g.service} ({g.reporter}) records {g.first}..{g.last}" for g in report.gaps[-10:])
    if report.missing:
        lines.append("missing, not yet resent: " + ", ".join(f"{s} {n}" for s, n in sorted(report.missing.items())))
    if report.duplicates:
        lines.append(f"duplicates dropped (resent after a lost ack): {report.duplicates}")
    if report.refused:
        lines.append("refused at the door (no stack key): " + ", ".join(f"{r} {n}" for r, n in report.refused.items()))
    return lines


def format_natchecks(checks: Iterable[NatCheck]) -> list[str]:
    """The newest NAT check of each service, a line apiece, so a rerun replaces what it found before."""
    newest = {check.service: check.result for check in checks}
    rows: list[tuple[str, ...]] = [("service", "mapping", "filtering", "port", "hairpin", "mapped address")]
    for service, result in newest.items():
        port = "kept" if result.port_preserved else "changed"
        hairpin, mapped = "yes" if result.hairpin else "no", format_name(result.mapped_address)
        rows.append(printable_cells((service, str(result.mapping), str(result.filtering), port, hairpin, mapped)))
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    table = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return ["", "NAT check", *table] if newest else []


OUTPUTS = ("table", "wide", "json", "jsonl")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: filters and output as `hubble observe` spells them."""
    cfg = load_config("report")
    parser = argparse.ArgumentParser(prog="socklab report", description=main.__doc__)
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table", help="table fits 120 columns; wide has all")
    parser.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")
    parser.add_argument("-f", "--follow", action="store_true", help="print flows as they are joined, until ^C")
    parser.add_argument("--last", type=int, metavar="N", help="only the newest N flows (with --follow: then follow)")
    parser.add_argument("--verdict", action="append", choices=[str(v) for v in FlowVerdict], help="repeatable")
    parser.add_argument("--service", action="append", help="either end's service; repeatable")
    parser.add_argument("--proto", action="append", choices=[str(p) for p in Proto], help="repeatable")
    parser.add_argument("--family", action="append", choices=[str(f) for f in Family], help="repeatable")
    parser.add_argument("--scenario", action="append", help="repeatable")
    parser.add_argument("--search", default="", help="text anywhere in a flow (names, services, flow id)")
    parser.add_argument("--query", default=cfg.query, help="collector's REP endpoint")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the collector")
    parser.add_argument("--interval", type=float, default=0.5, help="--follow: seconds between questions")
    args = parser.parse_args(argv)
    if args.last is not None and args.last < 0:
        parser.error("--last must not be negative")
    return args


def flow_query(args: argparse.Namespace) -> FlowQuery:
    """The filters the command line asked for, for the collector to apply."""
    return FlowQuery(
        verdict=tuple(args.verdict or ()),
        service=tuple(args.service or ()),
        proto=tuple(args.proto or ()),
        family=tuple(args.family or ()),
        scenario=tuple(args.scenario or ()),
        search=args.search,
        last=args.last,
    )


def ask(context: zmq.Context, endpoint: str, query: dict[str, Any], wait: float) -> dict[str, Any]:
    """One query, retried while the collector does not answer, for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return query_collector(context, endpoint, query)
        except TimeoutError as exc:
            if time.monotonic() > deadline:
                sys.exit(str(exc))


def print_report(reply: dict[str, Any], output: str) -> None:
    """Print a whole report once, in the chosen output."""
    try:
        report = Report.from_wire(reply)
    except ValueError as exc:
        sys.exit(f"report: the collector's reply is malformed: {exc}")
    if output == "json":
        print(dumps_json(report.to_wire(), indent=2))
    elif output == "jsonl":
        for flow in report.flows:
            print(dumps_json(flow.to_wire()))
    else:
        print(format_table(report, wide=output == "wide"))


class Follower:
    """Prints each flow once it is joined: at once when complete, else when it stopped changing for `settle` s."""

    def __init__(self, output: str, settle: float = 2.0) -> None:
        self.output = output
        self.settle = settle
        self.shown: dict[str, str] = {}
        self.pending: dict[str, tuple[Flow, float]] = {}

    def header(self) -> None:
        """A table's header, printed once before the first row."""
        if self.output in ("table", "wide"):
            wide = self.output == "wide"
            print(format_row(WIDE_HEADER if wide else NARROW_HEADER, WIDE_WIDTHS if wide else NARROW_WIDTHS))

    def show(self, flow: Flow) -> None:
        """Print a flow's line, unless the same verdict was printed for it before."""
        verdict = describe_verdict(flow)
        if self.shown.get(flow.flow) == verdict:
            return
        self.shown[flow.flow] = verdict
        if self.output in ("json", "jsonl"):
            print(dumps_json(flow.to_wire()), flush=True)
        elif self.output == "wide":
            print(format_row(wide_cells(flow), WIDE_WIDTHS), flush=True)
        else:
            print(format_row(narrow_cells(flow), NARROW_WIDTHS, cut=2), flush=True)

    def take(self, flows: Iterable[Flow], now: float) -> None:
        """Print complete flows now; hold the others until they settle."""
        for flow in flows:
            if flow.complete:
                self.pending.pop(flow.flow, None)
                self.show(flow)
            else:
                self.pending[flow.flow] = (flow, now)
        for flow_id, (flow, changed) in list(self.pending.items()):
            if now - changed >= self.settle:
                del self.pending[flow_id]
                self.show(flow)


def read_flows(reply: dict[str, Any]) -> tuple[int, list[Flow]]:
    """A "flows" reply's cursor and flows; a malformed reply ends the command with the reason."""
    try:
        cursor = reply["cursor"]
        if not isinstance(cursor, int):
            raise ValueError(f"cursor {cursor!r} is not a number")
        return cursor, [Flow.from_wire(flow) for flow in reply.get("flows", [])]
    except (KeyError, ValueError) as exc:
        sys.exit(f"report: the collector's reply is malformed: {exc}")


def follow(context: zmq.Context, args: argparse.Namespace, query: FlowQuery) -> None:
    """Print the newest --last flows, then every new or changed flow the filters pass, until interrupted."""
    follower = Follower(args.output)
    follower.header()
    first = {**query.to_wire(), "op": "flows", "since": 0, "last": query.last or 0}
    cursor, flows = read_flows(ask(context, args.query, first, args.wait))
    for flow in flows:
        follower.show(flow)
    filters = {**query.to_wire(), "op": "flows"}
    filters.pop("last", None)
    while True:
        time.sleep(args.interval)
        cursor, flows = read_flows(ask(context, args.query, {**filters, "since": cursor}, args.wait))
        follower.take(flows, time.monotonic())


def main(argv: list[str] | None = None) -> None:
    """Print the collector's report, or follow its flows as they are joined."""
    args = parse_args(argv)
    query = flow_query(args)
    context = zmq.Context()
    try:
        if args.follow:
            follow(context, args, query)
        else:
            print_report(ask(context, args.query, {**query.to_wire(), "op": "report"}, args.wait), args.output)
    except KeyboardInterrupt:
        pass
    finally:
        context.term()
