"""Join the two ends of each flow and say what happened between them.

Each end's names come from its own records and name the request's path: its own name (`sockname`)
from the address a request arrived at (recvmsg, recvfrom), getsockname or bind, preferring a concrete
host to a wildcard; never from the socket an answer was sent from (a STUN server answers a
CHANGE-REQUEST from another address). The other end's name (`peername`): from getpeername, else, for
a client, what recvfrom returned if it names where the client sent, else where it sent (connect,
sendto); for a server, who the request came from (accept, recvmsg, recvfrom). A datagram answer is
a separate fact (`answer`: where it came from, whether it arrived), and `path` names who rewrote
what on the way (services.paths, from the router's conntrack events and the Docker host's bindings).

Verdicts, comparing names folded by shared.names.endpoint (IPv4-mapped hosts unmapped):
- direct:    client's sockname == server's peername and client's peername == server's sockname
- snat:      only the source changed on the way (port_preserved says whether the port survived)
- dnat:      only the destination changed
- proxied:   both changed: the server's peer is another connection, as through a user-space proxy
- hairpin:   both changed by one NAT that turned the flow back where it came from (the path says so)
- two-nats:  rewritten by two NATs or more, as the path names them: the source by the client's NAT and
             the destination by the server's (a punched hole between two NATs), or the source by two
             (a home router behind a carrier-grade NAT)
- unmatched: only one end reported
- server-only: the client is not socklab's (nc, curl, a browser): echo reported its view alone, with
  the evidence it saw (records whose extra holds an "evidence" map), under a flow id of its own
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.paths import Evidence
from shared.names import Endpoint, Name, endpoint
from shared.record import Method, Observation, Role
from shared.report_model import ANY_CLIENT, Answer, Flow, FlowEnd, FlowVerdict, Hop, HopKind

LOCAL_PRIORITY = {Method.RECVMSG: 3, Method.RECVFROM: 3, Method.GETSOCKNAME: 2, Method.BIND: 1}
REMOTE_PRIORITY = {
    Method.GETPEERNAME: 4,
    Method.ACCEPT: 3,
    Method.RECVMSG: 3,
    Method.RECVFROM: 3,
    Method.CONNECT: 2,
    Method.SENDTO: 2,
}
SENT = (Method.CONNECT, Method.SENDTO)
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def is_wildcard(name: Name | None) -> bool:
    """Tell a wildcard bind ('0.0.0.0', '::') from a concrete name."""
    return isinstance(name, tuple) and name[0] in WILDCARD_HOSTS


def is_other_source(obs: Observation, sent_to: set[Endpoint]) -> bool:
    """A client's recvfrom from elsewhere than it sent to: the answer's source, not the client's peer."""
    if obs.role != Role.CLIENT or obs.method != Method.RECVFROM or obs.remote is None or not sent_to:
        return False
    return endpoint(obs.remote) not in sent_to


def pick_end(records: list[Observation]) -> FlowEnd:
    """Fold one end's records into its best-known own name and peer name."""
    local: tuple[tuple[int, int], Name] | None = None
    remote: tuple[int, Name] | None = None
    sent_to = {endpoint(o.remote) for o in records if o.method in SENT and o.remote is not None}
    for obs in records:
        if obs.local is not None and obs.method != Method.SENDTO:
            rank = (0 if is_wildcard(obs.local) else 1, LOCAL_PRIORITY.get(obs.method, 0))
            if local is None or rank >= local[0]:
                local = (rank, obs.local)
        if obs.remote is not None and not is_other_source(obs, sent_to):
            prio = REMOTE_PRIORITY.get(obs.method, 0)
            if remote is None or prio >= remote[0]:
                remote = (prio, obs.remote)
    first = records[0]
    return FlowEnd(
        service=first.service,
        host=first.host,
        node=first.node,
        family=first.family,
        sockname=local[1] if local else None,
        peername=remote[1] if remote else None,
    )


def scenario_of(records: list[Observation]) -> str | None:
    """The scenario the client's closing record names (the collector checked at ingest that it is a string)."""
    return next((obs.extra["scenario"] for obs in reversed(records) if "scenario" in obs.extra), None)


def evidence_of(records: list[Observation]) -> dict[str, Any]:
    """What a server saw of a client that is not socklab's, later records adding to earlier ones."""
    evidence: dict[str, Any] = {}
    for obs in records:
        evidence.update(obs.extra.get("evidence", {}))
    return evidence


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


def routers_of(path: tuple[Hop, ...]) -> set[str]:
    """The NATs that rewrote a flow (a proxy opens a connection of its own: no NAT)."""
    return {hop.by for hop in path if hop.kind != HopKind.PROXY}


def answer_of(client_records: list[Observation], server_records: list[Observation]) -> Answer | None:
    """A datagram answer's source and whether it arrived, apart from the request's path; None if none was sent."""
    sent = [obs for obs in server_records if obs.method == Method.SENDTO]
    if not sent:
        return None
    received = [obs.remote for obs in client_records if obs.method == Method.RECVFROM and obs.remote is not None]
    arrived = bool(received) or any("reflexive" in obs.extra for obs in client_records)
    origins = [obs.local for obs in sent if obs.local is not None and not is_wildcard(obs.local)]
    source = received[-1] if received else (origins[-1] if origins else None)
    return Answer(source, arrived)


def join_flows(observations: Iterable[Observation], evidence: Evidence | None = None) -> list[Flow]:
    """Group records by flow id and role, judge every flow and trace its path, oldest first."""
    ends: dict[str, dict[Role, list[Observation]]] = {}
    for obs in observations:
        if obs.flow is not None:
            ends.setdefault(obs.flow, {}).setdefault(obs.role, []).append(obs)
    evidence = evidence or Evidence()
    flows = []
    for flow_id, by_role in ends.items():
        client_records, server_records = by_role.get(Role.CLIENT, []), by_role.get(Role.SERVER, [])
        client = pick_end(client_records) if client_records else None
        server = pick_end(server_records) if server_records else None
        first = (client_records or server_records)[0]
        verdict, preserved = judge(client, server) if client and server else (FlowVerdict.UNMATCHED, None)
        times = [obs.time for obs in client_records + server_records]
        path = evidence.trace(first.proto, client, server, (min(times), max(times)))
        if verdict == FlowVerdict.PROXIED and any(hop.kind == HopKind.HAIRPIN for hop in path):
            verdict = FlowVerdict.HAIRPIN
        if verdict in (FlowVerdict.PROXIED, FlowVerdict.SNAT) and len(routers_of(path)) >= 2:
            verdict = FlowVerdict.TWO_NATS
        told = evidence_of(server_records)
        if client is None and told.get("client") == ANY_CLIENT:
            verdict = FlowVerdict.SERVER_ONLY
        flows.append(
            Flow(
                flow=flow_id,
                proto=first.proto,
                family=first.family,
                scenario=scenario_of(client_records) or scenario_of(server_records),
                client=client,
                server=server,
                verdict=verdict,
                port_preserved=preserved,
                path=path,
                answer=answer_of(client_records, server_records),
                evidence=told,
            )
        )
    return flows
