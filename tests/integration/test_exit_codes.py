"""Make targets exit with their command's status, so a script or CI sees a failure as one."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from shared.stack import Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def make(stack: Stack, *targets: str) -> subprocess.CompletedProcess[str]:
    """Run make targets in the stack's checkout against the stack under test (COMPOSE_PROJECT_NAME names it)."""
    return subprocess.run(
        ["make", "--no-print-directory", *targets],
        cwd=stack.compose_file.parent,
        env={**os.environ, "COMPOSE_PROJECT_NAME": stack.project},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_json_prints_the_collectors_report_and_succeeds(stack: Stack) -> None:
    before = {flow.flow for flow in stack.report().flows}
    done = make(stack, "json")
    assert done.returncode == 0, done.stderr
    flows = {flow["flow"] for flow in json.loads(done.stdout)["flows"]}
    after = {flow.flow for flow in stack.report().flows}
    assert before <= flows <= after, "every flow held before, none the collector does not hold (others may arrive)"


def test_a_command_that_fails_in_its_container_fails_its_make_target(stack: Stack) -> None:
    registry = stack.container("registry")
    registry.pause()
    try:
        done = make(stack, "natcheck")
    finally:
        registry.unpause()
    assert done.returncode == 2, f"make natcheck with no STUN server exited {done.returncode}: {done.stdout}"
    assert "natcheck: no STUN Binding answer" in done.stderr


def test_a_target_whose_service_is_stopped_fails(stack: Stack) -> None:
    collector = stack.container("collector")
    collector.stop(timeout=5)
    try:
        done = make(stack, "report")
    finally:
        collector.start()
    assert done.returncode == 2, f"make report with the collector stopped exited {done.returncode}: {done.stdout}"
    assert 'service "collector" is not running' in done.stderr
    wait_for(stack.try_report, "the collector to answer after its start", 30)
