"""The Docker host's own evidence about published ports: docker-proxy processes and the host kernel's conntrack.

Runs on the Docker host (the test host, `socklab cases`), never in a container: it reads /proc of the
host, where Docker's user-space proxy runs and where Docker's DNAT of a published port is tracked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from docker.client import DockerClient

from shared.conntrack import ConntrackEntry, parse_conntrack

HOST_CONNTRACK = Path("/proc/net/nf_conntrack")


@dataclass(frozen=True)
class DockerProxy:
    """One docker-proxy process: the published host address it listens on and the container it forwards to."""

    pid: int
    options: dict[str, str]
    command: tuple[str, ...] = ()

    @property
    def container_ip(self) -> str:
        """Where the proxy opens its own connection to."""
        return self.options["-container-ip"]

    def describe(self) -> str:
        """Its command line, as `ps` would show it."""
        return f"pid {self.pid}: docker-proxy " + " ".join(f"{k} {v}" for k, v in self.options.items())


def find_docker_proxy(host_ip: str, host_port: int, proto: str) -> DockerProxy | None:
    """Docker's user-space proxy for a published port, read from its command line, if one runs."""
    wanted = {"-host-ip": host_ip, "-host-port": str(host_port), "-proto": proto}
    return next((p for p in list_docker_proxies() if all(p.options.get(k) == v for k, v in wanted.items())), None)


def list_docker_proxies(proc: Path = Path("/proc")) -> list[DockerProxy]:
    """Every docker-proxy process on the host, from its command line; unreadable entries are skipped."""
    proxies = []
    for cmdline in proc.glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            args = cmdline.read_bytes().decode().rstrip("\0").split("\0")
            if args and args[0].endswith("docker-proxy"):
                options = dict(zip(args[1::2], args[2::2], strict=False))
                proxies.append(DockerProxy(int(cmdline.parent.name), options, tuple(args)))
    return proxies


def host_conntrack() -> list[ConntrackEntry]:
    """The host kernel's connection table: Docker's DNAT of a published port, and what reached the host itself."""
    return parse_conntrack(HOST_CONNTRACK.read_text())


def describe_entry(entry: ConntrackEntry) -> str:
    """One conntrack entry as `conntrack -L` writes it (and parse_conntrack reads it): original, then reply."""
    original = f"src={entry.src} dst={entry.dst} sport={entry.sport} dport={entry.dport}"
    reply = f"src={entry.reply_src} dst={entry.reply_dst} sport={entry.reply_sport} dport={entry.reply_dport}"
    return f"{entry.proto} {original} {reply}"


def engine_name(client: DockerClient) -> str:
    """The Docker engine's own name (`docker info`'s Name): what records call the node a container ran on."""
    return str(client.info()["Name"])
