"""socklab health and the socklab command: what compose's health checks and a user's typo see."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services import __main__ as socklab
from services import health
from services.echo import EchoServer
from tests.conftest import LiveCollector

pytestmark = pytest.mark.unit


def test_a_listening_port_is_healthy_and_a_closed_one_is_not(echo_server: EchoServer, closed_port: int) -> None:
    health.main(["--tcp", str(echo_server.port)])
    with pytest.raises(SystemExit, match=r"^unhealthy: .*refused"):
        health.main(["--tcp", str(closed_port)])


def test_the_collector_is_healthy_when_it_answers_a_ping(
    live_collector: LiveCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKLAB_QUERY", live_collector.query)
    health.main(["--collector"])


def test_a_ready_file_must_exist(tmp_path: Path) -> None:
    (tmp_path / "ready").write_text("")
    health.main(["--file", str(tmp_path / "ready")])
    with pytest.raises(SystemExit, match=r"^unhealthy: .*missing"):
        health.main(["--file", str(tmp_path / "missing")])


@pytest.mark.parametrize("argv", [["socklab"], ["socklab", "dance"]])
def test_an_unknown_command_prints_the_usage(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"^usage: socklab \{echo,registry,client,collector,router,report,"):
        socklab.main()
