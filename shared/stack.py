"""A socklab stack on this host's Docker, and ways to question it: the one handle socklab's pytest
plugin (shared.pytest_plugin) gives other projects' tests and socklab's own integration tests use.

The test host runs this; no service imports it. Docker answers every address question (`docker
inspect`), the collector every question about what the two ends of a flow saw.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import zmq
from docker.client import DockerClient
from docker.models.containers import Container

from shared.collector_protocol import QueryOp, query_collector
from shared.conntrack import ConntrackEntry, parse_conntrack
from shared.docker_host import fetch_host_keys, keys_volume
from shared.names import format_name
from shared.polling import wait_for
from shared.report_model import Flow, NatCheckResult, Report

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = CHECKOUT / "docker-compose.yml"
# TOPOLOGY=cgn: a carrier-grade NAT, a home router behind it and two clients, added to the stack's file.
CGN_FILE = CHECKOUT / "docker-compose.cgn.yml"
IMAGE = "socklab:latest"
PROBE_LABEL = "socklab.probe"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
# What a container needs in its environment to report to the stack's collector and find its registry.
REPORTING_ENV = ("SOCKLAB_COLLECTOR", "SOCKLAB_QUERY", "SOCKLAB_REGISTRY")


class Wrapper(Protocol):
    """A testcontainers DockerContainer, or anything else that hands out its docker Container."""

    def get_wrapped_container(self) -> Container:
        """The docker Container behind the wrapper."""


Who: TypeAlias = "str | Container | Wrapper"


class Plan(StrEnum):
    """What a session does with Docker: attach to a running stack, or start one (and take it down after)."""

    ATTACH = "attach"
    START = "start"


def choose_plan(project: str, attach: str | None, held: dict[str, bool]) -> tuple[Plan, str]:
    """Attach where asked or where the project is already up; start only where no other stack holds the subnets.

    `held` maps every socklab compose project that has networks on this host to whether its collector runs.
    """
    if attach:
        if not held.get(attach):
            raise RuntimeError(f"SOCKLAB_ATTACH={attach}: no socklab stack of that project is up (found {held})")
        return Plan.ATTACH, attach
    if held.get(project):
        return Plan.ATTACH, project
    others = sorted(owner for owner in held if owner != project)
    if others:
        raise RuntimeError(
            f"stack {others[0]!r} holds socklab's subnets: run `make down`, or use it with SOCKLAB_ATTACH={others[0]}"
        )
    return Plan.START, project


def held_projects(client: DockerClient, project: str) -> dict[str, bool]:
    """Every socklab compose project with networks on this host, and whether its collector runs."""
    held = {}
    for net in client.networks.list(filters={"label": PROJECT_LABEL}):
        owner = net.attrs["Labels"][PROJECT_LABEL]
        if owner.startswith("socklab") or owner == project:
            held[owner] = False
    for collector in client.containers.list(filters={"label": f"{SERVICE_LABEL}=collector"}):
        if collector.labels.get(PROJECT_LABEL) in held:
            held[collector.labels[PROJECT_LABEL]] = True
    return held


def compose_command(compose_file: Path) -> list[str]:
    """Docker Compose v2: the checkout's docker/compose (it finds one on any host), else Docker's plugin."""
    wrapper = compose_file.parent / "docker" / "compose"
    return [str(wrapper)] if wrapper.is_file() else ["docker", "compose"]


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """Take the JSON objects out of mixed output (log lines go to stderr but exec_run merges them)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class Stack:
    """A socklab compose project on this host: started here or attached to, and questioned through Docker."""

    def __init__(self, project: str, compose_file: Path = COMPOSE_FILE, overrides: tuple[Path, ...] = ()) -> None:
        self.project, self.compose_file, self.overrides = project, compose_file, overrides
        self.docker = DockerClient.from_env()
        self.context = zmq.Context()
        self.started = False

    @classmethod
    def open(cls, project: str, attach: str | None = None, compose_file: Path = COMPOSE_FILE) -> Stack:
        """The stack a session uses: `attach` if given, `project` if already up, else `project` started now."""
        plan, chosen = choose_plan(project, attach, held_projects(DockerClient.from_env(), project))
        stack = cls(chosen, compose_file)
        try:
            if plan == Plan.START:
                stack.start()
            stack.wait_ready()
            stack.ask(QueryOp.PING)
        except BaseException:
            stack.stop()
            raise
        log.info("socklab stack %s: %s", chosen, plan)
        return stack

    def compose(self, *args: str) -> str:
        """Run Docker Compose on the stack's file and project and return its output; fail with what it said."""
        command = [*compose_command(self.compose_file), "--project-name", self.project]
        command += [arg for path in (self.compose_file, *self.overrides) for arg in ("--file", str(path))]
        command += args
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> Stack:
        """Bring the stack up from its compose file (readiness is wait_ready's, as in `make up`)."""
        self.started = True
        self.remove_leftovers()
        self.compose("up", "--detach", "--no-build")
        return self

    def wait_ready(self) -> None:
        """Wait until every service has said it is ready (services/health.py), as `make up` does."""
        self.exec("collector", "socklab", "health", *self.compose("config", "--services").split())

    def remove_leftovers(self) -> None:
        """Take away what a killed earlier run could not: its probes and, if this session starts it, the project."""
        for probe in self.docker.containers.list(all=True, filters={"label": f"{PROBE_LABEL}={self.project}"}):
            probe.remove(force=True)
        if self.started:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")

    def stop(self) -> None:
        """Remove this session's probes, and the stack with its networks and volumes if this session started it."""
        try:
            self.remove_leftovers()
        finally:
            self.context.term()
            if "keys" in self.__dict__:
                shutil.rmtree(self.keys, ignore_errors=True)

    @cached_property
    def keys(self) -> str:
        """The host's CurveZMQ keys for this stack (shared.curve), copied from its collector to a private directory."""
        directory = tempfile.mkdtemp(prefix=f"socklab-keys-{self.project}-")
        return str(fetch_host_keys(self.container("collector"), Path(directory)))

    def member_volumes(self) -> dict[str, dict[str, str]]:
        """The volumes a container of yours mounts to report as a stack member: the stack's keys, read-only."""
        return keys_volume(self.container("collector"))

    def container(self, who: Who) -> Container:
        """A compose service's container by name, or the docker Container behind one of yours."""
        if isinstance(who, Container):
            return who
        if not isinstance(who, str):
            return who.get_wrapped_container()
        labels = [f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={who}"]
        found = self.docker.containers.list(filters={"label": labels})
        assert len(found) == 1, f"expected one {who} container in {self.project}, found {len(found)}"
        return found[0]

    def network_name(self, network: str) -> str:
        """Docker's name for one of the stack's networks (lan, wan, ctl)."""
        return f"{self.project}_{network}"

    def endpoint(self, who: Who, network: str) -> dict[str, Any]:
        """Docker's record of a container on a stack network: addresses and gateway."""
        container = self.container(who)
        container.reload()
        return container.attrs["NetworkSettings"]["Networks"][self.network_name(network)]

    def ip(self, who: Who, network: str, version: int = 4) -> str:
        """A container's address on a stack network, as Docker assigned it."""
        ep = self.endpoint(who, network)
        return ep["IPAddress"] if version == 4 else ep["GlobalIPv6Address"]

    def published_port(self, service: str, port: str, host_ip: str = "127.0.0.1") -> int:
        """The host port Docker published a container port on (e.g. '7007/udp') at a host address."""
        container = self.container(service)
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"][port]
        return int(next(b["HostPort"] for b in bindings if b["HostIp"] == host_ip))

    def ask(self, op: QueryOp, **fields: Any) -> dict[str, Any]:
        """Ask the collector over its published REP port (shared.collector_protocol), with the host's keys."""
        endpoint = f"tcp://127.0.0.1:{self.published_port('collector', '5556/tcp')}"
        return query_collector(self.context, endpoint, {"op": str(op), **fields}, keys=self.keys)

    def report(self) -> Report:
        """The collector's report: every joined flow and NAT check, typed."""
        return Report.from_wire(self.ask(QueryOp.REPORT))

    def try_report(self) -> Report | None:
        """The collector's report, or None while it does not answer (restarting)."""
        try:
            return self.report()
        except (TimeoutError, KeyError, IndexError, TypeError):
            return None

    def ingest_endpoint(self) -> str:
        """Where a reporter on this host pushes records (with `keys`): the collector's published ROUTER port."""
        return f"tcp://127.0.0.1:{self.published_port('collector', '5555/tcp')}"

    def wait_for_flow(self, flow_id: str, timeout: float = 10.0, both_ends: bool = True) -> Flow:
        """Poll the collector until it holds a flow, complete unless `both_ends` is False."""
        return wait_for(lambda: self.find_flow(flow_id, both_ends), f"flow {flow_id} in the collector", timeout, 0.1)

    def find_flow(self, flow_id: str, both_ends: bool = True) -> Flow | None:
        """The collector's flow with this id, if it has it (and it is complete, unless `both_ends` is False)."""
        flow = self.report().flow(flow_id)
        return flow if flow is not None and (flow.complete or not both_ends) else None

    def exec(self, who: Who, *command: str, user: str = "socklab") -> str:
        """Run a command in a container; fail with its output if it fails."""
        code, output = self.container(who).exec_run(list(command), user=user)
        text = output.decode(errors="replace")
        assert code == 0, f"{' '.join(command)} in {who} exited {code}:\n{text}"
        return text

    def run_client(self, service: str, *args: str) -> list[dict[str, Any]]:
        """Run `socklab client --json` in a client container; one dict per flow it ran."""
        return parse_json_lines(self.exec(service, "socklab", "client", "--json", *args))

    def conntrack(self, *args: str, router: str = "router") -> list[ConntrackEntry]:
        """A router's conntrack table (`conntrack -L args`): the kernel's own record of every translation."""
        # Its summary goes to stderr, which exec_run merges into stdout, at times in the middle of a line.
        listing = " ".join(["conntrack", "-L", *args, "2>/dev/null"])
        return parse_conntrack(self.exec(router, "sh", "-c", listing, user="root"))

    def reporting_env(self, service: str) -> dict[str, str]:
        """The environment a socklab process needs to report as `service` to this stack (read from client-wan)."""
        config = self.container("client-wan").attrs["Config"]["Env"]
        env = dict(item.split("=", 1) for item in config)
        return {**{key: env[key] for key in REPORTING_ENV}, "SOCKLAB_SERVICE": service}

    def run_beside(self, who: Who, command: list[str], *, root: bool = False) -> str:
        """Run a socklab command in a throwaway container that shares `who`'s network namespace.

        Its sockets get exactly the names `who`'s own would (same interfaces, routes and NAT), whatever
        `who`'s image holds; it reports as `who`'s compose service or container name. Returns stdout.
        """
        target = self.container(who)
        service = target.labels.get(SERVICE_LABEL, target.name)
        sidecar = self.docker.containers.run(
            IMAGE,
            command,
            detach=True,
            network_mode=f"container:{target.id}",
            environment=self.reporting_env(service),
            volumes=self.member_volumes(),
            labels={PROBE_LABEL: self.project},
            user="root" if root else "socklab",
            cap_add=["NET_ADMIN"] if root else [],
        )
        try:
            status = sidecar.wait(timeout=60)["StatusCode"]
            stdout = sidecar.logs(stdout=True, stderr=False).decode(errors="replace")
            if status != 0:
                stderr = sidecar.logs(stdout=False, stderr=True).decode(errors="replace")
                raise RuntimeError(f"{' '.join(command)} beside {service} exited {status}:\n{stdout}{stderr}")
        finally:
            sidecar.remove(force=True)
        return stdout

    def join(self, who: Who, network: str = "lan") -> Container:
        """Put a container of yours on a stack network and on ctl (where reports go); on lan, behind the router.

        On lan its default routes go through the router, as client-lan's do, so its flows to wan cross the NAT.
        """
        container = self.container(who)
        container.reload()
        attached = container.attrs["NetworkSettings"]["Networks"]
        for name in (network, "ctl"):
            if self.network_name(name) not in attached:
                self.docker.networks.get(self.network_name(name)).connect(container.id)
        if network == "lan":
            routes = [f"ip route replace default via {self.ip('router', 'lan')}"]
            if self.ip(container, "lan", 6):
                routes.append(f"ip -6 route replace default via {self.ip('router', 'lan', 6)}")
            self.run_beside(container, ["sh", "-c", " && ".join(routes)], root=True)
        return container

    def echo_address(self, version: int = 4) -> tuple[str, int]:
        """Where the stack's echo listens on wan, as Docker knows it."""
        container = self.container("echo")
        port = int(next(iter(container.attrs["Config"]["ExposedPorts"])).split("/")[0])
        return self.ip("echo", "wan", version), port

    def observe(
        self, client: Who, server: str | tuple[str, int] = "echo", proto: str = "tcp", version: int = 4
    ) -> Flow:
        """Run one flow from `client`'s network namespace to an echo server and return it joined: both names, verdict.

        `server` is "echo" (the stack's, on wan, over IPv`version`) or the (host, port) of any socklab echo;
        `proto` is tcp or udp, or any `socklab client` scenario (tcp-bound, udp-sendto).
        """
        address = self.echo_address(version) if server == "echo" else server
        assert isinstance(address, tuple), f"server must be 'echo' or (host, port), not {server!r}"
        command = ["socklab", "client", "--json", "--scenario", proto, "--echo", format_name(address)]
        [outcome] = parse_json_lines(self.run_beside(client, command))
        return self.wait_for_flow(outcome["flow"])

    def natcheck(self, who: Who) -> NatCheckResult:
        """Classify the NAT in front of a container (RFC 5780 against the stack's registry)."""
        output = self.run_beside(who, ["socklab", "natcheck", "--json"])
        return NatCheckResult.from_wire(parse_json_lines(output)[-1])
