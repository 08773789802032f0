"""Hardened containers: what Docker says each service runs with, and what the kernel inside enforces."""

from __future__ import annotations

import pytest
from docker.models.containers import Container

from shared.stack import PROJECT_LABEL, SERVICE_LABEL, Stack

pytestmark = pytest.mark.integration

# The capabilities each service adds back after dropping all: routes and addresses (NET_ADMIN), then dropping
# from root to socklab (SETUID, SETGID). Every other service keeps none.
ROOT_THEN_SOCKLAB = {"NET_ADMIN", "SETUID", "SETGID"}
CAPABILITIES = {
    "registry": ROOT_THEN_SOCKLAB,
    "router": {"NET_ADMIN"},
    "router2": {"NET_ADMIN"},
    "client-lan": ROOT_THEN_SOCKLAB,
    "client-lan2": ROOT_THEN_SOCKLAB,
    # TOPOLOGY=cgn's (docker-compose.cgn.yml), when a stack is started with them
    "cgn": {"NET_ADMIN"},
    "home-router": {"NET_ADMIN"},
    "client-home": ROOT_THEN_SOCKLAB,
    "client-cgn": ROOT_THEN_SOCKLAB,
}
CAP_NUMBERS = {"SETGID": 6, "SETUID": 7, "NET_ADMIN": 12}
MEMORY_FILES = ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max")
PIDS_FILES = ("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")


def stack_containers(stack: Stack) -> dict[str, Container]:
    """Every running container of the stack, by its compose service."""
    found = stack.docker.containers.list(filters={"label": f"{PROJECT_LABEL}={stack.project}"})
    return {container.labels[SERVICE_LABEL]: container for container in found}


def proc_status(stack: Stack, container: Container) -> dict[str, str]:
    """/proc/self/status of a process exec'd in the container: the bounding set and no_new_privs it gets."""
    text = stack.exec(container, "cat", "/proc/self/status")
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def first_file(stack: Stack, container: Container, paths: tuple[str, ...]) -> str:
    """The contents of the first of these files the container has (cgroup v1, else v2)."""
    script = " || ".join(f"cat {path} 2>/dev/null" for path in paths)
    return stack.exec(container, "sh", "-c", script).strip()


def test_every_service_is_hardened_as_docker_inspect_says(stack: Stack) -> None:
    containers = stack_containers(stack)
    services = set(stack.compose("config", "--services").split())
    assert set(containers) == services, "every service of the compose file runs"
    for service, container in containers.items():
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert [cap.upper() for cap in host["CapDrop"] or []] == ["ALL"], service
        wanted = CAPABILITIES.get(service, set())
        assert {cap.upper().removeprefix("CAP_") for cap in host["CapAdd"] or []} == wanted, service
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        assert 0 < (host["PidsLimit"] or 0) <= 512, service
        assert 0 < host["Memory"] <= 2 << 30, service
        assert "/tmp" in (host["Tmpfs"] or {}), service

        status = proc_status(stack, container)
        assert int(status["CapBnd"], 16) == sum(1 << CAP_NUMBERS[cap] for cap in wanted), (service, status["CapBnd"])
        assert status["NoNewPrivs"].strip() == "1", service
        assert int(first_file(stack, container, MEMORY_FILES)) == host["Memory"], service
        assert int(first_file(stack, container, PIDS_FILES)) == host["PidsLimit"], service


@pytest.mark.parametrize("service", ["collector", "router"])
def test_the_root_file_system_refuses_writes_even_for_root(stack: Stack, service: str) -> None:
    code, output = stack.container(service).exec_run(["touch", "/opt/socklab/written"], user="root")
    assert code != 0
    assert b"Read-only file system" in output
    stack.exec(service, "sh", "-c", "echo ok > /tmp/written && rm /tmp/written", user="root")
