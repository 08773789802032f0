"""The collector's HTTP side: static page files, /live.json's cursor, filters, a bound on its threads."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.collector import Collector, Store
from services.page_server import PAGE_DIR, PageHandler, PageServer, serve_page
from shared.names import json_name
from shared.record import (
    Family,
    Interface,
    Method,
    Observation,
    Proto,
    Role,
    Route,
    Topology,
    pack_observation,
    pack_record,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.unit

HOSTILE = "<img src=x onerror=alert(1)>"


def record(flow: str, service: str, host: str, role: Role, method: str, **names: Any) -> bytes:
    extra = {"scenario": names.pop("scenario")} if "scenario" in names else {}
    obs = Observation(service, host, flow, role, Proto.TCP, Family.IPV4, Method(method), extra=extra, **names)
    return pack_observation(obs)


SNAT = [
    record("s1", "client-lan", "cl", Role.CLIENT, "getsockname", local=("192.168.50.20", 40000), scenario="tcp4"),
    record("s1", "client-lan", "cl", Role.CLIENT, "getpeername", remote=("198.51.100.10", 7007)),
    record("s1", "echo", "ec", Role.SERVER, "getsockname", local=("::ffff:198.51.100.10", 7007, 0, 0)),
    record("s1", "echo", "ec", Role.SERVER, "getpeername", remote=("::ffff:198.51.100.2", 40000, 0, 0)),
]
TOPOLOGY = [
    Topology(
        "client-lan",
        "cl",
        True,
        (Interface("eth0", ("192.168.50.20/24", "fd00:50::20/64")), Interface("eth1", ("10.99.0.5/24",))),
        (Route("0.0.0.0/0", "192.168.50.2", "eth0"), Route("192.168.50.0/24", None, "eth0")),
    ),
    Topology(
        "echo",
        "ec",
        True,
        (Interface("eth0", ("198.51.100.10/24", "2001:db8:100::10/64")), Interface("eth1", ("10.99.0.4/24",))),
        (Route("0.0.0.0/0", "198.51.100.1", "eth0"),),
    ),
]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[tuple[Collector, str]]:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    server = serve_page(collector, "127.0.0.1", 0)
    try:
        yield collector, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        collector.store.close()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def test_the_page_is_static_files_from_the_repository(page: tuple[Collector, str]) -> None:
    _, base = page
    for path, name, kind in [("/", "index.html", "text/html"), ("/app.js", "app.js", "text/javascript")]:
        with urllib.request.urlopen(base + path, timeout=5) as answer:
            assert answer.read() == (PAGE_DIR / name).read_bytes()
            assert answer.headers["Content-Type"].startswith(kind)
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"{base}/../collector.py", timeout=5)
    index = (PAGE_DIR / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", index), "nothing from a CDN: the page works offline"


def test_app_js_never_writes_markup() -> None:
    script = (PAGE_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, f"app.js uses {sink}: record strings must reach the page as text"


def test_live_json_sends_only_what_changed_and_the_picture_when_it_changed(page: tuple[Collector, str]) -> None:
    collector, base = page
    for topology in TOPOLOGY:
        collector.ingest(pack_record(topology))
    for raw in SNAT[:2]:
        collector.ingest(raw)
    first = get(f"{base}/live.json?since=0")
    assert [f["flow"] for f in first["flows"]] == ["s1"] and first["flows"][0]["verdict"] == "unmatched"
    assert {n["id"] for n in first["picture"]["nodes"]} >= {"host:cl", "host:ec"}
    again = get(f"{base}/live.json?since={first['cursor']}&state={first['state']}")
    assert again["flows"] == [] and "picture" not in again, "nothing new, nothing but counts"
    for raw in SNAT[2:]:
        collector.ingest(raw)
    [joined] = get(f"{base}/live.json?since={first['cursor']}&state={first['state']}")["flows"]
    assert joined["verdict"] == "snat" and joined["line"][0] == "host:cl" and joined["line"][-1] == "host:ec"

    def with_router() -> dict[str, Any] | None:
        answer = get(f"{base}/live.json?since=0&state={first['state']}")
        return answer if "picture" in answer else None

    answer = wait_for(with_router, "the picture rebuilt with the inferred router", timeout=3)
    assert answer["flows"][0]["line"] == ["host:cl", "router:192.168.50.2", "host:ec"]


def test_filters_in_the_url_and_a_bad_one_is_a_counted_400(page: tuple[Collector, str]) -> None:
    collector, base = page
    for raw in SNAT:
        collector.ingest(raw)
    collector.ingest(record("d1", "client-wan", "cw", Role.CLIENT, "connect", remote=("198.51.100.10", 7007)))
    assert [f["flow"] for f in get(f"{base}/flows.json?verdict=snat")["flows"]] == ["s1"]
    assert [f["flow"] for f in get(f"{base}/flows.json?verdict=snat&verdict=unmatched")["flows"]] == ["s1", "d1"]
    assert [f["flow"] for f in get(f"{base}/report.json?service=client-wan")["flows"]] == ["d1"]
    assert get(f"{base}/report.json") == json.loads(json.dumps(collector.report().to_wire(), default=json_name))
    with pytest.raises(urllib.error.HTTPError, match="400"):
        urllib.request.urlopen(f"{base}/flows.json?since=soon", timeout=5)
    assert collector.bad_queries == 1
    assert get(f"{base}/flows.json?search=CLIENT-WAN")["flows"][0]["flow"] == "d1", "and it keeps serving"


def test_hostile_names_travel_as_json_text(page: tuple[Collector, str]) -> None:
    collector, base = page
    collector.ingest(record("x1", HOSTILE, HOSTILE, Role.CLIENT, "connect", remote="<b>", scenario=HOSTILE))
    [flow] = get(f"{base}/live.json?since=0")["flows"]
    assert flow["client"]["service"] == HOSTILE and flow["scenario"] == HOSTILE


def test_past_its_bound_of_threads_the_server_says_503_at_once(tmp_path: Path) -> None:
    collector = Collector(Store(str(tmp_path / "r.bin")))
    handler = type("Page", (PageHandler,), {"view": None, "timeout": 30})
    server = PageServer(("127.0.0.1", 0), handler, workers=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1])):  # holds the one thread
            wait_for(lambda: server.serving == 1, "the silent connection to take the slot")
            with pytest.raises(urllib.error.HTTPError, match="503"):
                urllib.request.urlopen(f"{base}/", timeout=5)
        wait_for(lambda: server.serving == 0, "the slot given back")
        with urllib.request.urlopen(f"{base}/", timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.shutdown()
        server.server_close()
        collector.store.close()


def test_a_connection_that_dribbles_its_request_is_cut_at_the_deadline(tmp_path: Path) -> None:
    handler = type("Page", (PageHandler,), {"view": None, "timeout": 30})
    server = PageServer(("127.0.0.1", 0), handler, workers=1, deadline=0.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as slow:
            started = time.monotonic()
            with contextlib.suppress(OSError):
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
                    slow.sendall(bytes([byte]))  # each byte well within the socket timeout
                    time.sleep(0.1)
            try:
                answer = slow.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", "closed without an answer"
            assert time.monotonic() - started < 3
        assert server.deadlines_hit == 1
        wait_for(lambda: server.serving == 0, "the slot given back")
    finally:
        server.shutdown()
        server.server_close()
