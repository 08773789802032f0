"""Join the two ends of each flow and say what happened between them.

Each end's names come from its own records: its own name (`sockname`) from recvmsg's arrival
address, getsockname or bind, preferring a concrete host to a wildcard; the other end's name
(`peername`) from getpeername, else from what accept, recvmsg or recvfrom returned, else from
what connect or sendto was given.

Verdicts, comparing names folded by shared.names.endpoint (IPv4-mapped hosts unmapped):
- direct:    client's sockname == server's peername and client's peername == server's sockname
- snat:      only the source changed on the way (port_preserved says whether the port survived)
- dnat:      only the destination changed
- proxied:   both changed: the server's peer is another connection, as through a user-space proxy
- unmatched: only one end reported
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.names import Name, endpoint, name_to_wire
from shared.record import Observation, Role

LOCAL_PRIORITY = {"recvmsg": 3, "getsockname": 2, "bind": 1}
REMOTE_PRIORITY = {"getpeername": 4, "accept": 3, "recvmsg": 3, "recvfrom": 3, "connect": 2, "sendto": 2}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class FlowVerdict(StrEnum):
    """What lay between the two ends of a flow."""

    DIRECT = "direct"
    SNAT = "snat"
    DNAT = "dnat"
    PROXIED = "proxied"
    UNMATCHED = "unmatched"


@dataclass
class FlowEnd:
    """One end of a flow as its own records tell it."""

    service: str
    host: str
    family: str
    sockname: Name | None
    peername: Name | None
    extra: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The end as the report's JSON carries it."""
        return {
            "service": self.service,
            "host": self.host,
            "family": self.family,
            "sockname": name_to_wire(self.sockname),
            "peername": name_to_wire(self.peername),
        }


@dataclass
class Flow:
    """Both ends of one flow and the verdict on what lay between them."""

    flow: str
    proto: str
    family: str
    client: FlowEnd | None
    server: FlowEnd | None
    verdict: FlowVerdict
    port_preserved: bool | None

    def to_wire(self) -> dict[str, Any]:
        """The flow as the report's JSON carries it."""
        return {
            "flow": self.flow,
            "proto": self.proto,
            "family": self.family,
            "scenario": self.client.extra.get("scenario") if self.client else None,
            "client": self.client.to_wire() if self.client else None,
            "server": self.server.to_wire() if self.server else None,
            "verdict": str(self.verdict),
            "port_preserved": self.port_preserved,
        }


def is_wildcard(name: Name | None) -> bool:
    """Tell a wildcard bind ('0.0.0.0', '::') from a concrete name."""
    return isinstance(name, tuple) and name[0] in WILDCARD_HOSTS


def pick_end(records: list[Observation]) -> FlowEnd:
    """Fold one end's records into its best-known own name and peer name."""
    local: tuple[tuple[int, int], Name] | None = None
    remote: tuple[int, Name] | None = None
    extra: dict[str, Any] = {}
    for obs in records:
        extra.update(obs.extra)
        if obs.local is not None:
            rank = (0 if is_wildcard(obs.local) else 1, LOCAL_PRIORITY.get(obs.method, 0))
            if local is None or rank >= local[0]:
                local = (rank, obs.local)
        if obs.remote is not None:
            prio = REMOTE_PRIORITY.get(obs.method, 0)
            if remote is None or prio >= remote[0]:
                remote = (prio, obs.remote)
    first = records[0]
    return FlowEnd(
        service=first.service,
        host=first.host,
        family=first.family,
        sockname=local[1] if local else None,
        peername=remote[1] if remote else None,
        extra=extra,
    )


def judge(client: FlowEnd, server: FlowEnd) -> tuple[FlowVerdict, bool | None]:
    """Compare the two views of one flow."""
    if None in (client.sockname, client.peername, server.sockname, server.peername):
        return FlowVerdict.UNMATCHED, None
    assert client.sockname is not None and server.peername is not None
    assert client.peername is not None and server.sockname is not None
    source_kept = endpoint(client.sockname) == endpoint(server.peername)
    destination_kept = endpoint(client.peername) == endpoint(server.sockname)
    port_preserved = None
    if isinstance(client.sockname, tuple) and isinstance(server.peername, tuple):
        port_preserved = client.sockname[1] == server.peername[1]
    if source_kept and destination_kept:
        return FlowVerdict.DIRECT, port_preserved
    if destination_kept:
        return FlowVerdict.SNAT, port_preserved
    if source_kept:
        return FlowVerdict.DNAT, port_preserved
    return FlowVerdict.PROXIED, port_preserved


def join_flows(observations: Iterable[Observation]) -> list[Flow]:
    """Group records by flow id and role, and judge every flow, oldest first."""
    ends: dict[str, dict[Role, list[Observation]]] = {}
    for obs in observations:
        if obs.flow is not None:
            ends.setdefault(obs.flow, {}).setdefault(obs.role, []).append(obs)
    flows = []
    for flow_id, by_role in ends.items():
        client = pick_end(by_role[Role.CLIENT]) if Role.CLIENT in by_role else None
        server = pick_end(by_role[Role.SERVER]) if Role.SERVER in by_role else None
        any_records = by_role.get(Role.CLIENT) or by_role[Role.SERVER]
        verdict, preserved = judge(client, server) if client and server else (FlowVerdict.UNMATCHED, None)
        flows.append(
            Flow(
                flow=flow_id,
                proto=str(any_records[0].proto),
                family=(client or server).family,  # type: ignore[union-attr]
                client=client,
                server=server,
                verdict=verdict,
                port_preserved=preserved,
            )
        )
    return flows
