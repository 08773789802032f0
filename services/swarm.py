"""socklab swarm: socklab on a Docker Swarm whose nodes are Docker engines in containers on this host.

  up [--nodes N]  start N nodes, form the swarm, load socklab's image into each, deploy the stack derived
                  from docker-compose.yml (shared.swarm_stack), wait for health, run the cases
                  (services.swarm_cases) and print their flows with both ends' nodes; each step timed
  cases           run the cases again
  report [ARGS]   `socklab report ARGS` in the collector's task
  stack           print the stack file, for `docker stack deploy` on real hosts
  down            remove every node, network and volume `up` made
Runs on the Docker host, from the checkout's .venv (make swarm-up, swarm-report, swarm-down).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zmq
from docker.client import DockerClient
from docker.errors import DockerException

from services.report import format_flows
from services.swarm_cases import CaseResult, Placement, run_cases
from shared.collector_protocol import QueryOp, query_collector
from shared.curve import HOST, make_keys
from shared.docker_host import engine_name
from shared.polling import wait_for
from shared.report_model import Flow, Report
from shared.stack import COMPOSE_FILE, compose_command
from shared.swarm import (
    IMAGE,
    LABEL,
    NETWORK,
    Node,
    deploy,
    find_nodes,
    form_swarm,
    ipvs_missing,
    label_nodes,
    load_image,
    remove,
    start_nodes,
    wait_healthy,
)
from shared.swarm_stack import NODE_KEYS, derive_stack

HEALTH_TIMEOUT = 120.0
INGEST_PORT, QUERY_PORT, ECHO_PORT = 5555, 5556, 7007
OUTSIDE = "socklab-swarm-outside"
FOLLOWER = "socklab-node-conntrack"
HOST_KEYS = Path(tempfile.gettempdir()) / "socklab-swarm-keys"  # the swarm's keys on this host, while it is up
KEYS_MOUNT = "/run/socklab-keys"  # where socklab's image reads them (SOCKLAB_KEYS' default)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Print how long a step of `up` took."""
    start = time.monotonic()
    yield
    print(f"swarm: {what} in {time.monotonic() - start:.1f} s", flush=True)


def stack_json() -> str:
    """The stack file: docker-compose.yml as Compose reads it, derived for a swarm."""
    command = [*compose_command(COMPOSE_FILE), "--file", str(COMPOSE_FILE), "config", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
    return json.dumps(derive_stack(json.loads(done.stdout)), indent=2)


def seed_keys(nodes: list[Node]) -> None:
    """Make the swarm's CurveZMQ keys on this host and copy them into every node (the stack mounts them there)."""
    shutil.rmtree(HOST_KEYS, ignore_errors=True)
    make_keys(HOST_KEYS)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(HOST_KEYS, arcname=".")
    for node in nodes:
        code, output = node.container.exec_run(["mkdir", "-p", NODE_KEYS])
        if code != 0 or not node.container.put_archive(NODE_KEYS, archive.getvalue()):
            raise RuntimeError(f"the swarm's keys could not be copied into {node.name}: {output.decode()}")


def start_outside(host: DockerClient, placement: Placement) -> str:
    """An echo outside the swarm, on the nodes' network, reporting through the collector's node; its address."""
    collector, registry = placement.node_of("collector"), placement.node_of("registry")
    container = host.containers.run(
        IMAGE,
        ["socklab", "echo"],
        name=OUTSIDE,
        hostname="outside",
        network=NETWORK,
        labels={LABEL: "outside"},
        volumes={str(HOST_KEYS): {"bind": KEYS_MOUNT, "mode": "ro"}},
        environment={
            "SOCKLAB_SERVICE": "outside-echo",
            "SOCKLAB_NODE": engine_name(host),
            "SOCKLAB_COLLECTOR": f"tcp://{collector.address}:{INGEST_PORT}",
            "SOCKLAB_REGISTRY": f"{registry.address}:5300",
            "SOCKLAB_UNIX_PATH": "",
        },
        tmpfs={"/run/socklab-ready": "mode=1777"},
        init=True,
        detach=True,
    )
    wait_for(lambda: container.exec_run(["test", "-f", "/run/socklab-ready/outside-echo"])[0] == 0, "outside echo", 30)
    container.reload()
    return str(container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])


def start_followers(nodes: list[Node], collector: Node) -> None:
    """On every node, a container in the node's own network namespace streaming its conntrack events."""
    for node in nodes:
        node.engine.containers.run(
            IMAGE,
            ["socklab", "node-conntrack"],
            name=FOLLOWER,
            network_mode="host",
            cap_add=["NET_ADMIN"],
            user="root",
            volumes={NODE_KEYS: {"bind": KEYS_MOUNT, "mode": "ro"}},
            environment={
                "SOCKLAB_SERVICE": node.name,
                "SOCKLAB_NODE": node.name,
                "SOCKLAB_COLLECTOR": f"tcp://{collector.address}:{INGEST_PORT}",
            },
            detach=True,
        )


