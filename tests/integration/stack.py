"""socklab's own integration tests' extras on the one stack handle (shared.stack.Stack, from the pytest
plugin's session): scripts run inside containers, comparing hosts and entries."""

from __future__ import annotations

import io
import ipaddress
import tarfile
from pathlib import Path

from shared.conntrack import ConntrackEntry
from shared.names import unmap_host
from shared.stack import Stack

SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT_DIR = "/tmp"


def only(entries: list[ConntrackEntry], what: str) -> ConntrackEntry:
    """The one conntrack entry a flow must have; fail showing what was found instead."""
    assert len(entries) == 1, f"expected one conntrack entry for {what}, found {entries}"
    return entries[0]


def same_host(a: str, b: str) -> bool:
    """Compare hosts as addresses, IPv4-mapped names unmapped."""
    return ipaddress.ip_address(unmap_host(a)) == ipaddress.ip_address(unmap_host(b))


def run_script(stack: Stack, service: str, script: str, *args: str) -> str:
    """Copy a script from tests/integration/scripts into a service's container and run it with python3 there."""
    path = SCRIPTS / script
    data = path.read_bytes()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(path.name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    assert stack.container(service).put_archive(SCRIPT_DIR, archive.getvalue()), f"{script} not copied"
    return stack.exec(service, "python3", f"{SCRIPT_DIR}/{path.name}", *args)
