"""socklab's pytest plugin: a socklab stack for any project's tests, and socklab's answers about it.

Installed with the package (entry point `pytest11: socklab`), so every pytest run loads it; it imports
Docker only when a test asks for `socklab_stack`, so runs that do not pay nothing and need no Docker.

    def test_behind_the_nat(socklab_stack):
        socklab_stack.join(my_container, "lan")             # behind the router's NAT, reporting on ctl
        flow = socklab_stack.observe(my_container, "echo")  # shared.report_model.Flow: both ends, verdict
        assert flow.server.peername[0] == socklab_stack.ip("router", "wan")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from shared.stack import Stack

DEFAULT_PROJECT = "socklab-test"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Where the stack comes from: a project to start or find, one to attach to, the compose file."""
    group = parser.getgroup("socklab", "socklab stack (socklab_stack fixture)")
    group.addoption(
        "--socklab-attach",
        metavar="PROJECT",
        default=os.environ.get("SOCKLAB_ATTACH") or None,
        help="use this running socklab compose project, never start or stop one (env SOCKLAB_ATTACH)",
    )
    group.addoption(
        "--socklab-project",
        metavar="NAME",
        default=os.environ.get("SOCKLAB_TEST_PROJECT", DEFAULT_PROJECT),
        help="compose project to use if up, else to start and take down (env SOCKLAB_TEST_PROJECT; %(default)s)",
    )
    group.addoption(
        "--socklab-compose-file",
        metavar="PATH",
        default=None,
        help="socklab's docker-compose.yml (default: the one in the checkout the package is installed from)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker for tests that need a socklab stack, so --strict-markers accepts it."""
    config.addinivalue_line("markers", "socklab: needs a socklab stack on this host's Docker")


@pytest.fixture(scope="session")
def socklab_stack(pytestconfig: pytest.Config) -> Iterator[Stack]:
    """A socklab stack for the whole session: attached to if asked or already up, else started and taken down."""
    from shared.stack import COMPOSE_FILE, Stack

    compose_file = pytestconfig.getoption("socklab_compose_file")
    stack = Stack.open(
        project=pytestconfig.getoption("socklab_project"),
        attach=pytestconfig.getoption("socklab_attach"),
        compose_file=Path(compose_file) if compose_file else COMPOSE_FILE,
    )
    try:
        yield stack
    finally:
        stack.stop()
