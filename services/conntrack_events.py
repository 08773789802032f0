"""The router's conntrack events, read from `conntrack -E` and streamed to the collector as records.

`conntrack -E -e NEW,DESTROY -o extended,id,timestamp` writes one line per event, e.g.

  [1795689153.343002]	    [NEW] ipv4     2 udp      17 30 src=192.168.50.20 dst=198.51.100.10 sport=54893
  dport=7007 [UNREPLIED] src=198.51.100.10 dst=198.51.100.2 sport=7007 dport=54893 id=4161040261

(one line): the time the event was read, the event, the family, the protocol, the original tuple,
the reply tuple and the conntrack id. (`-o xml` carries no sub-second time and appends text after
its element for events a user caused, so the text form is the one read.) Only TCP and UDP events
become records; every other line is counted and logged, and the stream goes on.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from shared.record import ConntrackEvent, ConntrackEventType, ConntrackTuple, Family, Proto
from shared.reporter import Reporter

log = logging.getLogger(__name__)

COMMAND = ["conntrack", "-E", "-e", "NEW,DESTROY", "-o", "extended,id,timestamp"]
EVENT_LINE = re.compile(r"^\[(\d+\.\d+)\]\s+\[(NEW|DESTROY)\]\s+(ipv4|ipv6)\s+\d+\s+(\S+)\s+(.*)$")
TUPLE_KEYS = ("src", "dst", "sport", "dport")


def parse_event(line: str, service: str, host: str, setup: dict[str, Any]) -> ConntrackEvent | None:
    """One TCP or UDP event line as a record; None for another protocol; ValueError for anything else."""
    match = EVENT_LINE.match(line.strip())
    if match is None:
        raise ValueError(f"not a conntrack event line: {line.strip()[:120]!r}")
    moment, event, family, proto, rest = match.groups()
    if proto not in (Proto.TCP, Proto.UDP):
        return None
    fields: dict[str, list[str]] = {}
    for word in rest.split():
        key, sep, value = word.partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    if any(len(fields.get(key, [])) != 2 for key in TUPLE_KEYS) or len(fields.get("id", [])) != 1:
        raise ValueError(f"conntrack event without two tuples and one id: {line.strip()[:120]!r}")
    if not fields["id"][0].isdigit():
        raise ValueError(f"conntrack event id {fields['id'][0]!r} is not a number")
    original, reply = (read_tuple(fields, i, what) for i, what in enumerate(("conntrack original", "conntrack reply")))
    return ConntrackEvent(
        service=service,
        host=host,
        event=ConntrackEventType(event.lower()),
        id=int(fields["id"][0]),
        proto=Proto(proto),
        family=Family(family),
        original=original,
        reply=reply,
        setup=setup,
        time=float(moment),
    )


def read_tuple(fields: dict[str, list[str]], index: int, what: str) -> ConntrackTuple:
    """The index-th src/dst/sport/dport of an event line, checked like a tuple from the wire."""
    values = {key: fields[key][index] for key in TUPLE_KEYS}
    if not (values["sport"].isdigit() and values["dport"].isdigit()):
        raise ValueError(f"{what} ports {values['sport']!r}, {values['dport']!r} are not numbers")
    return ConntrackTuple.from_wire({**values, "sport": int(values["sport"]), "dport": int(values["dport"])}, what)


def read_setup(path: str) -> dict[str, Any]:
    """The router's NAT setup as its last `apply` wrote it (it may switch while the router runs)."""
    try:
        with open(path) as f:
            setup = json.load(f)
    except (OSError, ValueError) as exc:
        log.warning("router setup %s unreadable: %s", path, exc)
        return {}
    return setup if isinstance(setup, dict) else {}


def stream_events(
    lines: Iterable[str], reporter: Reporter, setup: Callable[[], dict[str, Any]], stats: Counter[str]
) -> None:
    """Report every TCP and UDP event as a record, never waiting on the collector; count what is skipped."""
    for line in lines:
        if not line.strip():
            continue
        try:
            event = parse_event(line, reporter.service, reporter.host, setup())
        except ValueError as exc:
            stats["rejected"] += 1
            log.warning("conntrack line #%d rejected: %s", stats["rejected"], exc)
            continue
        if event is None:
            stats["other_protocols"] += 1
            continue
        stats["events"] += 1
        reporter.report(replace(event, drops=reporter.dropped))


def follow_conntrack(reporter: Reporter, setup: Callable[[], dict[str, Any]]) -> None:
    """Run `conntrack -E` for the host's life (a router, a swarm node) and stream its events; log when it ends."""
    stats: Counter[str] = Counter()
    with subprocess.Popen(COMMAND, stdout=subprocess.PIPE, text=True, bufsize=1) as events:
        assert events.stdout is not None
        log.info("streaming conntrack events: %s", " ".join(COMMAND))
        stream_events(events.stdout, reporter, setup, stats)
    log.warning("conntrack -E ended with %s after %s", events.returncode, dict(stats))
