"""socklab's pytest plugin: registered with the package, loaded by pytest, cheap to load, and its session plan."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import shared.pytest_plugin
from shared.stack import Plan, choose_plan

pytestmark = pytest.mark.unit


def test_the_package_registers_the_plugin_with_pytest() -> None:
    [entry] = [e for e in entry_points(group="pytest11") if e.name == "socklab"]
    assert entry.value == "shared.pytest_plugin"
    assert entry.load() is shared.pytest_plugin


def test_pytest_loaded_it_into_this_run(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("socklab") is shared.pytest_plugin
    assert "socklab" in "\n".join(pytestconfig.getini("markers"))


def test_loading_it_touches_no_docker() -> None:
    """Every pytest run loads the plugin: it must import neither Docker's SDK nor testcontainers, nor ask a daemon."""
    code = (
        "import sys, shared.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in ('docker', 'testcontainers', 'zmq') "
        "or m == 'shared.stack'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": ""},
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize(
    ("attach", "held", "plan"),
    [
        (None, {}, (Plan.START, "socklab-test")),
        (None, {"socklab-test": False}, (Plan.START, "socklab-test")),
        (None, {"socklab-test": True}, (Plan.ATTACH, "socklab-test")),
        ("socklab", {"socklab": True}, (Plan.ATTACH, "socklab")),
        ("socklab", {"socklab": True, "socklab-test": False}, (Plan.ATTACH, "socklab")),
    ],
)
def test_a_session_attaches_to_a_stack_that_is_up_and_starts_its_own_otherwise(
    attach: str | None, held: dict[str, bool], plan: tuple[Plan, str]
) -> None:
    assert choose_plan("socklab-test", attach, held) == plan


@pytest.mark.parametrize(
    ("attach", "held", "said"),
    [
        (None, {"socklab": True}, "SOCKLAB_ATTACH=socklab"),
        (None, {"socklab": False, "socklab-test": False}, "run `make down`"),
        ("socklab", {"socklab": False}, "SOCKLAB_ATTACH=socklab: no socklab stack"),
        ("socklab", {}, "no socklab stack of that project is up"),
    ],
)
def test_a_session_never_starts_over_another_stack_nor_attaches_to_none(
    attach: str | None, held: dict[str, bool], said: str
) -> None:
    with pytest.raises(RuntimeError, match=said.replace("`", ".")):
        choose_plan("socklab-test", attach, held)
