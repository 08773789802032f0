"""socklab cases: the Docker addressing cases people hit, run from the Docker host against the running stack.

`make cases` (or `make cases CASE=hairpin`) runs them with the project's venv after `make up`:
  hairpin    containers reach echo through the host's published port on wan's gateway (moby#29330 family),
             then the same on a Docker engine in a container without its userland proxy
  stale-udp  the host keeps sending UDP to echo's published port while echo restarts (moby#8795)
  collision  N LAN hosts bind one source port at once behind the router: which keeps it
Each flow is printed with both ends' views (the collector's), who rewrote it, and the kernel's or
Docker's evidence. It needs the host's Docker (the `docker` package) and reads the host's /proc.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from services.case_collision import run_collision
from services.case_hairpin import run_hairpin
from services.case_hairpin_engine import run_hairpin_without_proxy
from services.case_stale_udp import run_stale_udp
from services.case_views import CaseFlow, format_case_flow
from shared.stack import Stack


def run_hairpins(stack: Stack) -> list[CaseFlow]:
    """Hairpin through this host's published port (its userland proxy), then through an engine without one."""
    return [*run_hairpin(stack), *run_hairpin_without_proxy(stack.docker)]


CASES: dict[str, Callable[[Stack], list[CaseFlow]]] = {
    "hairpin": run_hairpins,
    "stale-udp": run_stale_udp,
    "collision": run_collision,
}


def main(argv: list[str] | None = None) -> None:
    """Run the chosen cases (all by default) against the running stack and print every flow they made."""
    parser = argparse.ArgumentParser(prog="socklab cases", description=main.__doc__)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"{', '.join(CASES)} (default: all)")
    parser.add_argument("--project", default="socklab", help="the compose project of the running stack (socklab)")
    parser.add_argument("--json", action="store_true", help="one JSON object per flow")
    args = parser.parse_args(argv)
    if unknown := [name for name in args.cases if name not in CASES]:
        parser.error(f"unknown case {unknown[0]!r}: choose from {', '.join(CASES)}")
    try:
        stack = Stack.open(args.project, attach=args.project)
    except RuntimeError as exc:
        sys.exit(f"socklab cases: {exc} (run `make up` first)")
    try:
        for name in args.cases or CASES:
            rows = CASES[name](stack)
            if args.json:
                for row in rows:
                    print(json.dumps(row.to_wire()), flush=True)
            else:
                print(f"{name}:")
                print("\n".join(format_case_flow(row) for row in rows), flush=True)
    finally:
        stack.stop()
