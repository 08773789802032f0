"""Nothing lost: the collector's container is SIGKILLed twice while a reporter streams; Docker restarts it
(restart: unless-stopped) and every record the reporter sent is stored exactly once."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from shared.collector_protocol import QueryOp
from shared.stack import Stack
from tests.helpers import wait_for
from tests.integration.stack import run_script

pytestmark = pytest.mark.integration

COUNT, RATE = 10_000, 2_000


def kill_collector(stack: Stack) -> None:
    """SIGKILL the collector process (the child of the container's init): a crash, not a stop."""
    stack.exec("collector", "sh", "-c", "kill -KILL $(cat /proc/1/task/1/children)")


def test_killing_the_collector_mid_stream_loses_no_record(stack: Stack) -> None:
    tag = f"kill-{uuid.uuid4().hex[:8]}"
    restarts = stack.container("collector").attrs["RestartCount"]
    out: list[str] = []
    streaming = threading.Thread(
        target=lambda: out.append(run_script(stack, "client-wan", "stream.py", tag, str(COUNT), str(RATE)))
    )
    streaming.start()
    for _ in range(2):
        time.sleep(1.5)
        kill_collector(stack)
        wait_for(stack.try_report, "the collector to answer after Docker restarted it", 30)
    streaming.join(120)
    stats = json.loads(out[0].strip().splitlines()[-1])
    assert stats["sent"] == COUNT and stats["dropped"] == 0 and stats["unacked"] == 0, stats
    stack.container("collector").reload()
    assert stack.container("collector").attrs["RestartCount"] == restarts + 2, "Docker restarted it after each kill"
    records = stack.ask(QueryOp.RECORDS)["records"]
    seen = sorted(r["extra"]["i"] for r in records if r["extra"].get("stream") == tag)
    assert seen == list(range(COUNT)), (
        f"{COUNT - len(set(seen))} lost, {len(seen) - len(set(seen))} stored twice, {stats}"
    )
