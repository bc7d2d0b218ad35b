"""pytest fixtures for code that talks to SQL Server: the stand-in by default, a real server on request.

Registered through the ``pytest11`` entry point, so any project that installs beaker-mssql gets
``mssql_server``, ``mssql_url``, ``standin`` and ``mssql_table``. Set ``BEAKER_MSSQL_TEST_URL`` (e.g.
``mssql://sa:pw@127.0.0.1:1433/test``) to run the same tests against a real server; tests that need the
stand-in's clock, faults or counters (the ``standin`` fixture, or the ``standin_only`` marker) then skip.

Engine profiles (testing/profiles.py): ``--mssql-profile=sqlserver|azure|babelfish`` or
``BEAKER_MSSQL_PROFILE`` makes the stand-in behave like that engine; against a real server the profile
is detected from the server. A test marked ``@pytest.mark.engine_needs("merge", ...)`` skips, with the
profile's own reason, where the profile lacks one of those features.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Union

import pytest

from .profiles import ENV_PROFILE, PROFILES, Profile, get_profile
from .server import RealServer, SQLServerStandIn

ENV_URL = "BEAKER_MSSQL_TEST_URL"
SKIP_REASON = (f"needs the SQL Server stand-in (clock, faults or counters); "
               f"{ENV_URL} points at a real server")

AnyServer = Union[SQLServerStandIn, RealServer]


_PROFILE_KEY = pytest.StashKey[Profile]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mssql-profile", default=None, choices=sorted(PROFILES),
        help=f"engine profile of the SQL Server stand-in (default: ${ENV_PROFILE} or sqlserver)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "standin_only: needs the stand-in's clock, counters or faults (skipped against a real server)")
    config.addinivalue_line(
        "markers",
        "engine_needs(*features): needs engine features some profiles lack (skipped there, with the "
        "profile's reason; see beaker_mssql/testing/profiles.py)")


def run_profile(config: pytest.Config) -> Profile:
    """The profile of this test run: detected on a real server, else chosen by option or environment."""
    found = config.stash.get(_PROFILE_KEY, None)
    if found is None:
        url = os.environ.get(ENV_URL)
        found = RealServer(url).profile if url else get_profile(config.getoption("mssql_profile", None))
        config.stash[_PROFILE_KEY] = found
    return found


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get(ENV_URL):
        return f"beaker_mssql: real server from {ENV_URL} (engine profile detected at first use)"
    return f"beaker_mssql: stand-in engine profile {run_profile(config).name}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("standin_only") is not None and os.environ.get(ENV_URL):
        pytest.skip(SKIP_REASON)
    for marker in item.iter_markers("engine_needs"):
        profile = run_profile(item.config)
        for feature in marker.args:
            reason = profile.skip_reason(str(feature))
            if reason is not None:
                pytest.skip(f"[{profile.name}] {reason}")


@pytest.fixture(scope="session")
def mssql_profile(pytestconfig: pytest.Config) -> Profile:
    """The engine profile the tests run under (stand-in: as chosen; real server: as detected)."""
    return run_profile(pytestconfig)


@pytest.fixture(scope="session")
def mssql_server(pytestconfig: pytest.Config) -> Iterator[AnyServer]:
    """One server for the test session: a fresh in-memory stand-in (with the run's engine profile), or
    RealServer(BEAKER_MSSQL_TEST_URL)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield RealServer(url)
        return
    server = SQLServerStandIn(profile=run_profile(pytestconfig))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mssql_url(mssql_server: AnyServer) -> str:
    """The server's ``mssql://user:password@host:port/database`` URL."""
    return mssql_server.url


@pytest.fixture
def standin(mssql_server: AnyServer) -> Iterator[SQLServerStandIn]:
    """The session's stand-in with faults off, counters at zero and the clock on real time.

    Skips against a real server. After the test it is reset again (and restarted if the test stopped it),
    so one test's fault switches or clock jumps never leak into the next.
    """
    if not isinstance(mssql_server, SQLServerStandIn):
        pytest.skip(SKIP_REASON)
    server = mssql_server
    if not server.running:
        server.start()
    server.reset()
    try:
        yield server
    finally:
        server.reset()
        if not server.running:
            server.start()


@pytest.fixture
def mssql_table(mssql_server: AnyServer) -> Iterator[str]:
    """A fresh, uniquely named sessions table (sid/session/expires + expires index), dropped afterwards.

    The value is the bracket-quoted name, e.g. ``[dbo].[t_3f2a9c1e]``.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    quoted = f"[dbo].[{name}]"
    mssql_server.execute(
        f"CREATE TABLE {quoted} ([sid] nvarchar(255) NOT NULL PRIMARY KEY, "
        f"[session] nvarchar(max) NOT NULL, [expires] datetime NOT NULL); "
        f"CREATE INDEX [IX_{name}_expires] ON {quoted} ([expires]);")
    try:
        yield quoted
    finally:
        mssql_server.execute(f"IF OBJECT_ID(N'{quoted}', N'U') IS NOT NULL DROP TABLE {quoted};")
