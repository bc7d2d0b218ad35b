"""Shared test setup. The stand-in fixtures (mssql_server, mssql_url, standin, mssql_table) come from the
beaker_mssql pytest plugin, registered once through the pytest11 entry point in pyproject.toml: do not
list it in pytest_plugins here as well (pytest would refuse to register it twice).

Plain helper functions (new_sid, wait_until, run_threads) are in tests/helpers.py.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any, Callable
from urllib.parse import quote

import pytest

from beaker_mssql import MSSQLStore, config
from beaker_mssql.config import parse_table_name
from beaker_mssql.errors import MSSQLStoreError
from beaker_mssql.sql import drop_table_sql

# BEAKER_MSSQL_TEST_DRIVER=pytds (make test runs it once): every store that names no driver uses python-tds.
TEST_DRIVER = os.environ.get("BEAKER_MSSQL_TEST_DRIVER", "pymssql")
config.DEFAULT_DRIVER = TEST_DRIVER


def pytest_report_header(config: pytest.Config) -> str:
    return f"beaker_mssql tests: driver = {TEST_DRIVER} (BEAKER_MSSQL_TEST_DRIVER)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pymssql_login_numbers: asserts login error numbers, which pymssql keeps stale after a more severe "
        "one (Babelfish's 911): engine_needs('login_error_numbers') in the pymssql run only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the pytds run, skip (with the marker's reason) the tests about pymssql's own behaviour.

    Under pymssql, a ``pymssql_login_numbers`` test needs the profile's ``login_error_numbers``: the
    stale numbers are pymssql's (python-tds reports each login's own number, Babelfish's 911 included).
    """
    if TEST_DRIVER == "pymssql":
        for item in items:
            if item.get_closest_marker("pymssql_login_numbers") is not None:
                item.add_marker(pytest.mark.engine_needs("login_error_numbers"))
        return
    for item in items:
        marker = item.get_closest_marker("pymssql_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "tests pymssql itself"
            item.add_marker(pytest.mark.skip(reason=f"pymssql only: {reason}"))


pytest_plugins = ["pytester"]  # tests/test_standin_server.py runs small pytest sessions in-process


@pytest.fixture
def make_store(mssql_url: str, mssql_table: str) -> Iterator[Callable[..., MSSQLStore]]:
    """``make_store(**options)``: an MSSQLStore on the test's table and server, closed after the test.

    ``url`` and ``table`` default to the fixtures'; any other option is passed through as given.
    """
    stores: list[MSSQLStore] = []

    def make(**options: Any) -> MSSQLStore:
        options.setdefault("url", mssql_url)
        options.setdefault("table", mssql_table)
        store = MSSQLStore(**options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def scratch_table(mssql_server: Any) -> Iterator[str]:
    """A unique, *not yet created* table name (``t_...``) for tests that create the table themselves
    (create_table, a deliberately malformed table); dropped afterwards if it exists."""
    name = "t_" + uuid.uuid4().hex[:12]
    try:
        yield name
    finally:
        mssql_server.execute(drop_table_sql(parse_table_name(name)))


class _Collect(logging.Handler):
    """Every log record of a test, formatted with its traceback (exception texts included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
        except Exception:  # a record that cannot be formatted is logging's problem, not a leak
            pass


@pytest.fixture(autouse=True)
def _server_password_never_leaks(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Suite-wide sweep (issue 11): no log record and no beaker_mssql exception message that any test
    produces may contain the server's password (raw or percent-encoded). tests/test_password_sweep.py
    does the same with short and special-character passwords, where mangling is the risk."""
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    messages: list[str] = []
    original = MSSQLStoreError.__init__

    def recording_init(self: MSSQLStoreError, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        messages.append(str(self))

    monkeypatch.setattr(MSSQLStoreError, "__init__", recording_init)
    try:
        yield
    finally:
        root.removeHandler(handler)
    if "mssql_server" not in request.fixturenames:
        return
    password = request.getfixturevalue("mssql_server").password
    if not password:
        return
    for text in handler.texts + messages:
        for secret in {password, quote(password, safe="")}:
            assert secret not in text, f"the server password leaked into: {text[:300]!r}"


@pytest.fixture(autouse=True)
def _close_shared_stores() -> Iterator[None]:
    """Close the process-wide stores and pools Beaker's namespace managers created during a test, so
    no connection of one test is still open (or counted by the stand-in) in the next."""
    yield
    from beaker_mssql.namespace import close_all

    close_all()


@pytest.fixture
def no_attentions(request: pytest.FixtureRequest, mssql_server: Any) -> Iterator[None]:
    """Fail the test if its requests made the driver cancel anything: every result set is read to
    its end, so a normal Beaker flow costs no attention (a hidden extra exchange). pymssql itself sends
    one while it logs in (after its ``USE`` of the database), so each login may account for one.
    Against a real server there is no counter: nothing is checked."""
    from beaker_mssql.testing import SQLServerStandIn

    if not isinstance(mssql_server, SQLServerStandIn):
        yield
        return
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin")  # its reset of the counters happens before ours is read
    before = mssql_server.stats()
    yield
    after = mssql_server.stats()
    attentions = after["attentions"] - before["attentions"]
    logins = after["logins"] - before["logins"]
    assert attentions <= logins, f"{attentions - logins} request(s) left a result set unread"
