"""Port collision behind the router: N LAN hosts bind one source port at once and reach echo. Which keeps it?

Each probe is a throwaway container on lan (routed through the router, as client-lan is) that binds
the same source port and connects to echo at the same moment. The router's MASQUERADE gives the
first connection its own port and must remap every other one, since all of them share one WAN
address toward one echo name: the router's conntrack entries say which kept the port, and echo's
view of each flow must agree.
"""

from __future__ import annotations

from docker.models.containers import Container

from services.case_views import CaseFlow
from shared.docker_host import describe_entry
from shared.stack import IMAGE, PROBE_LABEL, Stack, parse_json_lines

GO_FILE = "/tmp/socklab-go"


def start_probe(stack: Stack, name: str, command: str) -> Container:
    """A container on lan, behind the router, whose command waits until released."""
    probe = stack.docker.containers.run(
        IMAGE,
        ["sh", "-c", f"until [ -e {GO_FILE} ]; do sleep 0.05; done && exec {command}"],
        detach=True,
        network=stack.network_name("lan"),
        environment=stack.reporting_env(name),
        volumes=stack.member_volumes(),
        labels={PROBE_LABEL: stack.project},
        hostname=name,
    )
    stack.join(probe, "lan")
    return probe


def run_probes_at_once(stack: Stack, count: int, command: str) -> list[dict[str, object]]:
    """Start `count` probes, release them together, and return each one's `socklab client --json` outcome."""
    probes: list[Container] = []
    try:
        for index in range(count):
            probes.append(start_probe(stack, f"collision-{index}", command))
        for probe in probes:
            probe.exec_run(["touch", GO_FILE])
        outcomes = []
        for probe in probes:
            status = probe.wait(timeout=30)["StatusCode"]
            output = probe.logs(stdout=True, stderr=status != 0).decode(errors="replace")
            if status != 0:
                raise RuntimeError(f"{probe.name} exited {status}:\n{output}")
            outcomes.append(parse_json_lines(output)[0])
        return outcomes
    finally:
        for probe in probes:
            probe.remove(force=True)


def run_collision(stack: Stack, count: int = 4, port: int = 47100) -> list[CaseFlow]:
    """`count` LAN hosts on source port `port` at once: both ends of each flow and the router's entry for it."""
    echo = "{}:{}".format(*stack.echo_address())
    command = f"socklab client --json --scenario tcp-bound --bind-port {port} --echo {echo}"
    outcomes = run_probes_at_once(stack, count, command)
    entries = stack.conntrack("-p", "tcp", "--orig-port-src", str(port))
    rows = []
    for outcome in outcomes:
        flow = stack.wait_for_flow(str(outcome["flow"]))
        local = outcome["local"]
        assert isinstance(local, list)
        found = [e for e in entries if e.src == local[0] and e.sport == port]
        mapped = found[0].reply_dport if found else None
        said = "kept" if mapped == port else f"remapped to {mapped}"
        rewriter = f"router (MASQUERADE): source port {port} {said}"
        evidence = {"router conntrack": describe_entry(found[0]) if found else "no entry"}
        rows.append(CaseFlow("collision", f"{local[0]}:{port} -> {echo}", flow, rewriter, evidence))
    return rows
