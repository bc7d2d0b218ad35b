"""The demo page in a real headless Chromium: the row view, the database-clock control and server-clock
expiry, and the copy-pasteable ``beaker-mssql stats`` command reaching the demo's own stand-in.

Skips with a reason where no Chromium is installed (Debian: ``apt-get install chromium``; CI's
``.ci/run`` installs it). Set ``DEMO_SCREENSHOT=docs/demo.png`` to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from browser import Browser, find_chromium
from test_examples_demo import Demo, free_port

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium) for the browser test"
)


@pytest.fixture
def demo(tmp_path):
    port = free_port()
    process = Demo(port, tmp_path / "var" / "demo-standin.json")
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def browser():
    assert CHROMIUM is not None
    instance = Browser(CHROMIUM)
    try:
        yield instance
    finally:
        instance.close()


def test_demo_page_shows_the_row_moves_the_clock_and_expires_by_the_server_clock(demo, browser, tmp_path):
    home = f"http://127.0.0.1:{demo.port}/"
    browser.goto(home)
    assert browser.text("visits") == "1"
    assert browser.text("row-missing") is not None  # Beaker writes the row when the request ends
    sid = browser.text("row-sid")
    assert sid and re.fullmatch(r"[0-9a-f]{32}", sid)

    browser.submit(
        "document.querySelector('#login input[name=username]').value = 'ann';"
        "document.querySelector('#login button').click();"
    )
    assert browser.text("user") == "ann"
    new_sid = browser.text("row-sid")
    assert new_sid and new_sid != sid  # logging in gave a new id (session fixation)

    browser.goto(home)
    assert browser.text("row-sid") == new_sid
    stored = browser.text("row-json") or ""
    assert '"user": "ann"' in stored and '"visits":' in stored  # the column's JSON, as stored
    left = browser.text("row-left") or ""
    match = re.fullmatch(r"(\d+) s left", left)
    assert match and 3500 <= int(match.group(1)) <= 3600, left  # ttl 3600 on the database clock
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", browser.text("db-clock") or "")
    assert int(browser.text("cost-previous") or "0") >= 1  # the stand-in counted this browser's requests

    # The stats command on the page reaches the demo's own stand-in as printed.
    command = browser.text("stats-command") or ""
    argv = shlex.split(command)
    assert argv[:2] == ["beaker-mssql", "stats"], command
    env = {k: v for k, v in os.environ.items() if k != "BEAKER_MSSQL_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "beaker_mssql.cli", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(database test)" in proc.stdout and "live rows:" in proc.stdout

    # The clock control: the row expires by the database's clock, so the next load is a new session.
    browser.submit("document.getElementById('clock-forward').click();")
    assert browser.evaluate("location.search") == "?clock=moved"
    assert browser.text("expired-note") is not None
    assert browser.text("visits") == "1"
    assert browser.text("user") is None  # logged out: the row was invisible to the load
    assert (browser.text("row-left") or "").startswith("expired")

    png = browser.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "demo.png").write_bytes(png)
    target = os.environ.get("DEMO_SCREENSHOT")
    if target:
        browser.goto(home)  # the page as a visitor sees it after the expiry demo
        Path(target).write_bytes(browser.screenshot())
