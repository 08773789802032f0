"""The live page in a real browser (Debian's headless Chromium through Selenium) against the test stack.

It finds one drawn flow per flow the collector holds, with its verdict as a class; sees a new client
run appear without a reload; filters; shows a hostile service name as text; and saves screenshots
under test-artifacts/.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from shared.record import Family, Method, Observation, Proto, Role, new_flow_id
from shared.report_model import FlowVerdict
from shared.reporter import Reporter
from shared.stack import CHECKOUT, Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ARTIFACTS = CHECKOUT / "test-artifacts"
HOSTILE = "<img src=x onerror=alert(1)>"
DRAWN = (
    "return Array.from(document.querySelectorAll('#picture [data-flow]'),"
    " e => [e.dataset.flow, e.getAttribute('class')])"
)
ROWS = "return Array.from(document.querySelectorAll('#flows tbody tr'), row => row.dataset.row)"
CELLS = (
    "const row = document.querySelector(`#flows tr[data-row='${arguments[0]}']`);"
    " return row && Array.from(row.cells, cell => cell.textContent)"
)
SERVICES = "return Array.from(document.querySelectorAll('#filters select[name=service] option'), o => o.textContent)"
WATCH = "window.socklabLoaded = performance.timeOrigin; window.alert = () => { window.alerted = 1; }"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "no chromium/chromedriver: `make browser` installs Debian's (make test does)"
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1300"):
        options.add_argument(argument)
    options.binary_location = chromium
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()


def drawn(browser: WebDriver) -> dict[str, list[str]]:
    """Each drawn flow's classes, by flow id; fails if a flow is drawn twice."""
    pairs = browser.execute_script(DRAWN)
    ids = [flow for flow, _ in pairs]
    assert len(ids) == len(set(ids)), "a flow drawn twice"
    return {flow: classes.split() for flow, classes in pairs}


def choose(browser: WebDriver, name: str, value: str) -> None:
    Select(browser.find_element(By.CSS_SELECTOR, f"#filters select[name={name}]")).select_by_value(value)


def screenshot(browser: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(path)), f"no screenshot at {path}"
    return path


def test_the_page_draws_every_flow_live_filters_and_escapes(stack: Stack, browser: WebDriver) -> None:
    browser.get(f"http://127.0.0.1:{stack.published_port('collector', '8080/tcp')}/")
    browser.execute_script(
        "window.socklabLoaded = performance.timeOrigin; window.alert = () => { window.alerted = 1; }"
    )
    choose(browser, "size", "2000")

    differences: list[str] = []

    def every_flow_drawn() -> bool:
        report, page = stack.report(), drawn(browser)
        differences[:] = [
            f"{f.flow} {f.verdict}: {page.get(f.flow)}"
            for f in report.flows
            if str(f.verdict) not in page.get(f.flow, [])
        ]
        differences.extend(f"{flow} drawn, not held" for flow in set(page) - {f.flow for f in report.flows})
        return not differences

    try:
        wait_for(every_flow_drawn, "one drawn flow per flow the collector holds, classed by its verdict", timeout=15)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; differences: {differences[:10]}") from None
    assert {"snat", "direct"} <= {c for classes in drawn(browser).values() for c in classes}

    outcomes = stack.run_client("client-lan", "--scenario", "tcp", "--scenario", "udp")
    flows = [stack.wait_for_flow(o["flow"]) for o in outcomes]
    stored = time.monotonic()
    wait_for(lambda: all("snat" in drawn(browser).get(f.flow, []) for f in flows), "the new flows drawn", timeout=15)
    seen_after = time.monotonic() - stored
    assert seen_after < 2.0, f"new flows took {seen_after:.2f} s to appear"
    assert browser.execute_script("return window.socklabLoaded === performance.timeOrigin"), "the page never reloaded"

    browser.execute_script(f"document.querySelector(\"#flows tr[data-row='{flows[0].flow}']\").click()")
    detail = browser.find_element(By.ID, "detail").text
    assert f"flow {flows[0].flow}" in detail and "client sees" in detail and "server sees" in detail
    shot = screenshot(browser, "page.png")

    choose(browser, "verdict", "snat")
    shown: list[object] = []

    def only_snat_shown() -> bool:
        # The collector's answer is read on every poll: a late end or conntrack event may still change a verdict.
        snat = {f.flow for f in stack.report().flows if f.verdict == FlowVerdict.SNAT}
        shown[:] = [snat, set(drawn(browser)), set(browser.execute_script(ROWS))]
        return bool(snat) and shown[1] == snat and shown[2] == snat

    try:
        wait_for(only_snat_shown, "only snat flows drawn and listed under the snat filter")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; held snat, drawn, listed: {shown}") from None
    choose(browser, "verdict", "")

    context = zmq.Context()
    try:
        reporter = Reporter(context, stack.ingest_endpoint(), HOSTILE, keys=stack.keys)
        hostile = Observation(
            HOSTILE,
            HOSTILE,
            new_flow_id(),
            Role.CLIENT,
            Proto.TCP,
            Family.IPV4,
            Method.CONNECT,
            remote=(HOSTILE, 7007),
            extra={"scenario": HOSTILE},
        )
        assert reporter.report(hostile)
        reporter.close()
    finally:
        context.term()
    wait_for(lambda: hostile.flow in drawn(browser), "the hostile record drawn")
    search = browser.find_element(By.CSS_SELECTOR, "#filters input[name=search]")
    search.send_keys("onerror")
    cells = wait_for(lambda: browser.execute_script(CELLS, hostile.flow), "the hostile row")
    assert cells[0] == HOSTILE and HOSTILE in cells[1], "the scenario and service are shown as the text they are"
    assert not browser.find_elements(By.TAG_NAME, "img"), "no markup made from a record"
    assert HOSTILE in browser.execute_script(SERVICES)
    assert browser.execute_script("return window.alerted") is None, "nothing in a record ran"
    screenshot(browser, "page-escaped.png")
    assert shot.stat().st_size > 10_000
