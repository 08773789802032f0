"""A Docker Swarm of simulated nodes: Docker engines in containers on this host, on a network of their own.

The host's docker package drives every node's engine over TCP on that network (port 2375, no TLS: the
network is this host's bridge and nothing else is on it). The same stack file runs on real hosts: see
README.md, "socklab on a Docker Swarm". The test host runs this; no service imports it.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from docker.client import DockerClient
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from requests.exceptions import RequestException

from shared.polling import wait_for
from shared.swarm_stack import SWARM_SERVICES, placement_label

log = logging.getLogger(__name__)
Placed = TypeVar("Placed")

IMAGE = "socklab:latest"
NODE_IMAGE = "socklab/node:latest"
NETWORK = "socklab-swarm"
SUBNET = "172.31.250.0/24"
LABEL = "socklab.swarm"
STACK = "socklab"
ENGINE_PORT = 2375
ENGINE_API = "1.41"  # Docker 20.10's, Debian bookworm's docker.io: no version question before the engine is up
SWARM_PORT = 2377
STACK_FILE = "/tmp/socklab-stack.json"
IPVS = Path("/proc/sys/net/ipv4/vs")
# What a Docker engine needs to run in a container here: every capability but the one the host's engine
# lacks (--privileged fails), no seccomp or AppArmor filter, its own /run, and the cgroup tree.
NODE_HOST_CONFIG: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "tmpfs": {"/run": "", "/var/run": ""},
    "binds": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
}


@dataclass(frozen=True)
class Node:
    """One simulated host: its container on this host, its address on the nodes' network, its own engine."""

    name: str
    container: Container
    address: str
    engine: DockerClient


def node_command(userland_proxy: bool) -> list[str]:
    """dockerd with an API on the nodes' network; its storage driver is dockerd's own choice for the volume."""
    return [
        "dockerd",
        "--host=unix:///var/run/docker.sock",
        f"--host=tcp://0.0.0.0:{ENGINE_PORT}",
        "--tls=false",
        f"--userland-proxy={str(userland_proxy).lower()}",
    ]


def ipvs_missing() -> str | None:
    """Why the service VIP and the ingress routing mesh cannot forward here, or None where the kernel has IPVS."""
    if IPVS.exists():
        return None
    return f"no IPVS in this kernel ({IPVS} absent): a service VIP and the ingress routing mesh do not forward"


def node_address(container: Container) -> str:
    """A node's address on the nodes' network, as the host's Docker tells it."""
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])


def engine_at(address: str) -> DockerClient:
    """A client of a node's engine."""
    return DockerClient(base_url=f"tcp://{address}:{ENGINE_PORT}", version=ENGINE_API, timeout=120)


def answers(engine: DockerClient) -> bool:
    """Whether an engine answers yet."""
    try:
        return bool(engine.ping())
    except (DockerException, RequestException):
        return False


def ensure_network(host: DockerClient) -> None:
    """The nodes' own bridge network on this host."""
    if not host.networks.list(names=[NETWORK]):
        ipam = {"Driver": "default", "Config": [{"Subnet": SUBNET}]}
        host.api.create_network(NETWORK, driver="bridge", ipam=ipam, labels={LABEL: "network"})


def run_engine(host: DockerClient, name: str, hostname: str, role: str, userland_proxy: bool = True) -> Container:
    """A Docker engine in a container on the nodes' network; without its userland proxy it must set sysctls."""
    ensure_network(host)
    host_config = host.api.create_host_config(network_mode=NETWORK, **NODE_HOST_CONFIG)
    if not userland_proxy:  # dockerd then sets route_localnet on its bridges: /proc/sys must be writable
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])  # what `--security-opt systempaths=unconfined` sends
    created = host.api.create_container(
        NODE_IMAGE,
        node_command(userland_proxy),
        name=name,
        hostname=hostname,
        labels={LABEL: role},
        host_config=host_config,
    )
    container = host.containers.get(created["Id"])
    container.start()
    return container


def engine_node(container: Container) -> Node:
    """An engine container as a Node, once its engine answers."""
    address = node_address(container)
    engine = engine_at(address)
    wait_for(partial(answers, engine), f"{container.name}'s engine", timeout=60, interval=0.2)
    return Node(str(container.attrs["Config"]["Hostname"]), container, address, engine)


def start_nodes(host: DockerClient, count: int, userland_proxy: bool = True) -> list[Node]:
    """Start `count` engines in containers (node1, node2, ...) and wait until each answers."""
    containers = [
        run_engine(host, f"socklab-swarm-node{i}", f"node{i}", "node", userland_proxy) for i in range(1, count + 1)
    ]
    return [engine_node(container) for container in containers]


