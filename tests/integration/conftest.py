import os
from collections.abc import Iterator

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import pytest

from tests.integration.stack import Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The whole compose stack, up once per session and always taken down."""
    running = Stack()
    try:
        yield running.start()
    finally:
        running.stop()
