"""The stack under test and the independent truth about it: Docker's own view and the router's conntrack."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from docker.models.containers import Container
from testcontainers.compose import DockerCompose
from testcontainers.core.container import DockerContainer

import docker
from shared.collector_protocol import QueryOp, query_collector
from shared.names import unmap_host
from shared.report_model import Flow, Report
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("SOCKLAB_TEST_PROJECT", "socklab-test")
IMAGE = "socklab:latest"
PROBE_LABEL = "socklab.test.probe"
GO_FILE = "/tmp/socklab-go"
SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT_DIR = "/tmp"


@dataclass(frozen=True)
class ConntrackEntry:
    """One line of `conntrack -L`: the original direction and the reply direction."""

    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str
    reply_dst: str
    reply_sport: int
    reply_dport: int

    @property
    def translated_source(self) -> tuple[str, int]:
        """Where the NAT made the original source appear: the reply's destination."""
        return self.reply_dst, self.reply_dport


CONNTRACK_TUPLE = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")


def parse_conntrack(text: str) -> list[ConntrackEntry]:
    """Read TCP and UDP entries from `conntrack -L` or /proc/net/nf_conntrack."""
    entries = []
    for line in text.splitlines():
        tuples = CONNTRACK_TUPLE.findall(line)
        proto = next((word for word in line.split() if word in ("tcp", "udp")), None)
        if len(tuples) != 2 or proto is None:
            continue
        (src, dst, sport, dport), (rsrc, rdst, rsport, rdport) = tuples
        entries.append(ConntrackEntry(proto, src, dst, int(sport), int(dport), rsrc, rdst, int(rsport), int(rdport)))
    return entries


def only(entries: list[ConntrackEntry], what: str) -> ConntrackEntry:
    """The one conntrack entry a flow must have; fail showing what was found instead."""
    assert len(entries) == 1, f"expected one conntrack entry for {what}, found {entries}"
    return entries[0]


def same_host(a: str, b: str) -> bool:
    """Compare hosts as addresses, IPv4-mapped names unmapped."""
    return ipaddress.ip_address(unmap_host(a)) == ipaddress.ip_address(unmap_host(b))