def find_nodes(host: DockerClient) -> list[Node]:
    """The running nodes, node1 first."""
    containers = host.containers.list(filters={"label": f"{LABEL}=node"})
    nodes = [
        Node(str(c.attrs["Config"]["Hostname"]), c, node_address(c), engine_at(node_address(c))) for c in containers
    ]
    return sorted(nodes, key=lambda n: int(n.name.removeprefix("node")))


def form_swarm(nodes: list[Node]) -> None:
    """node1 inits the swarm and manages it; the others join as workers."""
    manager = nodes[0]
    manager.engine.swarm.init(advertise_addr=manager.address, listen_addr=f"{manager.address}:{SWARM_PORT}")
    manager.engine.swarm.reload()
    token = manager.engine.swarm.attrs["JoinTokens"]["Worker"]
    for node in nodes[1:]:
        node.engine.swarm.join(
            remote_addrs=[f"{manager.address}:{SWARM_PORT}"],
            join_token=token,
            advertise_addr=node.address,
            listen_addr=f"{node.address}:{SWARM_PORT}",
        )


def placements(nodes: Sequence[Placed]) -> dict[str, Placed]:
    """Where each service runs: in turn over the nodes, so client, echo and registry never share one."""
    return {service: nodes[i % len(nodes)] for i, service in enumerate(SWARM_SERVICES)}


def label_nodes(nodes: list[Node]) -> dict[str, Node]:
    """Label each node for the services placed on it (what `docker node update --label-add` does)."""
    placed = placements(nodes)
    by_name = {node.name: node for node in nodes}
    for swarm_node in nodes[0].engine.nodes.list():
        name = swarm_node.attrs["Description"]["Hostname"]
        spec = swarm_node.attrs["Spec"]
        spec["Labels"] = {placement_label(s): "true" for s, n in placed.items() if n is by_name[name]}
        swarm_node.update(spec)
    return placed


def load_image(host: DockerClient, nodes: list[Node], image: str = IMAGE) -> None:
    """`docker save` once, then `docker load` into every node at the same time."""
    with tempfile.NamedTemporaryFile(prefix="socklab-image-", suffix=".tar") as saved:
        for chunk in host.images.get(image).save(named=True):
            saved.write(chunk)
        saved.flush()

        def load(node: Node) -> None:
            with open(saved.name, "rb") as tar:
                node.engine.images.load(tar)

        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(load, nodes))


def deploy(manager: Node, stack_json: str) -> str:
    """`docker stack deploy` on the manager, with the manager's own docker CLI; its output."""
    manager.container.put_archive("/tmp", tar_of(Path(STACK_FILE).name, stack_json.encode()))
    command = ["docker", "stack", "deploy", "--resolve-image", "never", "--compose-file", STACK_FILE, STACK]
    code, output = manager.container.exec_run(command)
    text = output.decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}: {text}")
    return text


def tar_of(name: str, data: bytes) -> bytes:
    """A one-file tar archive, as put_archive takes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def task_of(nodes: list[Node], service: str) -> tuple[Node, Container] | None:
    """The node running a service's task and the task's container there, once it runs."""
    by_id = {n.attrs["ID"]: n.attrs["Description"]["Hostname"] for n in nodes[0].engine.nodes.list()}
    tasks = nodes[0].engine.services.get(f"{STACK}_{service}").tasks(filters={"desired-state": "running"})
    for task in tasks:
        status = task.get("Status", {})
        container_id = status.get("ContainerStatus", {}).get("ContainerID")
        if status.get("State") == "running" and container_id:
            node = next(n for n in nodes if n.name == by_id[task["NodeID"]])
            return node, node.engine.containers.get(container_id)
    return None


def healthy_task(nodes: list[Node], service: str) -> tuple[Node, Container] | None:
    """A service's task once its container's health check passes."""
    try:
        found = task_of(nodes, service)
    except (NotFound, APIError):
        return None
    if found is None:
        return None
    _, container = found
    return found if container.attrs["State"].get("Health", {}).get("Status") == "healthy" else None


def wait_healthy(nodes: list[Node], timeout: float) -> dict[str, tuple[Node, Container]]:
    """Every service's task, running and healthy, and where."""
    return {
        service: wait_for(partial(healthy_task, nodes, service), f"{service} healthy", timeout, interval=0.5)
        for service in SWARM_SERVICES
    }


def remove(host: DockerClient) -> list[str]:
    """Remove every container (with its volumes), then network the swarm made on this host; the nodes held the rest."""
    containers = host.containers.list(all=True, filters={"label": LABEL})
    if containers:
        with ThreadPoolExecutor(len(containers)) as pool:
            list(pool.map(lambda c: c.remove(force=True, v=True), containers))
    networks = host.networks.list(filters={"label": LABEL})
    for network in networks:
        network.remove()
    removed = [f"container {c.name}" for c in containers] + [f"network {n.name}" for n in networks]
    log.debug("removed %s", removed)
    return removed