def collector_report(collector: Node) -> Report:
    """The collector's report, asked over its node's published query port."""
    with zmq.Context() as context:
        endpoint = f"tcp://{collector.address}:{QUERY_PORT}"
        query = {"op": str(QueryOp.REPORT)}
        return Report.from_wire(query_collector(context, endpoint, query, keys=str(HOST_KEYS / HOST)))


def case_flows(collector: Node, results: list[CaseResult], timeout: float = 15.0) -> list[Flow]:
    """The cases' flows once the collector holds both ends of each."""
    wanted = [outcome["flow"] for result in results for outcome in result.outcomes]

    def joined() -> list[Flow] | None:
        report = collector_report(collector)
        flows = [report.flow(flow) for flow in wanted]
        return [f for f in flows if f] if all(f is not None and f.complete for f in flows) else None

    return wait_for(joined, "every case's flow joined in the collector", timeout, 0.25)


def print_cases(collector: Node, results: list[CaseResult]) -> None:
    """Each case's flows, with both ends' nodes and views, and the cases this host cannot run."""
    print("\n".join(format_flows(case_flows(collector, results), wide=True)))
    for result in results:
        if result.unavailable:
            print(f"{result.case.name}: {result.unavailable}")


def placement(host: DockerClient, nodes: list[Node]) -> Placement:
    """Where everything runs now."""
    outside = host.containers.get(OUTSIDE)
    address = str(outside.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])
    return Placement(wait_healthy(nodes, HEALTH_TIMEOUT), address)


@dataclass(frozen=True)
class SwarmUp:
    """A swarm that is up: its nodes, where everything runs, and what its cases found."""

    nodes: list[Node]
    placement: Placement
    results: list[CaseResult]


def bring_up(host: DockerClient, count: int, userland_proxy: bool = True) -> SwarmUp:
    """Start the nodes, form the swarm, deploy, wait for health, then run the cases; say how long each step took."""
    if find_nodes(host):
        raise RuntimeError("nodes are up already (make swarm-down first)")
    start, stack = time.monotonic(), stack_json()
    with step(f"{count} nodes' engines answer"):
        nodes = start_nodes(host, count, userland_proxy)
    with step("swarm formed and nodes labelled"):
        form_swarm(nodes)
        label_nodes(nodes)
        seed_keys(nodes)
    with step(f"{IMAGE} loaded into {count} nodes"):
        load_image(host, nodes)
    with step("stack deployed and every task healthy"):
        deploy(nodes[0], stack)
        where = Placement(wait_healthy(nodes, HEALTH_TIMEOUT), "")
    with step("the nodes' conntrack followers and the outside echo started"):
        start_followers(nodes, where.node_of("collector"))
        where = Placement(where.tasks, start_outside(host, where))
    print("swarm: " + ", ".join(f"{s} on {where.node_of(s).name}" for s in where.tasks), flush=True)
    if reason := ipvs_missing():
        print(f"swarm: {reason}: the vip and ingress cases are unavailable", flush=True)
    print(f"swarm up in {time.monotonic() - start:.1f} s", flush=True)
    return SwarmUp(nodes, where, run_cases(where))


def main(argv: list[str] | None = None) -> None:
    """Bring the swarm up, question it, or take it down."""
    parser = argparse.ArgumentParser(prog="socklab swarm", description=main.__doc__)
    parser.add_argument("action", choices=("up", "down", "cases", "report", "stack"))
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (up)")
    parser.add_argument("--no-userland-proxy", action="store_true", help="nodes' engines without docker-proxy")
    args, rest = parser.parse_known_args(argv)
    if args.action == "stack":
        print(stack_json())
        return
    try:
        host = DockerClient.from_env()
        if args.action == "up":
            swarm = bring_up(host, args.nodes, not args.no_userland_proxy)
            print_cases(swarm.placement.node_of("collector"), swarm.results)
        elif args.action == "down":
            removed = remove(host)
            shutil.rmtree(HOST_KEYS, ignore_errors=True)
            print(f"swarm: removed {len(removed)}: {', '.join(removed) or 'nothing was up'}")
        elif args.action == "cases":
            where = placement(host, find_nodes(host))
            print_cases(where.node_of("collector"), run_cases(where))
        else:
            _, collector = wait_healthy(find_nodes(host), HEALTH_TIMEOUT)["collector"]
            code, output = collector.exec_run(["socklab", "report", *rest], user="socklab")
            print(output.decode(errors="replace"), end="")
            sys.exit(code)
    except (DockerException, RuntimeError, StopIteration) as exc:
        sys.exit(f"socklab swarm {args.action}: {exc}")
