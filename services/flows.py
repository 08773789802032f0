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

from shared.names import Name, endpoint
from shared.record import Method, Observation, Role
from shared.report_model import Flow, FlowEnd, FlowVerdict

LOCAL_PRIORITY = {Method.RECVMSG: 3, Method.GETSOCKNAME: 2, Method.BIND: 1}
REMOTE_PRIORITY = {
    Method.GETPEERNAME: 4,
    Method.ACCEPT: 3,
    Method.RECVMSG: 3,
    Method.RECVFROM: 3,
    Method.CONNECT: 2,
    Method.SENDTO: 2,
}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def is_wildcard(name: Name | None) -> bool:
    """Tell a wildcard bind ('0.0.0.0', '::') from a concrete name."""
    return isinstance(name, tuple) and name[0] in WILDCARD_HOSTS


def pick_end(records: list[Observation]) -> FlowEnd:
    """Fold one end's records into its best-known own name and peer name."""
    local: tuple[tuple[int, int], Name] | None = None
    remote: tuple[int, Name] | None = None
    for obs in records:
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
    )


def scenario_of(records: list[Observation]) -> str | None:
    """The scenario the client's closing record names (the collector checked at ingest that it is a string)."""
    return next((obs.extra["scenario"] for obs in reversed(records) if "scenario" in obs.extra), None)


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
        client_records = by_role.get(Role.CLIENT, [])
        client = pick_end(client_records) if client_records else None
        server = pick_end(by_role[Role.SERVER]) if Role.SERVER in by_role else None
        first = (client_records or by_role[Role.SERVER])[0]
        verdict, preserved = judge(client, server) if client and server else (FlowVerdict.UNMATCHED, None)
        flows.append(
            Flow(
                flow=flow_id,
                proto=first.proto,
                family=first.family,
                scenario=scenario_of(client_records),
                client=client,
                server=server,
                verdict=verdict,
                port_preserved=preserved,
            )
        )
    return flows
