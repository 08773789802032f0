"""What every Docker addressing case shows: each flow's two ends (from the collector), who rewrote it, the evidence.

Shared by the cases (services/case_*.py), `socklab cases` that prints them, and the tests that check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.names import format_name
from shared.report_model import Flow


@dataclass(frozen=True)
class CaseFlow:
    """One flow of a case: both ends' views as the collector joined them, who rewrote the names, and the proof."""

    case: str
    step: str
    flow: Flow
    rewriter: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The flow as `socklab cases --json` prints it: the report's flow keys beside the case's own."""
        return {
            "case": self.case,
            "step": self.step,
            "rewriter": self.rewriter,
            "evidence": self.evidence,
            **self.flow.to_wire(),
        }


def format_case_flow(row: CaseFlow) -> str:
    """Two views of one flow on a line, then who rewrote it and the evidence, indented."""
    client, server = row.flow.client, row.flow.server
    me = f"{format_name(client.sockname)} -> {format_name(client.peername)}" if client else "(no client report)"
    seen = format_name(server.peername) if server else "(no answer)"
    lines = [f"  {row.step:34} {row.flow.proto:4} me {me:46} echo saw me as {seen:32} {row.flow.verdict}"]
    lines.append(f"      rewritten by: {row.rewriter}")
    for hop in row.flow.path:
        lines.append(
            f"      path: {hop.by} {hop.kind} {format_name(hop.before)} -> {format_name(hop.after)} ({hop.rule})"
        )
    for key, value in row.evidence.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"      {key}: {item}")
    return "\n".join(lines)
