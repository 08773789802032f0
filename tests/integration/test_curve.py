"""Nothing forged: only the stack's members and the host's key reach the collector; the rest is refused and counted."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import zmq

from shared.curve import NO_KEY, UNKNOWN_KEY, load_client_keys
from shared.delivery import MessageKind, pack_message
from shared.polling import wait_for
from shared.record import Family, Method, Observation, Proto, Role, pack_observation
from shared.reporter import Reporter
from shared.stack import IMAGE, PROBE_LABEL, Stack
from tests.integration.test_exit_codes import make

pytestmark = pytest.mark.integration

INTRUDER = Path(__file__).parent / "scripts" / "intruder.py"


def record(flow: str, service: str) -> Observation:
    """One client record of a flow."""
    return Observation(service, "h", flow, Role.CLIENT, Proto.TCP, Family.IPV4, Method.CONNECT)


def more_refused(stack: Stack, before: dict[str, int], *reasons: str) -> dict[str, int]:
    """Wait until the collector has refused more handshakes for every reason; its counts then."""

    def counted() -> dict[str, int] | None:
        now = stack.report().refused
        return now if all(now.get(r, 0) > before.get(r, 0) for r in reasons) else None

    return wait_for(counted, f"more refusals for {', '.join(reasons)} than {before}")


def test_a_record_pushed_from_the_host_without_a_key_is_refused_and_counted(stack: Stack) -> None:
    before, forged, marker = stack.report().refused, f"forged-{uuid.uuid4().hex[:8]}", f"keyed-{uuid.uuid4().hex[:8]}"
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)  # a reporter's socket, without the stack's key
    dealer.connect(stack.ingest_endpoint())
    dealer.send(pack_message(MessageKind.RECORD, bytes(16), 1, pack_observation(record(forged, "forger"))))
    reporter = Reporter(context, stack.ingest_endpoint(), "test-host", keys=stack.keys)
    try:
        more_refused(stack, before, NO_KEY)
        assert reporter.report(record(marker, "test-host"))
        stack.wait_for_flow(marker, both_ends=False)
    finally:
        dealer.close(linger=0)
        reporter.close()
        context.term()
    assert stack.report().flow(forged) is None, "the forged record never got in"
    logs = stack.container("collector").logs().decode(errors="replace")
    assert "refused handshake" in logs and "(no-key)" in logs


def test_a_container_not_in_the_stack_is_refused_on_both_sockets(stack: Stack) -> None:
    before, forged = stack.report().refused, f"intruder-{uuid.uuid4().hex[:8]}"
    server_key = load_client_keys(Path(stack.keys)).server_public.decode()
    output = stack.docker.containers.run(
        IMAGE,
        ["python3", "-c", INTRUDER.read_text(), forged, server_key],
        network=stack.network_name("ctl"),
        labels={PROBE_LABEL: stack.project},
        remove=True,
    )
    outcome = json.loads(bytes(output).decode().splitlines()[-1])
    assert outcome["collector"] == stack.ip("collector", "ctl")
    assert not outcome["answered"], "no query answered"
    events = outcome["events"]
    assert "handshake-failed-protocol" in events["plain"], f"no key, no handshake: {events}"
    assert "handshake-failed-auth" in events["keyed"] and "handshake-failed-auth" in events["query"], events
    assert not any("handshake-succeeded" in seen for seen in events.values()), events
    after = more_refused(stack, before, NO_KEY, UNKNOWN_KEY)
    assert after[UNKNOWN_KEY] - before.get(UNKNOWN_KEY, 0) >= 2, "its keyed PUSH and its REQ, each refused"
    assert stack.report().flow(forged) is None


def test_make_published_reports_with_the_hosts_key(stack: Stack) -> None:
    before = stack.report()
    done = make(stack, "published")
    assert done.returncode == 0, done.stdout + done.stderr
    after = stack.report()
    hosts = [f for f in after.flows if f.client is not None and f.client.service == "host" and not before.flow(f.flow)]
    assert hosts, f"no new flow from the host's client:\n{done.stdout}"
    assert after.refused == before.refused, "the host's key was let in"


def test_the_collectors_ports_are_published_on_the_hosts_loopback_only(stack: Stack) -> None:
    collector = stack.container("collector")
    collector.reload()
    ports = collector.attrs["NetworkSettings"]["Ports"]
    assert set(ports) == {"5555/tcp", "5556/tcp", "8080/tcp"}
    assert {binding["HostIp"] for bindings in ports.values() for binding in bindings} == {"127.0.0.1"}