class Stack:
    """The compose stack from docker-compose.yml, brought up by testcontainers, and ways to question it."""

    def __init__(self) -> None:
        self.docker = docker.from_env()
        self.compose = DockerCompose(
            context=str(ROOT),
            compose_file_name="docker-compose.yml",
            docker_command_path=str(ROOT / "docker" / "compose"),
            wait=False,
        )
        self.context = zmq.Context()

    def start(self) -> Stack:
        """Bring the stack up and wait until every service is ready, as `make up` does."""
        os.environ["COMPOSE_PROJECT_NAME"] = PROJECT
        self.refuse_overlap()
        self.remove_leftovers()
        self.compose.start()
        self.exec("collector", "socklab", "health", *self.compose.get_config()["services"])
        return self

    def remove_leftovers(self) -> None:
        """Take away what a killed earlier run could not: its probes and its compose project."""
        for probe in self.docker.containers.list(all=True, filters={"label": PROBE_LABEL}):
            probe.remove(force=True)
        self.compose.stop(down=True)

    def stop(self) -> None:
        """Remove probes, containers, networks and volumes, whatever state the tests left."""
        self.remove_leftovers()
        self.context.term()

    def refuse_overlap(self) -> None:
        """Fail clearly when another socklab stack already holds the subnets (run `make down`)."""
        for net in self.docker.networks.list():
            owner = net.attrs.get("Labels", {}).get("com.docker.compose.project")
            if owner and owner.startswith("socklab") and owner != PROJECT:
                raise RuntimeError(f"network {net.name} of stack {owner!r} holds socklab's subnets: run `make down`")

    def container(self, service: str) -> Container:
        """The compose service's container."""
        labels = [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]
        found = self.docker.containers.list(filters={"label": labels})
        assert len(found) == 1, f"expected one {service} container, found {len(found)}"
        return found[0]

    def network_name(self, network: str) -> str:
        return f"{PROJECT}_{network}"

    def endpoint(self, service: str, network: str) -> dict[str, Any]:
        """Docker's record of a container on a network: addresses and gateway."""
        container = self.container(service)
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][self.network_name(network)]

    def ip(self, service: str, network: str, version: int = 4) -> str:
        """The container's address on a network, as Docker assigned it."""
        ep = self.endpoint(service, network)
        return ep["IPAddress"] if version == 4 else ep["GlobalIPv6Address"]

    def published_port(self, service: str, port: str, host_ip: str = "127.0.0.1") -> int:
        """The host port Docker published a container port on (e.g. '7007/udp') at a host address."""
        container = self.container(service)
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"][port]
        return int(next(b["HostPort"] for b in bindings if b["HostIp"] == host_ip))

    def query(self) -> Report:
        """The collector's report, asked over its published REP port."""
        endpoint = f"tcp://127.0.0.1:{self.published_port('collector', '5556/tcp')}"
        return Report.from_wire(query_collector(self.context, endpoint, {"op": str(QueryOp.REPORT)}))

    def try_query(self) -> Report | None:
        """The collector's report, or None while it does not answer (restarting)."""
        try:
            return self.query()
        except (TimeoutError, KeyError, IndexError, TypeError):
            return None

    def ingest_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.published_port('collector', '5555/tcp')}"

    def wait_for_flow(self, flow_id: str, timeout: float = 10.0, both_ends: bool = True) -> Flow:
        """Poll the collector until it holds a flow, complete unless `both_ends` is False."""
        return wait_for(lambda: self.find_flow(flow_id, both_ends), f"flow {flow_id} in the collector", timeout, 0.1)

    def find_flow(self, flow_id: str, both_ends: bool = True) -> Flow | None:
        """The collector's flow with this id, if it has it (and it is complete, unless `both_ends` is False)."""
        flow = self.query().flow(flow_id)
        return flow if flow is not None and (flow.complete or not both_ends) else None

    def exec(self, service: str, *command: str, user: str = "socklab") -> str:
        """Run a command in a service's container; fail the test with its output if it fails."""
        code, output = self.container(service).exec_run(list(command), user=user)
        text = output.decode(errors="replace")
        assert code == 0, f"{' '.join(command)} in {service} exited {code}:\n{text}"
        return text

    def run_script(self, service: str, script: str, *args: str) -> str:
        """Copy a script from tests/integration/scripts into a service's container and run it with python3 there."""
        path = SCRIPTS / script
        data = path.read_bytes()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(path.name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        assert self.container(service).put_archive(SCRIPT_DIR, archive.getvalue()), f"{script} not copied"
        return self.exec(service, "python3", f"{SCRIPT_DIR}/{path.name}", *args)

    def run_client(self, service: str, *args: str) -> list[dict[str, Any]]:
        """Run `socklab client --json` in a client container; one dict per flow it ran."""
        return parse_json_lines(self.exec(service, "socklab", "client", "--json", *args))

    def conntrack(self, *args: str) -> list[ConntrackEntry]:
        """The router's conntrack table: the kernel's own record of every translation."""
        return parse_conntrack(self.exec("router", "conntrack", "-L", *args, user="root"))

    @contextmanager
    def lan_probe(self, command: str, name: str) -> Iterator[DockerContainer]:
        """A throwaway container on lan (routed through the router) and ctl; its command waits for release()."""
        router = self.ip("router", "lan")
        script = (
            f"ip route replace default via {router} && "
            f"until getent hosts collector >/dev/null && [ -e {GO_FILE} ]; do sleep 0.05; done && "
            f"exec setpriv --reuid=socklab --regid=socklab --init-groups {command}"
        )
        probe = (
            DockerContainer(IMAGE)
            .with_command(["sh", "-c", script])
            .with_env("SOCKLAB_SERVICE", name)
            .with_env("SOCKLAB_COLLECTOR", "tcp://collector:5555")
            .with_kwargs(
                network=self.network_name("lan"),
                cap_add=["NET_ADMIN"],
                user="root",
                labels={PROBE_LABEL: "1"},
                hostname=name,
            )
        )
        with probe:
            self.docker.networks.get(self.network_name("ctl")).connect(probe.get_wrapped_container().id)
            yield probe

    @staticmethod
    def release(probe: DockerContainer) -> None:
        """Let a probe's command start, so several probes can act at once."""
        code, output = probe.get_wrapped_container().exec_run(["touch", GO_FILE])
        assert code == 0, output


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """Take the JSON objects out of mixed output (log lines go to stderr but exec_run merges them)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
