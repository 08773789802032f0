"""The README's benchmark table, rendered from bench/results.json, so the figures shown are the figures measured.

`python -m bench.figures --write README.md` puts the table between the README's bench markers;
`--check README.md` exits 1 when what is there differs (a unit test runs the check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS

BEGIN, END = "<!-- bench figures: python -m bench.figures --write README.md -->", "<!-- end of bench figures -->"
SIZES = ("1000", "10000", "100000", "1000000")


INGEST_ROWS = (  # (results key, row, subject, baseline)
    (
        "ingest",
        "ingest: records stored vs raw PUSH→PULL + unpackb (batched as reporters send)",
        "collector (check, store, index)",
        "raw PUSH->PULL + unpackb",
    ),
    (
        "ingest_one_a_message",
        "ingest, context: one record a message (as before batches)",
        "collector, one record a message",
        "raw PUSH->PULL + unpackb, one record a message",
    ),
    (
        "ingest_vs_curve_ceiling",
        "ingest, context: the same ceiling over CurveZMQ too",
        "collector (check, store, index)",
        "raw PUSH->PULL + unpackb, CurveZMQ",
    ),
)


def ratio_row(what: str, goal: float, found: dict[str, Any], subject: str, baseline: str) -> str:
    """One same-run comparison: the median ratio and its spread, both rates, and CPU per operation."""
    mine, base = found[subject], found[baseline]
    verdict = "met" if mine["ratio"] >= goal else f"missed by {goal - mine['ratio']:.2f}"
    if mine.get("lost"):
        verdict += f"; {mine['lost']:,} records lost" + (f" of {mine['records']:,}" if mine.get("records") else "")
    return (
        f"| {what} | ≥ {goal:.2f}x | **{mine['ratio']:.2f}x** ({mine['ratio_min']:.2f}..{mine['ratio_max']:.2f}), "
        f"{verdict} | {mine['rate']:,.0f} vs {base['rate']:,.0f} | {mine['cpu_us']:.1f} vs {base['cpu_us']:.1f} |"
    )


def render(results: dict[str, Any]) -> str:
    """The table (and the report latency table) as Markdown."""
    lines = [
        "| benchmark | goal | measured: median ratio (spread), goal | wall rate /s: subject vs baseline "
        "| server CPU µs per op: subject vs baseline |",
        "|---|---|---|---|---|",
    ]
    for key, what, subject, baseline in INGEST_ROWS:
        if key in results:
            lines.append(ratio_row(what, 0.8, results[key], subject, baseline))
    if "observe" in results:
        for proto, what in (
            ("tcp", "observing: TCP flows, reported vs off"),
            ("udp", "observing: UDP flows, reported vs off"),
        ):
            found = results["observe"][proto]
            lines.append(ratio_row(what, 0.95, found, "echo reporting to a collector", "echo, reporting off"))
    if "echo_tcp" in results:
        found = results["echo_tcp"]
        lines.append(
            ratio_row(
                "echo TCP 1 KiB x 4 vs asyncio Protocol",
                1.0,
                found,
                "echo (reporting to a collector)",
                "asyncio Protocol",
            )
        )
    if "echo_udp" in results:
        found = results["echo_udp"]
        lines.append(
            ratio_row(
                "echo UDP 64 B x 4 vs asyncio DatagramProtocol",
                0.8,
                found,
                "echo (reporting to a collector)",
                "asyncio DatagramProtocol",
            )
        )
    if "report" in results:
        report = results["report"]
        lines += [
            "",
            "| stored records | page (newest 100) ms | filtered page ms | search ms | first page after replay ms "
            "| first whole report after replay ms | replay s | held bytes per record |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for size in (s for s in SIZES if s in report):
            r = report[size]
            lines.append(
                f"| {int(size):,} | {r['page_ms']:.1f} | {r['filtered_ms']:.1f} | {r['search_ms']:.1f} "
                f"| {r['first_page_ms']:.1f} | {r['first_report_ms']:,.0f} | {r['replay_s']:.2f} "
                f"| {r['bytes_per_record']:.0f} |"
            )
    if "kill" in results:
        kill = results["kill"]
        lines += ["", "| `make bench-kill` | sent | stored | lost | duplicates |", "|---|---|---|---|---|"]
        lines.append(
            f"| 10 SIGKILLs of the collector | {kill['sent']} | {kill['stored']} | {kill['lost']} "
            f"| {kill['duplicates']} |"
        )
    return "\n".join(lines)


def rewrite(text: str, table: str) -> str:
    """The README with the table between its markers replaced."""
    head, found, rest = text.partition(BEGIN)
    if not found:
        raise ValueError(f"the README has no {BEGIN!r} marker")
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"the README has no {END!r} marker")
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="README", type=Path)
    action.add_argument("--check", metavar="README", type=Path)
    args = parser.parse_args()
    table = render(json.loads(RESULTS.read_text()))
    readme: Path = args.write or args.check
    text = readme.read_text()
    wanted = rewrite(text, table)
    if args.write:
        readme.write_text(wanted)
    elif wanted != text:
        sys.exit(f"{readme}'s bench figures differ from {RESULTS}")


if __name__ == "__main__":
    main()
