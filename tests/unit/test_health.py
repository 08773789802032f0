"""Ready files and the socklab command: what health checks, waiting services and a user's typo see."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services import health
from shared import readiness

pytestmark = pytest.mark.unit

COMMANDS = (
    "echo,registry,client,collector,router,report,health,natcheck,cases,punch,config,explain,docker-facts,"
    "swarm,node-conntrack"
)
USAGE = f"usage: socklab [-h] {{{COMMANDS}}}"


def test_a_service_is_ready_once_it_says_so_and_says_with_what(tmp_path: Path) -> None:
    assert readiness.not_ready(["echo", "router"], tmp_path) == ["echo", "router"]
    readiness.mark_ready("echo", "listening on port 7007", tmp_path)
    assert readiness.not_ready(["echo", "router"], tmp_path) == ["router"]
    assert (tmp_path / "echo").read_text() == "listening on port 7007\n"


def test_waiting_ends_when_the_last_service_is_ready(tmp_path: Path) -> None:
    readiness.mark_ready("collector", "bound", tmp_path)
    later = threading.Timer(0.3, readiness.mark_ready, ("echo", "registered", tmp_path))
    later.start()
    started = time.monotonic()
    health.main(["collector", "echo", "--timeout", "5", "--directory", str(tmp_path)])
    assert 0.25 < time.monotonic() - started < 2
    later.join()


def test_waiting_in_vain_fails_naming_who_is_not_ready(tmp_path: Path) -> None:
    readiness.mark_ready("collector", "bound", tmp_path)
    with pytest.raises(SystemExit, match=r"^socklab health: not ready after 0.2 s: echo, client-lan$"):
        health.main(["collector", "echo", "client-lan", "--timeout", "0.2", "--directory", str(tmp_path)])


def socklab(*argv: str) -> subprocess.CompletedProcess[str]:
    """The socklab command in a process of its own, so its exit status is the real one."""
    return subprocess.run([sys.executable, "-m", "services", *argv], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("argv", "error"), [((), "required: command"), (("dance",), "invalid choice: 'dance'")])
def test_no_command_or_an_unknown_one_prints_the_usage_and_exits_2(argv: tuple[str, ...], error: str) -> None:
    done = socklab(*argv)
    assert done.returncode == 2
    assert " ".join(done.stderr.split()).startswith(USAGE)
    assert error in done.stderr


def test_a_command_gets_the_rest_of_the_arguments_and_its_status_is_the_exit_status(tmp_path: Path) -> None:
    assert socklab("health", "--help").stdout.startswith("usage: socklab health ")
    done = socklab("health", "echo", "--timeout", "0", "--directory", str(tmp_path))
    assert done.returncode == 1
    assert "not ready after 0 s: echo" in done.stderr
    assert socklab("health", "--no-such-option").returncode == 2
