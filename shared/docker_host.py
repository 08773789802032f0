"""The Docker host's own evidence about published ports: docker-proxy processes and the host kernel's conntrack;
and the host's CurveZMQ client keys, which only someone who may ask Docker can copy out of the collector.

Runs on the Docker host (the test host, `socklab cases`), never in a container: it reads /proc of the
host, where Docker's user-space proxy runs and where Docker's DNAT of a published port is tracked.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.client import DockerClient

from shared.config import load_config
from shared.conntrack import ConntrackEntry, parse_conntrack
from shared.curve import CLIENT, HOST, SERVER

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


def keys_path(container: Any) -> str:
    """Where a socklab container keeps the stack's keys (its SOCKLAB_KEYS), from its environment as Docker holds it."""
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    return str(load_config("collector", env).keys)


def keys_volume(container: Any) -> dict[str, dict[str, str]]:
    """The stack's key volume as a container of the stack's mounts it (read-only), for docker's `volumes=`."""
    path = keys_path(container)
    [name] = [m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume" and m["Destination"] == path]
    return {name: {"bind": path, "mode": "ro"}}


def fetch_host_keys(collector: Any, directory: Path) -> Path:
    """Copy the host's client keys out of the collector's key volume into `directory` (0700, files 0600)."""
    stream, _ = collector.get_archive(f"{keys_path(collector)}/{HOST}")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        files = {Path(m.name).name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
        wanted = (f"{SERVER}.key", f"{CLIENT}.key", f"{CLIENT}.key_secret")  # the secret last: readers wait for it
        missing = [name for name in wanted if name not in files]
        if missing:
            raise FileNotFoundError(f"the collector's {HOST} keys lack {', '.join(missing)}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in wanted:
            data = files[name].read()  # type: ignore[union-attr]
            new = directory / f".{name}.new"
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(new, directory / name)
    return directory
