"""The punch matrix (`make punch-matrix`): every pair of the two routers' behaviours, punched for udp and tcp.

Runs on the Docker host against the running stack (shared.stack). For each behaviour the router (a, in
front of client-lan) and router2 (b, in front of client-lan2) can be switched to (`socklab router
--apply`: cone or symmetric mapping, address-and-port-dependent or endpoint-independent filtering),
natcheck measures what the NAT really does (RFC 5780), the prediction for the pair is worked out from
those measured words (RFC 5128 section 3; Ford, Srisuresh and Kegel, sections 3.5 and 5), and
client-lan punches client-lan2 (whose `socklab punch --serve` answers); the row says whether the
outcome agrees. `--json` prints the rows as one JSON list of {"a", "b", "proto", "predicted", "outcome",
"agree"}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from shared.nat import ROUTER_FILTERS, Behaviour, NatMode
from shared.registry_protocol import PUNCH_PROTOS
from shared.report_model import NatCheckResult
from shared.stack import Stack

log = logging.getLogger(__name__)

SETUPS = [(mode, filtering) for mode in NatMode for filtering in ROUTER_FILTERS]
ROUTERS = {"router": "client-lan", "router2": "client-lan2"}  # each router and the client behind it
REPARK = 0.5  # seconds for the serving end to ask the registry again after its router switched
PUNCH_TIMEOUT = 1.0
EI = Behaviour.ENDPOINT_INDEPENDENT
Nat = tuple[Behaviour, Behaviour]  # (mapping, filtering) as natcheck measured them


def predict(a: Nat, b: Nat, proto: str) -> bool:
    """Whether a punch between NATs of these measured behaviours connects (RFC 5128 section 3).

    Both map endpoint-independently: each end's packets leave from the public name the registry saw,
    and the other's packets to it open the filter (section 3.3). With one mapping per destination on one
    side, the peer sees a port it was never told; that only works if the other NAT both maps and filters
    endpoint-independently (a full cone): the new port's packets get in, and the answer goes back to where
    they came from. For tcp, filtering does not help: the routers' endpoint-independent filtering
    forwards udp only (README, NAT behaviour), so tcp needs endpoint-independent mapping on both sides.
    """
    both_map = a[0] == EI and b[0] == EI
    if proto == "tcp":
        return both_map
    return both_map or a == (EI, EI) or b == (EI, EI)


@dataclass
class Row:
    """One pair and protocol: the setups asked for, natcheck's words, the prediction and the outcome."""

    a_setup: tuple[NatMode, Behaviour]
    b_setup: tuple[NatMode, Behaviour]
    a: Nat
    b: Nat
    proto: str
    predicted: bool
    punch: dict[str, Any]

    @property
    def connected(self) -> bool:
        """Whether the punch connected."""
        return self.punch.get("outcome") == "connected"

    def to_wire(self) -> dict[str, Any]:
        """The row as `--json` prints it."""
        return {
            "a": {"mapping": str(self.a[0]), "filtering": str(self.a[1])},
            "b": {"mapping": str(self.b[0]), "filtering": str(self.b[1])},
            "proto": self.proto,
            "predicted": word(self.predicted),
            "outcome": word(self.connected),
            "agree": self.predicted == self.connected,
        }


def word(connected: bool) -> str:
    """connected or failed."""
    return "connected" if connected else "failed"


def apply(stack: Stack, router: str, setup: tuple[NatMode, Behaviour] | None) -> None:
    """Switch a running router (None: back to compose's setting); it flushes its conntrack table."""
    options = ["--mode", str(setup[0]), "--filter", str(setup[1])] if setup else []
    stack.exec(router, "socklab", "router", "--apply", *options, user="root")


def measure(stack: Stack, client: str) -> Nat:
    """natcheck's mapping and filtering from the client behind a router."""
    printed = stack.exec(client, "socklab", "natcheck", "--json").strip().splitlines()[-1]
    result = NatCheckResult.from_wire(json.loads(printed))
    return result.mapping, result.filtering


