"""Hairpin through a published port of an engine without its userland proxy (moby#29330's other half).

This host's engine runs docker-proxy (dockerd's default), so the hairpin case through wan's gateway shows the
proxy's second connection. A second engine, in a container (the swarm's node image, shared.swarm) started with
--userland-proxy=false, shows what Docker does instead: hairpin mode on its bridge and a DNAT rule that no
longer skips packets from the bridge itself, so echo sees the client's own address. The engine runs its own
collector, registry, echo and client on a bridge network of its own; echo is published on that network's
gateway, as the stack's echo is on wan's. The engine and everything in it go when the case ends.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from functools import partial
from pathlib import Path

import zmq
from docker.client import DockerClient
from docker.errors import APIError
from docker.models.containers import Container

from services.case_views import CaseFlow
from shared.collector_protocol import QueryOp, query_collector
from shared.docker_host import fetch_host_keys
from shared.polling import wait_for
from shared.report_model import Flow, Report
from shared.stack import parse_json_lines
from shared.swarm import IMAGE, NETWORK, Node, engine_node, load_image, run_engine

ENGINE = "socklab-hairpin-engine"
BRIDGE = "hairpin"
ECHO_PORT, QUERY_PORT = 7007, 5556
ENV = {"SOCKLAB_COLLECTOR": "tcp://collector:5555", "SOCKLAB_REGISTRY": "registry:5300", "SOCKLAB_UNIX_PATH": ""}
READY = {"/run/socklab-ready": "mode=1777"}
KEYS_VOLUME, KEYS_MOUNT = "socklab-hairpin-keys", "/run/socklab-keys"  # the engine's stack's keys (shared.curve)


def start_service(node: Node, service: str, **options: object) -> Container:
    """One socklab service on the engine's bridge, its ready file on a tmpfs; once it is ready."""
    container = node.engine.containers.run(
        IMAGE,
        ["socklab", service],
        name=service,
        network=BRIDGE,
        environment={**ENV, "SOCKLAB_SERVICE": service, "SOCKLAB_NODE": node.name},
        tmpfs=READY,
        volumes={KEYS_VOLUME: {"bind": KEYS_MOUNT, "mode": "rw" if service == "collector" else "ro"}},
        init=True,
        detach=True,
        **options,
    )
    ready = ["test", "-f", f"/run/socklab-ready/{service}"]
    wait_for(lambda: container.exec_run(ready)[0] == 0, f"{service} ready on {node.name}", timeout=30, interval=0.2)
    return container


def engine_report(node: Node, keys: str) -> Report:
    """The engine's collector's report, over its published query port, with the host's keys."""
    with zmq.Context() as context:
        endpoint = f"tcp://{node.address}:{QUERY_PORT}"
        return Report.from_wire(query_collector(context, endpoint, {"op": str(QueryOp.REPORT)}, keys=keys))


def evidence_of(node: Node, flow: Flow, echo_ip: str) -> dict[str, object]:
    """The engine's own account: its command line, no docker-proxy running, its DNAT rule; echo's address."""
    rules = node.container.exec_run(["iptables", "-t", "nat", "-S", "DOCKER"])[1].decode()
    proxies = node.container.exec_run(["pgrep", "-a", "docker-proxy"])
    return {
        "engine": f"{node.name}: {' '.join(node.container.attrs['Args'])}",
        "echo": echo_ip,
        "docker-proxy": "none running" if proxies[0] != 0 else proxies[1].decode().strip(),
        "engine DNAT rule": [
            line for line in rules.splitlines() if f"-p {flow.proto} -m {flow.proto} --dport {ECHO_PORT}" in line
        ],
    }


def run_hairpin_without_proxy(host: DockerClient) -> list[CaseFlow]:
    """A client on the engine's bridge talks to echo at the bridge's gateway, tcp then udp; both ends and the DNAT."""
    node = engine_node(run_engine(host, ENGINE, "engine-noproxy", "hairpin-engine", userland_proxy=False))
    keys = tempfile.mkdtemp(prefix="socklab-hairpin-keys-")
    try:
        load_image(host, [node])
        bridge = node.engine.networks.create(BRIDGE, driver="bridge")
        bridge.reload()
        gateway = str(bridge.attrs["IPAM"]["Config"][0]["Gateway"])
        collector = start_service(node, "collector", ports={f"{QUERY_PORT}/tcp": QUERY_PORT})
        fetch_host_keys(collector, Path(keys))
        start_service(node, "registry")
        published = {f"{ECHO_PORT}/{proto}": (gateway, ECHO_PORT) for proto in ("tcp", "udp")}
        echo = start_service(node, "echo", ports=published)
        echo.reload()
        echo_ip = str(echo.attrs["NetworkSettings"]["Networks"][BRIDGE]["IPAddress"])
        rows = []
        for proto in ("tcp", "udp"):
            command = ["socklab", "client", "--json", "--scenario", proto, "--echo", f"{gateway}:{ECHO_PORT}"]
            environment = {**ENV, "SOCKLAB_SERVICE": "client", "SOCKLAB_NODE": node.name}
            volumes = {KEYS_VOLUME: {"bind": KEYS_MOUNT, "mode": "ro"}}
            output = node.engine.containers.run(
                IMAGE, command, network=BRIDGE, environment=environment, volumes=volumes, remove=True
            )
            [outcome] = parse_json_lines(output.decode())
            flow = wait_for(partial(complete, node, keys, outcome["flow"]), f"flow {outcome['flow']}", 10, 0.2)
            rewriter = "docker-dnat (the engine's kernel DNAT: --userland-proxy=false, hairpin mode on its bridge)"
            step = f"client -> {gateway}:{ECHO_PORT} (no proxy)"
            rows.append(CaseFlow("hairpin", step, flow, rewriter, evidence_of(node, flow, echo_ip)))
        return rows
    finally:
        shutil.rmtree(keys, ignore_errors=True)
        node.container.remove(force=True, v=True)
        with contextlib.suppress(APIError):  # the swarm's nodes may still use it
            host.networks.get(NETWORK).remove()


def complete(node: Node, keys: str, flow_id: str) -> Flow | None:
    """A flow once the engine's collector holds both of its ends."""
    flow = engine_report(node, keys).flow(flow_id)
    return flow if flow is not None and flow.complete else None