def punch(stack: Stack, proto: str) -> dict[str, Any]:
    """client-lan punches client-lan2; the outcome it prints (a failed punch exits 1, which is no error here)."""
    command = ["socklab", "punch", "client-lan2", "--proto", proto, "--json", "--timeout", str(PUNCH_TIMEOUT)]
    code, output = stack.container("client-lan").exec_run(command, user="socklab")
    lines = [line for line in output.decode(errors="replace").splitlines() if line.startswith("{")]
    if code not in (0, 1) or not lines:
        raise RuntimeError(f"socklab punch exited {code}: {output.decode(errors='replace')}")
    outcome: dict[str, Any] = json.loads(lines[-1])
    return outcome


def run_matrix(stack: Stack) -> list[Row]:
    """Every pair of setups, udp and tcp, the routers set back to compose's setting at the end."""
    rows, measured_b = [], {}
    try:
        for a_setup in SETUPS:
            apply(stack, "router", a_setup)
            a = measure(stack, "client-lan")
            for b_setup in SETUPS:
                apply(stack, "router2", b_setup)
                if b_setup not in measured_b:
                    measured_b[b_setup] = measure(stack, "client-lan2")
                b = measured_b[b_setup]
                time.sleep(REPARK)
                for proto in PUNCH_PROTOS:
                    rows.append(Row(a_setup, b_setup, a, b, proto, predict(a, b, proto), punch(stack, proto)))
                    log.info("%s", format_row(rows[-1]))
    finally:
        for router in ROUTERS:
            apply(stack, router, None)
        time.sleep(REPARK)  # so the next punch meets a serving end that asked behind the restored router
    return rows


def short(nat: Nat) -> str:
    """natcheck's words, abbreviated as RFC 4787 does: EIM/APDF."""
    letters = {Behaviour.ENDPOINT_INDEPENDENT: "EI", Behaviour.ADDRESS_AND_PORT_DEPENDENT: "APD"}
    return "/".join(letters.get(b, str(b)) + kind for b, kind in zip(nat, ("M", "F"), strict=True))


def format_row(row: Row) -> str:
    """One line of the table."""
    a_setup, b_setup = (f"{m} {'EI' if f == EI else 'APD'}-filter" for m, f in (row.a_setup, row.b_setup))
    took = f"{row.punch.get('elapsed_ms', 0):>7.1f} ms"
    return (
        f"{a_setup:22} {short(row.a):10} {b_setup:22} {short(row.b):10} {row.proto:5} "
        f"{word(row.predicted):10} {word(row.connected):10} {'yes' if row.predicted == row.connected else 'NO':5} "
        f"{took}  {row.punch.get('candidate') or row.punch.get('reason') or ''}"
    )


def format_table(rows: list[Row]) -> str:
    """The table `make punch-matrix` prints."""
    header = (
        f"{'router (a) asked':22} {'measured':10} {'router2 (b) asked':22} {'measured':10} {'proto':5} "
        f"{'predicted':10} {'outcome':10} {'agree':5} {'time':>10}  candidate or reason"
    )
    agree = sum(row.predicted == row.connected for row in rows)
    return "\n".join([header, *(format_row(row) for row in rows), f"{agree} of {len(rows)} rows agree"])


def main(argv: list[str] | None = None) -> None:
    """Run the matrix against the stack `make up` started; exit 1 if any row disagrees with its prediction."""
    parser = argparse.ArgumentParser(prog="make punch-matrix", description=main.__doc__)
    parser.add_argument("--json", action="store_true", help="the rows as one JSON list")
    parser.add_argument("--project", default="socklab", help="the compose project (socklab)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    stack = Stack(args.project)
    try:
        rows = run_matrix(stack)
    finally:
        stack.context.term()
    print(json.dumps([row.to_wire() for row in rows]) if args.json else format_table(rows))
    if not all(row.predicted == row.connected for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
